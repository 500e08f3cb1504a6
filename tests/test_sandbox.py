"""The suspect sandbox against hostile artifacts (compression.backends.sandbox, fingerprints.isolation).

A hostile shared library (``tests/hostile/hostile.c``, compiled here with the C
compiler; skipped without one) is shipped the way a stolen-model suspect would
ship it: as the compiled library of a TVM artifact directory, whose manifest
(written by its author) checks out.  Its load-time constructor tries, one
variant each, to read the owner's model cache (also through ``/proc/self/root``),
write files, change a file's mode or times, reach a TCP listener, spawn a
process, signal its parent and read the parent's environment, allocate without
bound and spin forever.  Every
attempt must fail or be killed, the audit / predictor must report a clean
one-line error (or, for quiet attempts inside a working model, complete with a
verdict), and a canary outside the sandbox must stay unchanged.  Control runs
without the sandbox show that each attempt does succeed when nothing stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from compression.backends import sandbox as sb
from compression.backends.artifact import write_manifest
from suite.core.errors import ArtifactError

HOSTILE_C = Path(__file__).parent / "hostile" / "hostile.c"
TVM_RUNTIME = "compression.tvm_backend.runtime:TVMPredictor"
SECRET = "owner-weights-7f3a9c"  # what the thief is after

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def cc():
    compiler = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (gcc/cc/clang) to build the hostile test libraries")
    return compiler


@pytest.fixture(scope="module")
def tvm():
    return pytest.importorskip("tvm", reason="TVM is the runtime that loads compiled suspect libraries")


class Scene:
    """Everything a hostile library targets, outside the sandbox, and how to check it was left alone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        cache = root / "owner-cache" / "models" / "vgg16" / "0123abcd"
        cache.mkdir(parents=True)
        self.secret = cache / "model.pt"
        self.secret.write_text(SECRET + "\n")
        self.canary = root / "canary.txt"
        self.canary.write_text("canary: unchanged\n")
        self.canary_stat = os.stat(self.canary)
        self.newfile = root / "dropped-by-suspect.txt"
        self.marker = root / "spawned-by-suspect.txt"
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    self.connections.append(conn.recv(64))
                except OSError:
                    self.connections.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.listener.close()

    def defines(self) -> dict[str, str]:
        return {"SECRET": f'"{self.secret}"', "CANARY": f'"{self.canary}"', "NEWFILE": f'"{self.newfile}"',
                "PORT": str(self.port), "MARKER": f'"{self.marker}"'}

    def untouched(self) -> list[str]:
        """What the suspect managed to change (empty when nothing)."""
        time.sleep(0.3)  # let a late connection land in the listener
        changed = []
        st = os.stat(self.canary)
        if self.canary.read_text() != "canary: unchanged\n" or st.st_mtime_ns != self.canary_stat.st_mtime_ns \
                or st.st_mode != self.canary_stat.st_mode:
            changed.append("canary")
        if self.newfile.exists():
            changed.append("new file")
        if self.marker.exists():
            changed.append("spawned process")
        if self.connections:
            changed.append(f"tcp connection {self.connections}")
        return changed


@pytest.fixture
def scene(tmp_path):
    s = Scene(tmp_path / "victim")
    yield s
    s.close()


def build(cc: str, out: Path, defines: dict[str, str], *, shared: bool = True) -> Path:
    """Compile hostile.c with ``-DKEY=VALUE`` for each define (a shared library, or an object file)."""
    args = [cc, "-O1", "-fPIC", *(["-shared"] if shared else ["-c"]), "-o", str(out)]
    args += [f"-D{k}={v}" for k, v in defines.items()]
    args += [str(HOSTILE_C)] + (["-lpthread"] if shared else [])
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def fake_tvm_artifact(directory: Path, library: Path, input_shape=(3, 16, 16), num_classes: int = 10) -> Path:
    """An artifact directory whose manifest (checksums and all) names ``library`` as its compiled model."""
    directory.mkdir(parents=True)
    shutil.copyfile(library, directory / "model_b1.so")
    write_manifest(directory, {"backend": "tvm", "runtime": TVM_RUNTIME, "input_shape": list(input_shape),
                               "num_classes": num_classes, "libraries": {"1": "model_b1.so"}, "threads": 1})
    return directory


def load_suspect(path: Path, fmt: str = "artifact", **kw):
    from fingerprints.isolation import SuspectPredictor

    kw.setdefault("startup_timeout", 60.0)
    return SuspectPredictor(path, fmt, input_hw=(16, 16), **kw)


def load_error(path: Path, fmt: str = "artifact", **kw) -> str:
    before = _children()
    with pytest.raises(ArtifactError) as info:
        load_suspect(path, fmt, **kw).close()
    assert _children() <= before  # the worker is gone
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


# ------------------------------------------------------------------ the sandbox itself

def test_probe_and_worker_report_every_protection(tmp_path):
    """On this machine kind (kernel 6.18, Landlock ABI 7, root) every protection is active in the worker."""
    if sb.missing(sb.probe()):
        pytest.skip(f"this kernel lacks a mechanism: {sb.describe_missing(sb.probe())}")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 14 * 14, 10)).eval()
    torch.onnx.export(model, (torch.rand(2, 3, 16, 16),), str(tmp_path / "tiny.onnx"), input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    with load_suspect(tmp_path / "tiny.onnx", "onnx", require_sandbox=True) as pred:
        report = pred.sandbox
        x = torch.rand(5, 3, 16, 16)
        torch.testing.assert_close(pred.predict(x), model(x), atol=1e-4, rtol=1e-4)
    assert set(report) == set(sb.PROTECTIONS) and sb.missing(report) == [], report
    assert report["filesystem"].startswith(f"landlock-abi-{sb.landlock_abi()}")
    assert "fresh network" in report["network"] and "seccomp" in report["network"]
    assert report["syscalls"].startswith("seccomp-bpf")
    assert "file size 0" in report["limits"] and "address space" in report["limits"] and "cpu" in report["limits"]
    if os.geteuid() == 0:
        assert report["user"].startswith(f"uid {sb.NOBODY} gid {sb.NOBODY}")


def test_an_onnx_suspect_is_served_without_torch(tmp_path):
    """The worker's ONNX path (load, framing, serving) imports onnxruntime and numpy, never torch (~2.5 s)."""
    import sys

    import numpy as np
    import onnxruntime as ort

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)).eval()
    torch.onnx.export(model, (torch.rand(2, 3, 16, 16),), str(tmp_path / "m.onnx"), input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    code = f"""
import json, sys
import numpy as np
import compression.backends.worker
from fingerprints.suspect_worker import _load
p = _load(json.dumps({{"format": "onnx", "path": {str(tmp_path / "m.onnx")!r}, "input_hw": [16, 16]}}))
out = p.predict_array(np.full((3, 3, 16, 16), 0.5, np.float32))
print(json.dumps({{"torch": "torch" in sys.modules, "classes": p.num_classes, "out": out.tolist()}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch"] is False and report["classes"] == 10
    x = np.full((3, 3, 16, 16), 0.5, np.float32)
    expected = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.asarray(report["out"], np.float32), expected, rtol=1e-5, atol=1e-5)


def test_private_copy_is_read_only_and_skips_links(tmp_path):
    src = tmp_path / "art"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a")
    (src / "sub" / "b.bin").write_bytes(b"b")
    os.symlink("/etc/hostname", src / "link")
    os.mkfifo(src / "fifo")  # a FIFO would block a naive copy
    copy = sb.PrivateCopy(src)
    try:
        assert copy.path.name == "art" and copy.path.parent == copy.root
        names = sorted(str(p.relative_to(copy.path)) for p in copy.path.rglob("*"))
        assert names == ["a.bin", "sub", "sub/b.bin"]
        assert (copy.path / "a.bin").stat().st_mode & 0o777 == 0o444
        assert copy.path.stat().st_mode & 0o777 == 0o555
    finally:
        copy.cleanup()
    assert not copy.root.exists()
    with pytest.raises(OSError):
        sb.PrivateCopy(src / "fifo")


def test_worker_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = sb.worker_environment("/checkout", sb.SandboxPolicy(read=["/x"]))
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["OMP_NUM_THREADS"] == "1"
    assert env["PYTHONPATH"] == "/checkout" and env["HOME"] == "/nonexistent"
    assert sb.SandboxPolicy.from_json(env[sb.ENV_VAR]).read == ["/x"]


UNPRIVILEGED = """
import json, os, socket, sys
sys.path.insert(0, sys.argv[1])
from compression.backends.sandbox import SandboxPolicy, enter
report = enter(SandboxPolicy(read=[sys.argv[2]], memory_mb=2048, cpu_seconds=60))
out = {"report": report, "allowed": open(os.path.join(sys.argv[2], "ok.txt")).read()}
for name, attempt in (("read", lambda: open(sys.argv[3]).read()), ("write", lambda: open(sys.argv[4], "w")),
                      ("fork", os.fork), ("socket", lambda: socket.socket())):
    try:
        attempt()
        out[name] = "SUCCEEDED"
    except OSError as err:
        out[name] = f"blocked {err.errno}"
print(json.dumps(out))
"""


@pytest.fixture
def world_tmp():
    """A temporary directory uid 65534 can reach (pytest's own is private to root)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="suite-sandbox-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_unprivileged_user_gets_the_sandbox_through_a_user_namespace(world_tmp):
    """Not root: no uid switch, and the network namespace comes from a new user namespace (stdlib only,
    so the system Python runs it as uid 65534 without any capability)."""
    python, setpriv = "/usr/bin/python3", shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None or not os.path.exists(python):
        pytest.skip("needs root, setpriv and /usr/bin/python3 to start an unprivileged process")
    root = str(Path(sb.__file__).resolve().parents[2])
    if not all(sb._accessible_to(p, sb.NOBODY, sb.NOBODY) for p in (python, os.path.realpath(python), sb.__file__)):
        pytest.skip("uid 65534 cannot read this checkout or the system Python")
    allowed = world_tmp / "allowed"
    allowed.mkdir()
    (allowed / "ok.txt").write_text("ok")
    secret = world_tmp / "secret.txt"
    secret.write_text(SECRET)
    allowed.chmod(0o755)
    world_tmp.chmod(0o777)  # writable by uid 65534: only the sandbox stands in the way
    for p in (allowed / "ok.txt", secret):
        p.chmod(0o644)
    proc = subprocess.run([setpriv, "--reuid", str(sb.NOBODY), "--regid", str(sb.NOBODY), "--clear-groups",
                           "--bounding-set", "-all", python, "-s", "-c", UNPRIVILEGED, root, str(allowed), str(secret),
                           str(world_tmp / "dropped.txt")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["allowed"] == "ok" and out["report"]["user"].startswith(f"uid {sb.NOBODY} (not root)")
    for name in ("read", "write", "fork", "socket"):
        assert out[name].startswith("blocked"), out
    assert not (world_tmp / "dropped.txt").exists()
    if sb.landlock_abi() and sb._userns_allowed():
        assert sb.missing(out["report"]) == [], out["report"]
        assert "user namespace" in out["report"]["network"]


def test_seccomp_program_shape():
    prog = sb.seccomp_program(1234)
    assert len(prog) % 8 == 0 and len(prog) // 8 < 4096  # classic BPF limit
    # the filter starts by checking the architecture and ends by allowing what is left
    assert prog[:8] == bytes.fromhex("2000000004000000")


def test_missing_sandbox_is_reported_and_required_refuses(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)).eval()
    torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), str(tmp_path / "m.onnx"), dynamo=False)
    with load_suspect(tmp_path / "m.onnx", "onnx", sandbox=False) as pred:
        assert sb.missing(pred.sandbox) == list(sb.PROTECTIONS)
    message = load_error(tmp_path / "m.onnx", "onnx", sandbox=False, require_sandbox=True)
    assert "refusing to load without the full sandbox" in message and str(tmp_path / "m.onnx") in message
    assert "suite-sandbox-" not in message  # the private copy is never named


# ------------------------------------------------------------------ hostile constructors

QUIET = {  # action -> the report lines that must say "blocked"
    "try_read": ["HOSTILE read: blocked", "HOSTILE read via /proc/self/root: blocked"],
    "try_write": ["HOSTILE write canary: blocked", "HOSTILE create file: blocked"],
    "try_tcp": ["HOSTILE tcp: blocked"],
    "try_spawn": ["HOSTILE fork: blocked", "HOSTILE posix_spawn: blocked"],
    "try_meta": ["HOSTILE chmod: blocked", "HOSTILE utime: blocked"],
    "try_parent": ["HOSTILE signal parent: blocked", "HOSTILE read parent environment: blocked"],
}


@pytest.mark.parametrize("action", list(QUIET))
def test_hostile_constructor_is_blocked(cc, tvm, scene, tmp_path, action):
    """dlopen runs the constructor inside the sandbox: the attempt fails, nothing outside changes."""
    lib = build(cc, tmp_path / f"{action}.so", {**scene.defines(), "ACTION": action, "EXIT_AFTER": "42"})
    art = fake_tvm_artifact(tmp_path / "suspect", lib)
    message = load_error(art)
    assert "worker died (exit code 42)" in message, message  # the constructor ran and reported
    for line in QUIET[action]:
        assert line in message, message
    assert "SUCCEEDED" not in message and SECRET not in message
    assert scene.untouched() == []


@pytest.mark.parametrize("action", ["try_read", "try_parent"])
def test_hostile_constructor_succeeds_without_the_sandbox(cc, tvm, scene, tmp_path, action):
    """Control: the same library, loaded the same way but unsandboxed, steals what it tries to (the other
    attempts' controls are in test_working_model_with_hostile_library_serves_but_cannot_act)."""
    lib = build(cc, tmp_path / f"{action}.so", {**scene.defines(), "ACTION": action, "EXIT_AFTER": "42"})
    art = fake_tvm_artifact(tmp_path / "suspect", lib)
    message = load_error(art, sandbox=False)
    assert "SUCCEEDED" in message, message
    if action == "try_read":
        assert f"HOSTILE read: SUCCEEDED {SECRET}" in message
    else:
        assert "HOSTILE signal parent: SUCCEEDED" in message
        assert "HOSTILE read parent environment: SUCCEEDED" in message


def test_hostile_allocation_is_stopped_by_the_memory_limit(cc, tvm, scene, tmp_path):
    lib = build(cc, tmp_path / "alloc.so", {"ACTION": "try_alloc", "EXIT_AFTER": "42"})
    art = fake_tvm_artifact(tmp_path / "suspect", lib)
    message = load_error(art, memory_mb=2048)
    assert "HOSTILE alloc: stopped after" in message, message
    mib = int(message.split("stopped after ")[1].split(" MiB")[0])
    assert mib < 2048
    assert scene.untouched() == []


def test_hostile_spin_is_killed_by_the_cpu_limit(cc, tvm, scene, tmp_path):
    lib = build(cc, tmp_path / "loop.so", {"ACTION": "try_loop"})
    art = fake_tvm_artifact(tmp_path / "suspect", lib)
    start = time.perf_counter()
    message = load_error(art, cpu_seconds=8, startup_timeout=120)
    assert "worker died" in message and ("SIGXCPU" in message or "SIGKILL" in message), message
    assert time.perf_counter() - start < 60


def test_hostile_spin_is_killed_by_the_load_time_limit(cc, tvm, scene, tmp_path):
    lib = build(cc, tmp_path / "loop.so", {"ACTION": "try_loop"})
    art = fake_tvm_artifact(tmp_path / "suspect", lib)
    message = load_error(art, startup_timeout=8)
    assert "did not load within 8 s (worker killed)" in message, message


def test_hostile_constructor_without_exit_gives_a_clean_load_error(cc, tvm, scene, tmp_path):
    """All quiet attempts, then the library is handed to TVM, which rejects it: one clean line."""
    lib = build(cc, tmp_path / "all.so", scene.defines())
    art = fake_tvm_artifact(tmp_path / "suspect", lib)
    message = load_error(art)
    assert "cannot load model_b1.so" in message and "HOSTILE" not in message, message
    assert scene.untouched() == []


# ------------------------------------------------------------------ ONNX naming a custom-op library

def test_onnx_model_naming_a_custom_op_library_is_refused(cc, scene, tmp_path):
    """Our ONNX loader never registers custom-op libraries: a model that needs one does not load."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    (tmp_path / "suspect").mkdir()
    lib = build(cc, tmp_path / "suspect" / "libhostile_ops.so", {**scene.defines(), "EXIT_AFTER": "42"})
    node = helper.make_node("StealWeights", ["x"], ["y"], domain="com.hostile")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.hostile", 1)])
    helper.set_model_props(model, {"custom_op_library": lib.name})
    path = tmp_path / "suspect" / "model.onnx"
    onnx.save(model, str(path))
    message = load_error(path, "onnx")
    assert "is not a loadable ONNX model" in message and "HOSTILE" not in message, message  # never loaded
    assert scene.untouched() == []


# ------------------------------------------------------------------ a working model with a hostile library

@pytest.fixture(scope="module")
def tiny_tvm_executable(tvm):
    """A small CNN ([3, 16, 16] -> 10 classes) compiled by TVM at batch 8 (a few seconds)."""
    from compression.tvm_backend.compile import compile_model
    from compression.tvm_backend.target import parse_target

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10)).eval()
    result = compile_model(model, (3, 16, 16), parse_target(None, 1), batch=8, measure=False)
    return model, result.executable


def hostile_tvm_artifact(directory: Path, exe, hostile_object: Path) -> Path:
    """A real, working TVM artifact whose library also carries the hostile object (its constructor)."""
    directory.mkdir(parents=True)
    exe.export_library(str(directory / "model_b8.so"), options=[str(hostile_object), "-lpthread"])
    write_manifest(directory, {"backend": "tvm", "runtime": TVM_RUNTIME, "input_shape": [3, 16, 16],
                               "num_classes": 10, "libraries": {"8": "model_b8.so"}, "threads": 1})
    return directory


@pytest.mark.parametrize("when", ["load", "queries"])
def test_working_model_with_hostile_library_serves_but_cannot_act(cc, scene, tmp_path, tiny_tvm_executable, when):
    """Quiet attempts at load time (constructor) or during the queries (a thread it started): the model
    answers correctly, every attempt fails, and the control run without the sandbox shows they are real."""
    model, exe = tiny_tvm_executable
    defines = scene.defines() | ({"DEFERRED_MS": "300"} if when == "queries" else {})
    obj = build(cc, tmp_path / "hostile.o", defines, shared=False)
    art = hostile_tvm_artifact(tmp_path / "suspect", exe, obj)
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
    for sandboxed in (True, False):
        with load_suspect(art, sandbox=sandboxed) as pred:
            torch.testing.assert_close(pred.predict(x), want, atol=1e-4, rtol=1e-4)
            time.sleep(1.0)  # the deferred thread acts while the worker serves
            torch.testing.assert_close(pred.predict(x), want, atol=1e-4, rtol=1e-4)
        changed = scene.untouched()
        if sandboxed:
            assert changed == [], changed
    assert {"canary", "new file", "spawned process"} <= set(changed) and any("tcp" in c for c in changed), changed


# ------------------------------------------------------------------ the audit end to end

@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """A tiny owner run with cached ``misclassified`` fingerprints and a 2-negative zoo."""
    from suite.app.pipeline import run
    from suite.core.config import RunConfig, TrainRecipe, parse_kv

    cache = tmp_path_factory.mktemp("cache")
    cfg = RunConfig(model="vgg16", compress="none", profile="smoke", limit=200, cache_dir=str(cache),
                    output_dir=str(tmp_path_factory.mktemp("runs")), quiet=True, threads=1,
                    recipe=TrainRecipe(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0), attacks=(),
                    fingerprints=("misclassified",), negatives=2,
                    fingerprint_args=parse_kv("count=16,zoo.negative_epochs=1"))
    path, _ = run(cfg)
    return path, cache


def _audit(capsys, owner, suspect, *extra):
    from suite.app.cli import main

    run_dir, cache = owner
    code = main(["audit", "--owner", str(run_dir), "--suspect", str(suspect), "--cache-dir", str(cache),
                 "--fingerprints", "misclassified", "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_audit_reports_the_sandbox_and_completes_despite_a_hostile_library(cc, scene, tmp_path, owner, capsys,
                                                                           tiny_tvm_executable):
    """The audit JSON carries ``sandbox`` (all active here); quiet attempts do not stop the verdict."""
    _, exe = tiny_tvm_executable
    obj = build(cc, tmp_path / "hostile.o", scene.defines(), shared=False)
    art = hostile_tvm_artifact(tmp_path / "suspect", exe, obj)
    extra = ["--require-sandbox"] if not sb.missing(sb.probe()) else []
    code, out, err = _audit(capsys, owner, art, "--json", *extra)
    assert code == 0, err
    r = json.loads(out)
    assert r["verdict"] in ("derived", "independent", "inconclusive") and r["format"] == "artifact"
    assert set(r["sandbox"]) == set(sb.PROTECTIONS)
    if extra:
        assert sb.missing(r["sandbox"]) == [], r["sandbox"]
    assert scene.untouched() == []
    code, out, err = _audit(capsys, owner, art)
    assert code == 0, err
    assert ("sandbox  all protections active" if extra else "sandbox  MISSING") in out, out


def test_audit_of_a_hostile_constructor_is_one_clean_line(cc, scene, tmp_path, owner, capsys, tvm):
    lib = build(cc, tmp_path / "spawn.so", {**scene.defines(), "ACTION": "try_spawn", "EXIT_AFTER": "42"})
    art = fake_tvm_artifact(tmp_path / "suspect", lib)
    code, out, err = _audit(capsys, owner, art)
    assert code == 2 and out == ""
    assert err.startswith("error: suspect ") and len(err.strip().splitlines()) == 1, err
    assert "HOSTILE fork: blocked" in err and "SUCCEEDED" not in err
    assert scene.untouched() == []


def test_require_sandbox_refuses_where_a_protection_is_missing(owner, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sb, "probe", lambda: {**{name: "active" for name in sb.PROTECTIONS},
                                               "filesystem": "unavailable: Landlock is not supported"})
    target = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)).eval(),
                      (torch.rand(1, 3, 16, 16),), str(target), dynamo=False)
    code, out, err = _audit(capsys, owner, target, "--require-sandbox")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "--require-sandbox" in err and "filesystem: unavailable: Landlock is not supported" in err
