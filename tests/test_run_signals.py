"""SIGTERM and SIGINT stop ``python -m suite run`` cleanly: exit 143 / 130, nothing left in the output dir.

The run is killed while it trains (a fresh cache and many epochs keep it
busy), right after its hidden ``.<run_id>.tmp-*`` directory appears.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _default_signals() -> None:  # the child may inherit SIGINT ignored (background jobs of a shell)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code, message", [(signal.SIGTERM, 143, "interrupted (SIGTERM)"),
                                                (signal.SIGINT, 130, "interrupted: no record was written")])
def test_signal_removes_the_pending_run_dir(sig, code, message, tmp_path):
    out, cache = tmp_path / "runs", tmp_path / "cache"
    cmd = [sys.executable, "-m", "suite", "run", "--model", "resnet20", "--profile", "smoke", "--compress", "none",
           "--attacks", "none", "--fingerprints", "none", "--epochs", "500", "--output-dir", str(out),
           "--cache-dir", str(cache)]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONFAULTHANDLER": "1"}
    # its own session: a signal sent to this test process's group reaches only the one we send (the child's
    # rare death by SIGINT after returning 130 was CPython's string-exec flag: see the test at the end)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_signals, start_new_session=True)
    try:
        deadline = time.monotonic() + 45
        while not (out.is_dir() and any(p.name.startswith(".") and ".tmp-" in p.name for p in out.iterdir())):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the hidden run directory never appeared"
            time.sleep(0.02)
        proc.send_signal(sig)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # show where it hangs (PYTHONFAULTHANDLER dumps every thread)
            proc.send_signal(signal.SIGABRT)
            raise AssertionError(proc.communicate(timeout=30)[1][-6000:]) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == message
    assert stdout == ""
    assert sorted(p.name for p in out.iterdir()) == []  # no .tmp- directory, no run directory


def test_sigterm_in_process_returns_143_and_restores_the_handler(monkeypatch, capsys, tmp_path):
    """``main`` called in-process: SIGTERM inside the run unwinds it; the default handler is back afterwards."""
    import suite.app.pipeline
    from suite.app.cli import main

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler here; main leaves it alone")

    def terminate(cfg):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises long before this returns
        raise AssertionError("SIGTERM was not raised")

    monkeypatch.setattr(suite.app.pipeline, "load_source", terminate)
    out = tmp_path / "runs"
    code = main(["run", "--model", "resnet20", "--profile", "smoke", "--quiet", "--attacks", "none",
                 "--fingerprints", "none", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 143 and capsys.readouterr().err.strip() == "interrupted (SIGTERM)"
    assert list(out.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.fixture(autouse=True)
def default_signal_handlers():
    """Each test starts from Python's default SIGINT / SIGTERM handlers (what a CLI process has), whatever an
    earlier test or the xdist worker left installed, and gets the previous ones back afterwards; without this
    the in-process tests skipped when a handler was left behind."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


def _spin_until(deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        time.sleep(0.01)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception is the point
def test_interrupt_swallowed_by_a_finaliser_is_delivered_again():
    """CPython drops an exception raised in ``__del__``; the guard re-raises it in the main flow."""
    from suite.app.interrupts import InterruptGuard

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has another handler here")

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            _spin_until(0.2)  # the handler runs here, inside the finaliser

    with pytest.raises(KeyboardInterrupt):
        with InterruptGuard(redeliver_s=600) as guard:
            obj = Finalised()
            del obj  # KeyboardInterrupt raised and dropped inside __del__
            _spin_until(5)
    assert guard._done.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_swallowed_by_code_is_delivered_again_by_the_watchdog():
    from suite.app.interrupts import InterruptGuard, Terminated

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler here")
    swallowed = 0
    with pytest.raises(Terminated):
        with InterruptGuard(redeliver_s=0.2):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                _spin_until(5)
            except BaseException:  # noqa: BLE001 - the kind of code the guard protects against
                swallowed += 1
            _spin_until(5)
    assert swallowed == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


_INTERRUPT_IN_STRING_EXEC = '''
import suite.app.cli as cli

def interrupted_inside_a_string_exec(args):
    exec("raise KeyboardInterrupt", {})  # as when Ctrl-C lands while a dataclass is being built

cli.COMMANDS["ls"] = interrupted_inside_a_string_exec
raise SystemExit(cli.main(["ls"]))
'''


def test_interrupt_that_left_a_string_exec_still_exits_130(tmp_path):
    """CPython flags a KeyboardInterrupt that left a string ``exec`` and, under ``python -m``, ends the process
    by SIGINT after ``main`` returned; ``main`` clears the flag once it has handled the interrupt."""
    (tmp_path / "interrupted_cli.py").write_text(_INTERRUPT_IN_STRING_EXEC)
    (tmp_path / "bare_exit.py").write_text('try:\n    exec("raise KeyboardInterrupt", {})\n'
                                           'except KeyboardInterrupt:\n    pass\nraise SystemExit(130)\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])])}

    def run(module: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, env=env,
                              preexec_fn=_default_signals, timeout=120)

    if run("bare_exit").returncode != -signal.SIGINT:
        pytest.skip("this Python does not end a -m run by SIGINT after a caught KeyboardInterrupt")
    done = run("interrupted_cli")
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().endswith("interrupted: no record was written")
