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
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_signals)
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
