"""The ``tvm`` backend: compile, export an artifact, serve it from an isolated process.

``deploy`` compiles the (compressed) eager model for each batch size (1 and
32 by default) with :func:`compression.tvm_backend.compile.compile_model`,
exports ``model_b<B>.so`` (host) or ``model_b1.tar`` (cross-compiled object
archive, e.g. Android arm64 NEON; not runnable here), writes
``manifest.json`` (tvm version, target, per-layer kernel choices, tuning
budget, compile time) and returns a predictor that loads the artifact in a
separate worker process with a time limit.  It also compiles the same model
with every conv forced dense (same kernel template, same tuning) into
``dense_b1.so``.  :meth:`TVMBackend.measure` (called by ``deploy`` and again
by every run that reuses a cached artifact) times the artifact beside the
dense runtimes a user would deploy instead -- torch eager, ONNX Runtime and
that TVM dense library -- in one process: ``speedup_vs_dense`` (TVM dense,
equal schedule effort) and ``speedup_vs_best_dense`` (the fastest of them,
named in ``best_dense_runtime``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from compression.backends.artifact import load_predictor, write_manifest
from compression.layers import list_layers
from compression.tvm_backend.runtime import tvm_threads
from compression.decisions import LayerDecision
from compression.tvm_backend.target import is_host, parse_target
from suite.core.errors import ConfigError
from suite.core.predictor import Deployment
from suite.core.settings import Field, SettingsSpec

RUNTIME = "compression.tvm_backend.runtime:TVMPredictor"
DENSE_LIBRARY = "dense_b1.so"  # the TVM dense baseline (not loaded by the predictor)


def tuning_db_path(cache_dir: str | None) -> str:
    from suite.core.config import default_cache_dir

    return os.path.join(cache_dir or default_cache_dir(), "tvm", "tuning.json")


def kernel_layer_names(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Module names of the layers the compiler counts as kernel layers, in graph order.

    Every conv (regular and depth-wise: one constant-weight ``conv2d`` each)
    and every Linear layer (one constant-weight ``matmul``):
    :func:`compression.tvm_backend.compile.rewrite_convs` numbers exactly
    these calls in graph order and names layer ``i`` ``names[i]``.
    """
    return [l.name for l in list_layers(model, input_shape) if l.kind in ("conv", "linear")]


def _int_list(value: Any) -> tuple[int, ...]:
    """``8``, ``"1:32"`` or a sequence -> a tuple of ints."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return tuple(int(v) for v in str(value).split(":"))
    return tuple(int(v) for v in value)


class TVMBackend:
    """Settings: target (``host`` | ``android-arm64`` | TVM JSON), batch sizes, threads, dense baseline."""

    name = "tvm"
    SETTINGS = SettingsSpec({
        "target": Field(None, object, optional=True, doc="host | android-arm64 | TVM target JSON"),
        "batch_sizes": Field((1, 32), object, parse=_int_list, doc="compiled batch sizes (e.g. 1:32)"),
        "threads": Field(None, int, optional=True, doc="None: 2"), "measure_dense": Field(True, bool),
        "timeout": Field(120.0, float, gt=0), "cache_dir": Field(None, str, optional=True),
        "r": Field(8, int, ge=1), "tune": Field(True, bool, doc="False: no measurements (tests)"),
        "reorder": Field(False, bool, doc="group filters with similar supports into row-blocks (sparse convs)"),
        # the first run compiles batch 1 only (the phone's case; bulk predictions run batch-1 calls, under a
        # millisecond each here); the full profile adds the batch-32 library and its throughput figures
    }, owner="tvm", profiles={"default": {"batch_sizes": (1,)}})

    def __init__(self, target: str | dict | None = None, batch_sizes: tuple[int, ...] | list[int] = (1, 32),
                 threads: int | None = None, measure_dense: bool = True, timeout: float = 120.0,
                 cache_dir: str | None = None, r: int = 8, tune: bool = True, reorder: bool = False) -> None:
        keys = ("target", "batch_sizes", "threads", "measure_dense", "timeout", "cache_dir", "r", "tune", "reorder")
        self.settings = self.SETTINGS.resolve(dict(zip(keys, (target, batch_sizes, threads, measure_dense, timeout,
                                                               cache_dir, r, tune, reorder))))
        target, batch_sizes, threads, measure_dense, timeout, cache_dir, r, tune, reorder = (
            self.settings[k] for k in keys)
        self.threads = int(threads or 2)
        self.target = parse_target(target, self.threads)
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be positive, got {batch_sizes}")
        self.measure_dense = bool(measure_dense)
        self.timeout = float(timeout)
        self.cache_dir = cache_dir
        self.r = int(r)
        self.tune = bool(tune)  # False: no measurements (default tile, density rule) -- for tests
        self.reorder = bool(reorder)

    def deploy(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int, *,
               workdir: str, device: str = "cpu") -> Deployment:
        with tvm_threads(self.threads):  # this deployment's thread count, not the first one's in the process
            return self._deploy(model, input_shape, num_classes, workdir)

    def _deploy(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                workdir: str) -> Deployment:
        import tvm

        from compression.tvm_backend.compile import choices_as_dicts, compile_model, export_relax
        from compression.tvm_backend.tuning import TuningDB

        layer_names = kernel_layer_names(model, input_shape)
        out = Path(workdir)
        out.mkdir(parents=True, exist_ok=True)
        model = model.eval().cpu()
        host = is_host(self.target)
        db = TuningDB(tuning_db_path(self.cache_dir) if host else None)
        libraries: dict[str, str] = {}
        layers: list[dict] = []
        compile_seconds = tuning_seconds = 0.0
        exported = {}  # batch -> the Relax import, shared by the sparse and the dense build of that batch
        for batch in (self.batch_sizes if host else (1,)):
            exported[batch] = export_relax(model, input_shape, batch)
            result = compile_model(model, input_shape, self.target, batch=batch, db=db, names=layer_names,
                                   r=self.r, measure=host and self.tune, exported=exported[batch],
                                   reorder=self.reorder)
            compile_seconds += result.compile_seconds
            tuning_seconds += result.tuning_seconds
            name = f"model_b{batch}.so" if host else f"model_b{batch}.tar"
            result.executable.export_library(str(out / name))
            if host:
                libraries[str(batch)] = name
            if batch == 1 or not layers:
                layers = choices_as_dicts(result.layers)
        files = {name: "" for name in [f"model_b{b}.so" if host else f"model_b{b}.tar"
                                      for b in (self.batch_sizes if host else (1,))]}
        if host and self.measure_dense:  # the same compiler and template, every conv dense: the baseline library
            dense = compile_model(model, input_shape, self.target, batch=1, db=db, allow_sparse=False,
                                  names=layer_names, r=self.r, measure=self.tune, exported=exported.get(1))
            dense.executable.export_library(str(out / DENSE_LIBRARY))
            files[DENSE_LIBRARY] = ""
        manifest = {
            "backend": "tvm", "runtime": RUNTIME, "input_shape": list(input_shape), "num_classes": int(num_classes),
            "files": files, "libraries": libraries, "tvm": tvm.__version__, "target": self.target,
            "threads": self.threads, "kernel_block_rows": self.r, "layers": layers,
            "tuning": {"method": "template tile search (TP in 8/16/32), per-layer dense fallback",
                       "seconds": round(tuning_seconds, 3), "database": db.path},
            "compile_seconds": round(compile_seconds, 3), "runnable_here": host,
        }
        write_manifest(out, manifest)
        info: dict[str, Any] = {
            "backend": "tvm", "target": self.target, "artifact": str(out), "differentiable": False,
            "compile_seconds": round(compile_seconds, 3),
            "tuning": manifest["tuning"], "tvm": tvm.__version__,
            "sparse_layers": sum(1 for l in layers if l["kernel"] == "sparse"),
            "dense_fallback_layers": [l["name"] for l in layers if LayerDecision(l["decision"]).fallback],
            "layers": layers,
        }
        if not host:
            info["note"] = "cross-compiled object archive; not runnable on this machine"
            info["runnable"] = False
            return Deployment(_NotRunnable(input_shape, num_classes), info)
        db.save()
        info.update(self.measure(out, model, input_shape))
        predictor = load_predictor(out, isolated=True, timeout=self.timeout)
        return Deployment(predictor, info)

    def measure(self, artifact_dir: str | os.PathLike, model: torch.nn.Module,
                input_shape: tuple[int, int, int]) -> dict[str, Any]:
        """Time the artifact and the dense runtimes a user would deploy instead, side by side, now.

        Loads the artifact's libraries in this process (our own build,
        sha256-checked by its manifest) and times, per compiled batch size,
        the call path (numpy in, logits out: ``p50`` / ``p90`` ms) and the
        kernels alone (``kernel_ms``, ``time_evaluator``), side by side in
        rounds with torch eager, ONNX Runtime, TVM dense (our template, every
        conv dense) and, when a MetaSchedule database for the dense model is
        stored (``bench/tune_metaschedule.py``), TVM dense with MetaSchedule,
        on the same batches (:func:`compression.runtimes.time_dense_runtimes`).  Returns ``latency_ms``
        (smallest batch), ``latency_ms_by_batch`` (the others),
        ``dense_latency_ms`` / ``speedup_vs_dense`` (TVM dense at batch 1, as
        before) and ``dense_runtimes``, ``best_dense_runtime``,
        ``best_dense_latency_ms``, ``speedup_vs_best_dense`` (and per batch).
        Every run calls this, a cache hit included.
        """
        import tvm
        from tvm import relax

        from compression.runtimes import best_dense, time_dense_runtimes

        directory = Path(artifact_dir)
        manifest = json.loads((directory / "manifest.json").read_text())
        libs = {int(b): name for b, name in (manifest.get("libraries") or {}).items()}
        out: dict[str, Any] = {"dense_runtimes": {}}
        with tvm_threads(self.threads):
            dense_vm = None
            if (directory / DENSE_LIBRARY).exists():
                dense_vm = relax.VirtualMachine(tvm.runtime.load_module(str(directory / DENSE_LIBRARY)), tvm.cpu())
            for batch in sorted(libs):
                vm = relax.VirtualMachine(tvm.runtime.load_module(str(directory / libs[batch])), tvm.cpu())
                # the deployment is timed in the same rounds as the dense runtimes (time_side_by_side)
                runtimes = time_dense_runtimes(model, input_shape, batch, threads=self.threads,
                                               tvm_dense_vm=dense_vm if batch == 1 else None,
                                               tvm_metaschedule_vm=self._metaschedule_vm(model, input_shape, batch),
                                               beside={DEPLOYMENT: vm})
                entry = {**runtimes.pop(DEPLOYMENT), "batch": batch, "threads": self.threads}
                if batch == min(libs):
                    out["latency_ms"] = entry
                else:
                    out.setdefault("latency_ms_by_batch", {})[str(batch)] = entry
                out["dense_runtimes"][str(batch)] = runtimes
                name, ms = best_dense(runtimes)
                facts = {"best_dense_runtime": name, "best_dense_latency_ms": ms,
                         "speedup_vs_best_dense": round(ms / entry["p50"], 3)}
                if batch == min(libs):
                    out.update(facts)
                else:
                    out.setdefault("best_dense_by_batch", {})[str(batch)] = facts
                if batch == 1 and "tvm-dense" in runtimes:
                    out["dense_latency_ms"] = runtimes["tvm-dense"]["p50"]
                    out["speedup_vs_dense"] = round(out["dense_latency_ms"] / entry["p50"], 3)
        return out


    def _metaschedule_vm(self, model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int) -> Any:
        """The dense model built with its stored MetaSchedule database (None when none is stored; never tunes)."""
        import tvm
        from tvm import relax

        from compression.tvm_backend.metaschedule import compile_dense_tuned, default_db_root

        root = default_db_root(self.cache_dir)
        if not root.is_dir() or not any(root.iterdir()):
            return None  # nothing tuned on this machine: skip the export that computing the key needs
        exe = compile_dense_tuned(model, input_shape, batch, self.target, db_dir=root)
        return None if exe is None else relax.VirtualMachine(exe, tvm.cpu())


DEPLOYMENT = "deployment"  # measure(): the artifact's own name among the runtimes timed side by side


class _NotRunnable:
    """Placeholder predictor for cross-compiled artifacts (raises on use)."""

    differentiable = False

    def __init__(self, input_shape, num_classes) -> None:
        self.input_shape, self.num_classes = tuple(input_shape), num_classes

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError("this TVM artifact was cross-compiled for another target and cannot run here")
