"""The ``tvm`` backend: compile, export an artifact, serve it from an isolated process.

``deploy`` compiles the (compressed) eager model for each batch size (1 and
32 by default) with :func:`compression.tvm_backend.compile.compile_model`,
exports ``model_b<B>.so`` (host) or ``model_b1.tar`` (cross-compiled object
archive, e.g. Android arm64 NEON; not runnable here), writes
``manifest.json`` (tvm version, target, per-layer kernel choices, tuning
budget, compile time) and returns a predictor that loads the artifact in a
separate worker process with a time limit.  It also compiles the same model
with every conv forced dense (same kernel template, same tuning) and times
both in-process, so ``speedup_vs_dense`` compares equal schedule effort.
"""

from __future__ import annotations

import os
import statistics
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


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[k]


def tuning_db_path(cache_dir: str | None) -> str:
    from suite.core.config import default_cache_dir

    return os.path.join(cache_dir or default_cache_dir(), "tvm", "tuning.json")


def kernel_layer_names(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Module names of the convs our kernels replace (every non-depth-wise conv), in graph order."""
    return [l.name for l in list_layers(model, input_shape) if l.kind == "conv" and not l.depthwise]


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
    }, owner="tvm")

    def __init__(self, target: str | dict | None = None, batch_sizes: tuple[int, ...] | list[int] = (1, 32),
                 threads: int | None = None, measure_dense: bool = True, timeout: float = 120.0,
                 cache_dir: str | None = None, r: int = 8, tune: bool = True) -> None:
        keys = ("target", "batch_sizes", "threads", "measure_dense", "timeout", "cache_dir", "r", "tune")
        self.settings = self.SETTINGS.resolve(dict(zip(keys, (target, batch_sizes, threads, measure_dense, timeout,
                                                               cache_dir, r, tune))))
        target, batch_sizes, threads, measure_dense, timeout, cache_dir, r, tune = (self.settings[k] for k in keys)
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

    def deploy(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int, *,
               workdir: str, device: str = "cpu") -> Deployment:
        with tvm_threads(self.threads):  # this deployment's thread count, not the first one's in the process
            return self._deploy(model, input_shape, num_classes, workdir)

    def _deploy(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                workdir: str) -> Deployment:
        import tvm

        from compression.tvm_backend.compile import choices_as_dicts, compile_model
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
        executables = {}
        for batch in (self.batch_sizes if host else (1,)):
            result = compile_model(model, input_shape, self.target, batch=batch, db=db, names=layer_names,
                                   r=self.r, measure=host and self.tune)
            compile_seconds += result.compile_seconds
            tuning_seconds += result.tuning_seconds
            name = f"model_b{batch}.so" if host else f"model_b{batch}.tar"
            result.executable.export_library(str(out / name))
            if host:
                libraries[str(batch)] = name
                executables[batch] = result.executable
            if batch == 1 or not layers:
                layers = choices_as_dicts(result.layers)
        files = {name: "" for name in [f"model_b{b}.so" if host else f"model_b{b}.tar"
                                      for b in (self.batch_sizes if host else (1,))]}
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
        info.update(self._latency(executables, input_shape))
        if self.measure_dense:
            dense = compile_model(model, input_shape, self.target, batch=1, db=db, allow_sparse=False,
                                  names=layer_names, r=self.r, measure=self.tune)
            dense_ms = _vm_times(dense.executable, 1, input_shape)
            info["dense_latency_ms"] = round(statistics.median(dense_ms), 4)
            info["speedup_vs_dense"] = round(info["dense_latency_ms"] / info["latency_ms"]["p50"], 3)
        db.save()
        predictor = load_predictor(out, isolated=True, timeout=self.timeout)
        return Deployment(predictor, info)

    def _latency(self, executables: dict, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for batch, exe in sorted(executables.items()):
            times = _vm_times(exe, batch, input_shape)
            entry = {"p50": round(statistics.median(times), 4), "p90": round(_percentile(times, 0.9), 4),
                     "batch": batch, "threads": self.threads}
            if batch == min(executables):
                out["latency_ms"] = entry
            else:
                out.setdefault("latency_ms_by_batch", {})[str(batch)] = entry
        return out


def _vm_times(exe, batch: int, input_shape: tuple[int, int, int], repeat: int = 30) -> list[float]:
    import numpy as np
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(exe, tvm.cpu())
    x = tvm.runtime.tensor(np.random.default_rng(0).random((batch, *input_shape), dtype=np.float32))
    ev = vm.time_evaluator("main", tvm.cpu(), number=5, repeat=repeat, min_repeat_ms=0)
    return [t * 1e3 for t in ev(x).results]


class _NotRunnable:
    """Placeholder predictor for cross-compiled artifacts (raises on use)."""

    differentiable = False

    def __init__(self, input_shape, num_classes) -> None:
        self.input_shape, self.num_classes = tuple(input_shape), num_classes

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError("this TVM artifact was cross-compiled for another target and cannot run here")
