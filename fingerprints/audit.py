"""``suite audit``: is a deployed suspect model derived from an owner's model?

Steps:

1. :func:`resolve_owner`: the owner is a run directory (``result.json``), a
   model-cache entry directory (``meta.json`` + ``model.pt``) or a cached model
   id such as ``vgg16-w1-digits16-s0-185cc19b``.  Its identity is the sha256 of
   its cached ``state_dict``.
2. The owner's fingerprints and their evaluation over the owner's suspect zoo
   are read from the cache (written by ``suite run``, or built here on a miss:
   that trains the zoo, minutes on the default profile).
3. The suspect is loaded and queried in a separate process with time limits
   (:class:`fingerprints.isolation.SuspectPredictor`): state_dict + ``--arch``,
   ``.pt2``, ``.onnx`` or an artifact directory.  Its input shape and class
   count must match the owner's.  That process is sandboxed before it reads
   the suspect (:mod:`compression.backends.sandbox`): a private read-only copy
   of the suspect, a read-only file system limited to the runtime, no network,
   no new programs or processes, resource limits, uid ``nobody``.  The report's
   ``sandbox`` says which protections were active; ``require_sandbox`` refuses
   to load the suspect unless all are.
4. Verdict from the match rate ``m`` (label-only by default) with the
   threshold calibrated on half of the zoo's negatives:

   * ``derived``: ``m >= threshold`` and ``p_value <= alpha``;
   * ``independent``: ``m < threshold`` and ``p_value > 0.05`` (as common among
     independent models as that);
   * ``inconclusive``: everything else (below the threshold but unusually
     high for an independent model, or above it without significance).

   ``p_value``: probability that an independent model matches at least as many
   fingerprints, under a beta-binomial fitted to all negatives' match counts
   (``p_value_empirical``: the plain rank among the negatives).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from suite.core.errors import ArtifactError, ConfigError

VERDICTS = ("derived", "independent", "inconclusive")


@dataclass
class OwnerRef:
    """What the audit knows about the owner without loading it."""

    model_id: str
    arch: str
    width: float
    sha256: str
    num_classes: int
    in_channels: int
    source: str
    source_sha256: str
    seed: int
    recipe: dict[str, Any]
    entry_dir: Path
    profile: str = "default"
    data_root: str | None = None
    limit: int | None = None
    fingerprint_args: dict[str, Any] = field(default_factory=dict)
    negatives: int | None = None
    run_dir: Path | None = None


def _owner_from_meta(meta: dict[str, Any], entry_dir: Path) -> OwnerRef:
    key = meta.get("key") or {}
    try:
        return OwnerRef(model_id=str(meta["model_id"]), arch=str(key["arch"]), width=float(key["width"]),
                        sha256=str(meta["sha256"]), num_classes=int(key["num_classes"]),
                        in_channels=int(key["in_channels"]), source=str(key["source"]),
                        source_sha256=str(key["source_sha256"]), seed=int(key["seed"]), recipe=dict(key["recipe"]),
                        entry_dir=entry_dir)
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"owner {entry_dir}/meta.json is not a model-cache entry of this suite") from None


def _read_meta(entry_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((entry_dir / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"owner {entry_dir}/meta.json unreadable ({err.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"owner {entry_dir}/meta.json is not a JSON object")
    return meta


def resolve_owner(text: str, cache_dir: str) -> OwnerRef:
    """Owner from a run directory, a model-cache entry directory or a cached model id."""
    p = Path(text).expanduser()
    if p.is_dir() and (p / "result.json").is_file():
        from suite.core.record import load_record

        try:
            record = load_record(p)
        except (OSError, ValueError) as err:
            raise ArtifactError(f"owner run {p}: result.json unreadable ({err})") from None
        model = record["model"]
        entry = Path(model.get("cache_dir") or "")
        if not (entry / "meta.json").is_file():
            found = _find_model_id(model["id"], cache_dir)
            if found is None:
                raise ArtifactError(f"owner run {p}: its model {model['id']} is no longer in the model cache "
                                    f"({entry} or {cache_dir}/models)")
            entry = found
        ref = _owner_from_meta(_read_meta(entry), entry)
        if ref.sha256 != model.get("sha256"):
            raise ArtifactError(f"owner run {p}: the cached model {entry} is not the one this run used "
                                f"(sha256 differs); rerun it")
        cfg = record["config"]
        ref.profile = cfg.get("profile", "default")
        ref.data_root, ref.limit = cfg.get("data_root"), cfg.get("limit")
        ref.seed = int(cfg.get("seed", ref.seed))
        ref.fingerprint_args = dict(cfg.get("fingerprint_args") or {})
        ref.negatives = cfg.get("negatives")
        ref.run_dir = p
        return ref
    if p.is_dir() and (p / "meta.json").is_file():
        return _owner_from_meta(_read_meta(p), p)
    if p.exists():
        raise ArtifactError(f"owner {p} is neither a run directory (result.json) nor a model-cache entry (meta.json)")
    found = _find_model_id(text, cache_dir)
    if found is None:
        raise ArtifactError(f"owner {text!r} is not a run directory, a model-cache entry or a model id cached in "
                            f"{cache_dir}/models (see `suite train` / `suite run`)")
    return _owner_from_meta(_read_meta(found), found)


def _find_model_id(model_id: str, cache_dir: str) -> Path | None:
    root = Path(cache_dir) / "models"
    arch = model_id.split("-w", 1)[0]
    for meta in sorted((root / arch).glob("*/meta.json")) if (root / arch).is_dir() else []:
        try:
            if json.loads(meta.read_text()).get("model_id") == model_id:
                return meta.parent
        except (OSError, ValueError):
            continue
    return None


def _load_owner(ref: OwnerRef, cache_dir: str, log: Callable[[str], None]):
    """The owner's model and source (only needed when fingerprints must be built)."""
    import torch

    from suite.core import registries as reg
    from suite.core.config import RunConfig
    from suite.core.models import SourceSpec, load_source
    from fingerprints.zoo import Owner

    cfg = RunConfig(model=ref.arch, source=ref.source, data_root=ref.data_root, limit=ref.limit, width=ref.width,
                    seed=ref.seed, profile=ref.profile, cache_dir=cache_dir, quiet=True, attacks=(),
                    fingerprints=()).resolved()
    source = load_source(SourceSpec(cfg.source, cfg.data_root, cfg.limit))
    if source.fingerprint() != ref.source_sha256:
        raise ConfigError(f"the source {ref.source} loaded here differs from the one owner {ref.model_id} was "
                          f"trained on; pass --data-root / --limit as in its run, or audit with the run directory")
    model = reg.models.build(ref.arch, num_classes=ref.num_classes, width=ref.width, in_channels=ref.in_channels)
    from suite.core.cache import sha256_file

    weights = ref.entry_dir / "model.pt"
    if not weights.is_file() or sha256_file(weights) != ref.sha256:
        raise ArtifactError(f"owner {ref.entry_dir}/model.pt is missing or does not match its sha256")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    log(f"audit: loaded owner {ref.model_id} and source {source.name} to build its fingerprints")
    owner = Owner(model=model.eval(), arch=ref.arch, width=ref.width, sha256=ref.sha256, model_id=ref.model_id,
                  source=source, source_args={"name": cfg.source, "data_root": cfg.data_root, "limit": cfg.limit},
                  seed=ref.seed, profile=ref.profile)
    return owner, cfg


def owner_bank(ref: OwnerRef, method_name: str, *, cache_dir: str, access: str = "label",
               fingerprint_args: dict[str, Any] | None = None, negatives: int | None = None, threads: int = 1,
               log: Callable[[str], None] = lambda m: None):
    """``(fingerprints, evaluation, built)`` of the owner for one method, from the cache or built now."""
    from fingerprints.bank import Evaluation, FingerprintSet, bank_dir, eval_path, get_evaluation, get_fingerprints
    from fingerprints.options import build_method, split_args
    from fingerprints.zoo import get_zoo, make_spec, zoo_key

    from fingerprints.options import method_defaults

    method_name = _canonical(method_name)
    known = method_defaults(method_name)
    inherited = {k: v for k, v in ref.fingerprint_args.items()  # the owner's run: only what applies here
                 if k.startswith("zoo.") or (k in known) or ("." in k and not _other_method_key(k, method_name))}
    args = {**inherited, **(fingerprint_args or {})}
    args.pop("access", None)
    per, zoo_args, _ = split_args((method_name,), args)
    method = build_method(method_name, ref.profile, per[method_name])
    spec = make_spec(ref.profile, negatives if negatives is not None else ref.negatives, **zoo_args)
    bank = bank_dir(cache_dir, ref.sha256, method, ref.seed, ref.source_sha256)
    key = zoo_key(ref.sha256, ref.source_sha256, spec, ref.seed, ref.profile)
    path = eval_path(bank, key, access)
    if (bank / "fingerprints.json").is_file():
        try:
            fps = FingerprintSet.load(bank)
            if path.is_file():
                return fps, Evaluation.load(path), False
            zdir = Path(cache_dir) / "zoo" / f"{ref.sha256[:16]}-{key[:16]}"
            if (zdir / "zoo.json").is_file():  # e.g. another --access: query the cached zoo again
                from fingerprints.zoo import load_zoo

                zoo = load_zoo(zdir, ref.sha256)
                log(f"audit: evaluating the cached zoo with {access} access")
                return fps, get_evaluation(fps, bank, zoo, key, access=access, seed=ref.seed, log=log), False
        except ArtifactError as err:
            log(f"warning: {err}; rebuilding")
    log(f"audit: no cached {method_name} fingerprints for {ref.model_id} with this zoo; building them "
        f"(trains the suspect zoo on a first use: minutes on the default profile)")
    owner, cfg = _load_owner(ref, cache_dir, log)
    zoo = get_zoo(owner, spec, cache_dir=cache_dir, recipe=ref.recipe, threads=threads, log=log)
    fps, bank, _ = get_fingerprints(method, owner.model, owner.source, owner_sha256=ref.sha256, cache_dir=cache_dir,
                                    seed=ref.seed, log=log)
    ev = get_evaluation(fps, bank, zoo, key, access=access, seed=ref.seed, log=log)
    return fps, ev, True


def _canonical(name: str) -> str:
    from suite.core import registries as reg

    return reg.fingerprints.canonical(name)


def _other_method_key(key: str, method: str) -> bool:
    """A ``<method>.key`` argument of the owner's run that targets another method."""
    if "." not in key or key.startswith("zoo."):
        return False
    from suite.core import registries as reg

    head = key.split(".", 1)[0]
    return head in reg.fingerprints and _canonical(head) != method


INDEPENDENT_P = 0.05


def verdict(rate: float, threshold: float, p: float, alpha: float) -> str:
    """See the module docstring."""
    if rate >= threshold and p <= alpha:
        return "derived"
    if rate < threshold and p > INDEPENDENT_P:
        return "independent"
    return "inconclusive"


def audit(ref: OwnerRef, suspect: str, *, cache_dir: str, method: str = "ltrc-examples", access: str = "label",
          arch: str | None = None, width: float | None = None, fingerprint_args: dict[str, Any] | None = None,
          negatives: int | None = None, timeout: float = 30.0, startup_timeout: float = 60.0, threads: int = 1,
          alpha: float = 0.01, require_sandbox: bool = False, memory_mb: int | None = None,
          cpu_seconds: int | None = None, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Run one audit; the JSON-ready report (``verdict``, the evidence, the ``sandbox`` it ran in).

    require_sandbox: refuse (ArtifactError) unless every protection of the
    suspect's sandbox is active; memory_mb / cpu_seconds: the suspect worker's
    limits (None: the defaults of :mod:`fingerprints.isolation`).
    """
    from compression.backends.sandbox import describe_missing, missing, probe
    from fingerprints.isolation import CPU_SECONDS, MEMORY_MB, SuspectPredictor
    from fingerprints.metrics import p_value, p_value_empirical
    from fingerprints.suspects import detect_format
    from fingerprints.verify import ACCESS, match_scores

    started = time.perf_counter()
    if access not in ACCESS:
        raise ConfigError(f"--access must be one of {', '.join(ACCESS)}, got {access!r}")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    fmt = detect_format(suspect, arch)
    if require_sandbox and missing(probe()):  # fail before any expensive work; the worker checks again
        raise ArtifactError(f"refusing to audit {suspect} without the full sandbox (--require-sandbox): "
                            f"{describe_missing(probe())}")
    fps, ev, built = owner_bank(ref, method, cache_dir=cache_dir, access=access, fingerprint_args=fingerprint_args,
                                negatives=negatives, threads=threads, log=log)
    if len(fps) == 0:
        raise ArtifactError(f"the owner's {fps.method} fingerprint set is empty (generation kept none); "
                            f"change its settings")
    t_bank = time.perf_counter()
    want_shape = tuple(int(v) for v in fps.x.shape[1:])
    with SuspectPredictor(suspect, fmt, arch=arch, width=width, input_hw=want_shape[1:], timeout=timeout,
                          startup_timeout=startup_timeout, threads=threads, require_sandbox=require_sandbox,
                          memory_mb=MEMORY_MB if memory_mb is None else memory_mb or None,
                          cpu_seconds=CPU_SECONDS if cpu_seconds is None else cpu_seconds or None) as pred:
        sandbox = dict(pred.sandbox)
        for name in missing(sandbox):
            log(f"warning: suspect sandbox: {name} {sandbox.get(name)}")
        t_load = time.perf_counter()
        if tuple(pred.input_shape) != want_shape:
            raise ArtifactError(f"suspect {suspect} takes input {list(pred.input_shape)} but the owner's model "
                                f"takes {list(want_shape)}: it cannot be a copy of this owner")
        if pred.num_classes != ref.num_classes:
            raise ArtifactError(f"suspect {suspect} has {pred.num_classes} classes but the owner has "
                                f"{ref.num_classes}: it cannot be a copy of this owner")
        v = match_scores(pred, fps, access)
        details, fmt_seen = pred.details, pred.format
    t_query = time.perf_counter()
    n = len(fps)
    neg = ev.rates("negative")
    pos = ev.rates("positive")
    rate = v.rate
    p = p_value(rate, n, neg)
    from fingerprints.bank import nearest_members

    decision = verdict(rate, ev.threshold, p, alpha)
    nearest = nearest_members(v.scores, ev.members) if decision == "derived" else None
    result = {
        "verdict": decision,
        "resembles": nearest,
        "owner": ref.model_id, "owner_sha256": ref.sha256,
        "suspect": str(Path(suspect).resolve()), "format": fmt_seen, "suspect_details": details,
        "fingerprints": fps.method, "access": access,
        "matches": v.matches if access == "label" else round(rate * n, 3), "queries": v.queries,
        "match_rate": round(rate, 6),
        "threshold": round(ev.threshold, 6), "threshold_matches": int(round(ev.threshold * n)),
        "p_value": float(f"{p:.6g}"), "p_value_empirical": round(p_value_empirical(rate, neg), 6), "alpha": alpha,
        "negatives": {"n": len(neg), "calibration": len(ev.calibration), "mean_rate": round(sum(neg) / len(neg), 6),
                      "max_rate": round(max(neg), 6)},
        "positives": {"n": len(pos), "mean_rate": round(sum(pos) / len(pos), 6) if pos else None,
                      "min_rate": round(min(pos), 6) if pos else None},
        "fingerprints_built_now": built,
        "sandbox": sandbox,
        "seconds": {"fingerprints": round(t_bank - started, 3), "load_suspect": round(t_load - t_bank, 3),
                    "query": round(t_query - t_load, 3), "total": round(time.perf_counter() - started, 3)},
    }
    return result


def human_summary(r: dict[str, Any]) -> str:
    """A short text report of :func:`audit`'s result."""
    n = r["queries"]
    unit = "matched" if r["access"] == "label" else "probability mass on the owner's labels"
    lines = [
        f"verdict: {r['verdict'].upper()}",
        f"  suspect  {r['suspect']} ({r['format']})",
        f"  owner    {r['owner']}",
        f"  {r['fingerprints']}: {r['matches']}/{n} fingerprints {unit} ({r['access']} access, {n} queries)",
        f"  threshold {r['threshold_matches']}/{n} (calibrated on {r['negatives']['calibration']} independent models);"
        f" p-value {r['p_value']:.3g} against {r['negatives']['n']} independent models "
        f"(their highest match rate {r['negatives']['max_rate']:.2f})",
        f"  {r['seconds']['total']:.1f} s (loading the suspect {r['seconds']['load_suspect']:.1f} s, "
        f"queries {r['seconds']['query']:.2f} s)",
        "  " + sandbox_summary(r.get("sandbox")),
    ]
    near = r.get("resembles")
    if near:
        tied = [k for k in near.get("tied_kinds", []) if k != near["kind"]]
        lines.insert(2, f"  resembles {near['kind']} copies most (zoo member {near['member']}: "
                        f"{near['similarity']:.2f} of the per-fingerprint answers agree"
                        + (f"; tied with {', '.join(tied)}" if tied else "") + ")")
    return "\n".join(lines)


def sandbox_summary(sandbox: dict[str, str] | None) -> str:
    """One line: the suspect's sandbox was complete, or which protections were missing."""
    from compression.backends.sandbox import PROTECTIONS, missing

    gone = missing(sandbox)
    if not gone:
        return f"sandbox  all protections active ({', '.join(PROTECTIONS)})"
    return "sandbox  MISSING " + "; ".join(f"{name} ({(sandbox or {}).get(name, 'not reported')})" for name in gone)
