"""Shared fixtures: tests never touch the user's cache or the network.

Under pytest-xdist (``-n 2`` in pyproject's addopts) each worker gets its
share of the cores: ``SUITE_THREADS`` / ``OMP_NUM_THREADS`` / ``TVM_NUM_THREADS``
and torch's intra-op threads are set to ``cores // workers`` before anything
else runs, so two workers never run two-thread pools on two shared cores (the
OpenMP / TVM pools thrash then: 20x slower measured).  Subprocesses (``suite
run``, grids, sandboxed workers) inherit the environment.
"""

from __future__ import annotations

import os
import signal

_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _XDIST_WORKERS > 1:
    try:
        _cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        _cores = os.cpu_count() or 1
    _share = str(max(1, _cores // _XDIST_WORKERS))
    for _var in ("SUITE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(int(os.environ.get("SUITE_THREADS") or min(2, os.cpu_count() or 1)))

# Modules that take longest, longest first: under xdist (--dist loadfile) a worker
# takes whole modules in this order, so the long ones start at once instead of last.
# (Measured with -n 2: test_tvm and test_grid about 3-4 minutes each, the next ones 1.5-3.5 minutes.)
_HEAVY_MODULES = (
    "test_tvm.py", "test_grid.py", "test_sandbox.py", "test_audit.py", "test_sr_deploy.py", "test_sr_run.py",
    "test_compression.py", "test_conv_tiles.py", "test_tvm_kernels_layers.py", "test_attacks.py", "test_cluster.py",
    "test_cli.py", "test_backends.py", "test_meta_family.py", "test_blackbox.py", "test_latency_table.py",
    "test_executors.py",
)


# Modules that run on the same xdist worker, one after the other (as in a plain run): the second reuses
# what the first cached in a session fixture (test_audit_thief's owner run reuses test_audit's owner model,
# fingerprints and negative zoo through the `audit_owner_cache` fixture).
_SAME_WORKER = {"test_audit_thief.py": "test_audit.py"}


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a plain run keeps the file order
    rank = {name: i for i, name in enumerate(_HEAVY_MODULES)}
    items.sort(key=lambda item: rank.get(_SAME_WORKER.get(item.path.name, item.path.name), len(rank)))


try:
    from xdist.scheduler import LoadFileScheduling
except ImportError:  # pragma: no cover - plain pytest without xdist
    LoadFileScheduling = None

if LoadFileScheduling is not None:
    class _ModuleScheduling(LoadFileScheduling):
        """``--dist loadfile`` with the collection order kept (heaviest modules first, see above) and the
        ``_SAME_WORKER`` modules in one work unit."""

        def __init__(self, config, log=None):
            super().__init__(config, log)
            config.option.loadscopereorder = False  # xdist would order work units by test count

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            folder, _, name = path.rpartition("/")
            if name in _SAME_WORKER:
                return f"{folder}/{_SAME_WORKER[name]}" if folder else _SAME_WORKER[name]
            return path

    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") == "loadfile":
            return _ModuleScheduling(config, log)
        return None


@pytest.fixture(scope="session")
def audit_owner_cache(tmp_path_factory):
    """One cache for the owner runs of test_audit.py and test_audit_thief.py (same owner model, fingerprints
    and the first 6 negatives of the zoo): the second module reuses what the first built."""
    return tmp_path_factory.mktemp("audit-owner-cache")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("SUITE_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core machine two threads per process thrash (20x slower measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def restore_signal_handlers():
    """Put SIGINT / SIGTERM handlers back after a test (an in-process ``ray.init`` installs its own and keeps them:
    the signal tests that run later in the same process would skip)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)
