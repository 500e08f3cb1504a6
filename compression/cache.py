"""Caches of compressed models and compiled deployment artifacts (on :mod:`suite.core.store`).

* ``<cache_dir>/compressed/<model>/<digest[:24]>/``: the files of
  :func:`compression.artifacts.save_compression` plus ``info.json`` (the
  record's compression section); key: the dense model's sha256, the
  compressor and its settings, the seed and the profile.
* ``<cache_dir>/artifacts/<backend>/<digest[:24]>/``: a deployed artifact
  directory plus ``deployment.json``; key: the compressed state's sha256, the
  backend and its settings, the input shape and the runtime versions.

Both copy the entry into the run's ``workdir`` so the record carries its
artifacts.  Concurrent runs publishing the same entry never fail each other
(the loser uses the winner's entry); a corrupt entry is reported and rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from compression.base import CompressionResult
from suite.core.errors import ArtifactError
from suite.core.files import json_digest
from suite.core.predictor import Deployment
from suite.core.store import STORE_MANIFEST, Store

COMPRESSED_FORMAT = 1
ARTIFACT_FORMAT = 4  # 2: TVM artifacts ship dense_b1.so; timings are never cached. 3: depth-wise, linear and
#                      stride-phase kernels (older artifacts ran those layers on TVM's default lowering).
#                      4: conv row tiles and fused residual adds
_CORRUPT = (ArtifactError, OSError, ValueError)


def compressed_key(*, dense_sha256: str, compress: str, sparsity: Any, args: dict[str, Any], seed: int,
                   profile: str, algorithm: Any = None) -> dict[str, Any]:
    """Everything that determines a compressed model.

    algorithm: the compressor's ``algorithm_version`` when it has one (a
    change of what the same settings compute, e.g. the ``auto`` search's
    plan check); absent from the key when None, so other entries keep theirs.
    """
    key = {"dense": dense_sha256, "compress": compress, "sparsity": sparsity, "args": args, "seed": seed,
           "profile": profile, "format": COMPRESSED_FORMAT}
    if algorithm is not None:
        key["algorithm"] = algorithm
    return key


def get_compressed(*, cache_dir: str, model_name: str, dense_sha256: str, compress_name: str, sparsity: Any,
                   settings: dict[str, Any], seed: int, profile: str, algorithm: Any = None,
                   model_factory: Callable[[], torch.nn.Module],
                   compress: Callable[[], CompressionResult], workdir: Path,
                   log: Callable[[str], None] = lambda m: None) -> CompressionResult:
    """The compressed model of (dense model, compressor, settings, seed, profile), its files in ``workdir``.

    model_factory: a fresh dense model of the right architecture (the cached
        state is loaded into it); compress: runs the compressor (on a miss).
    The result's ``info["cache_hit"]`` says whether it came from the cache.
    """
    key = compressed_key(dense_sha256=dense_sha256, compress=compress_name, sparsity=sparsity, args=settings,
                         seed=seed, profile=profile, algorithm=algorithm)
    workdir = Path(workdir)

    def load(entry: Path) -> CompressionResult:
        from compression.artifacts import load_compression

        try:
            model, plan, _masks = load_compression(entry, model_factory)
            info = json.loads((entry / "info.json").read_text())
            shutil.copytree(entry, workdir, ignore=shutil.ignore_patterns(STORE_MANIFEST))
        except _CORRUPT:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        log(f"loaded cached compressed model {entry}")
        return CompressionResult(model, {**info, "cache_hit": True}, plan=plan)

    def build(tmp: Path) -> CompressionResult:
        from compression.artifacts import save_compression

        result = compress()
        fields = save_compression(result, tmp, relative_to=tmp.parent)
        fields = {k: (v.replace(tmp.name, "compressed", 1) if isinstance(v, str) and v.startswith(tmp.name) else v)
                  for k, v in fields.items()}
        result.info.update(fields)
        result.info["cache_hit"] = False
        (tmp / "info.json").write_text(json.dumps(result.info, indent=1, default=str))
        return result

    got = Store(cache_dir, "compressed").get_or_build(
        key, build, load, name=f"{model_name}/{json_digest(key)[:24]}", corrupt=_CORRUPT, legacy=True,
        warn=lambda entry, why: log(f"warning: cached compressed model {entry} unusable ({why}); rebuilding it"))
    if not got.hit:
        shutil.copytree(got.path, workdir, ignore=shutil.ignore_patterns(STORE_MANIFEST))
    return got.value


# the sources that compile each backend's artifact (relative to the ``compression`` package)
_COMPILER_SOURCES = {"tvm": ("tvm_backend",), "onnx": ("backends/onnx_backend.py",)}


@functools.lru_cache(maxsize=None)
def compiler_digest(backend: str) -> str | None:
    """sha256 (hex) of the sources that compile a ``backend`` artifact (kernel templates, schedules, passes).

    Part of :func:`deployment_key`, so that a change to the compiler builds
    afresh instead of reusing an artifact the old compiler made (a template
    change alters no version number the key held before).  None for a
    backend without compiler sources of ours.
    """
    root = Path(__file__).resolve().parent
    files: list[Path] = []
    for rel in _COMPILER_SOURCES.get(backend, ()):
        path = root / rel
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def deployment_key(*, state_sha256: str, backend: str, target: Any, args: dict[str, Any], threads: Any,
                   shape: Any, tvm: Any, ort: Any) -> dict[str, Any]:
    """Everything that determines a deployed artifact (the compiler's own sources included)."""
    return {"state": state_sha256, "backend": backend, "target": target, "args": args, "threads": threads,
            "shape": shape, "tvm": tvm, "ort": ort, "format": ARTIFACT_FORMAT, "compiler": compiler_digest(backend)}


def get_deployment(*, cache_dir: str, backend: str, key: dict[str, Any], deploy: Callable[[Path], Deployment],
                   check: Callable[[Deployment], dict[str, Any]], workdir: Path,
                   log: Callable[[str], None] = lambda m: None) -> Deployment:
    """Deploy (or reuse the cached artifact of ``key``) into ``workdir``; runnable artifacts are checked.

    deploy(workdir) -> Deployment: builds the artifact in ``workdir`` (a miss,
        or an artifact that cannot run on this host); check(deployment) ->
        dict: agreement with the eager model, merged into ``info``.
    """
    from compression.backends.artifact import load_predictor

    workdir = Path(workdir)
    # measured per run, never cached: the agreement check here, the timings by the backend's ``measure``
    checked = ("agreement_top1", "max_abs_logit_diff", "checked_images", "cache_hit", "latency_ms",
               "latency_ms_by_batch", "dense_latency_ms", "speedup_vs_dense", "dense_runtimes", "best_dense_runtime",
               "best_dense_latency_ms", "speedup_vs_best_dense", "best_dense_by_batch")

    def load(entry: Path) -> Deployment:
        try:
            info = json.loads((entry / "deployment.json").read_text())
            shutil.copytree(entry, workdir, ignore=shutil.ignore_patterns("deployment.json", STORE_MANIFEST))
            runnable = info.get("runnable", True)
            predictor = load_predictor(workdir, isolated=True) if runnable else deploy(workdir).predictor
            deployment = Deployment(predictor, {**info, "artifact": "artifacts", "cache_hit": True})
            if runnable:
                deployment.info.update(check(deployment))
        except _CORRUPT:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        log(f"reused cached {backend} artifact {entry}")
        return deployment

    def build(tmp: Path) -> Deployment:
        deployment = deploy(workdir)
        if not deployment.predictor.differentiable and deployment.info.get("runnable", True):
            deployment.info.update(check(deployment))
        deployment.info["artifact"] = "artifacts"
        deployment.info["cache_hit"] = False
        shutil.copytree(workdir, tmp, dirs_exist_ok=True)
        cached = {k: v for k, v in deployment.info.items() if k not in checked}
        (tmp / "deployment.json").write_text(json.dumps(cached, indent=1, default=str))
        return deployment

    # keep_own: on a lost race the own deployment is already live (loaded from workdir); keep it
    got = Store(cache_dir, "artifacts").get_or_build(
        key, build, load, name=f"{backend}/{json_digest(key)[:24]}", corrupt=_CORRUPT, legacy=True,
        keep_own=True,
        warn=lambda entry, why: log(f"warning: cached artifact {entry} unusable ({why}); rebuilding it"))
    return got.value
