"""Grid files: a YAML product of run settings, expanded into resolved jobs.

Format (every list is an axis; the grid is the product of the axes)::

    name: smoke                       # label for logs and job.json
    profile: smoke                    # smoke | default (applies to every job)
    models: [resnet20, vgg16]
    sources: [digits16]
    compressors:                      # names, or {name, args, sparsities}
      - none
      - block
      - {name: nm, args: {n: 2, m: 4}, sparsities: [0.5]}
    sparsities: [0.5, 0.75]           # null = the scheme's default; ignored for `none`
    backends: [torch, {name: onnx}]   # names, or {name, args, target}
    seeds: [0, 1]
    attacks: []                       # a flat list: one attack set for every job;
                                      # a list of lists: an axis ([[uap-pgd], []]);
                                      # absent: the default list of `run`
    fingerprints: []                  # same rules as attacks
    attack_args: [{eps: 0.0157}, {eps: 0.0314}]   # optional axis of attack settings
                                      # (a mapping: the same for every job);
                                      # merged over settings.attack_args
    fingerprint_args: {count: 20}     # same rules as attack_args
    exclude:                          # drop jobs matching every key of a rule
      - {compress: nm, sparsity: 0.75}
      - {model: vgg16, backend: [onnx, tvm]}
    settings:                         # any other RunConfig field, for every job
      limit: 64
      epochs: 1                       # epochs, batch_size, lr: training recipe overrides
      threads: 1
      attack_args: {eps: 0.04}

Each job is a fully resolved :class:`~suite.core.config.RunConfig` (profile
defaults filled, names canonical, values validated) so that a bad grid fails
before anything runs.  A job's identity (:func:`job_identity`) is a hash of
that resolved configuration without the fields that say where or how fast a
run happens (``IDENTITY_EXCLUDED``): re-running the same grid elsewhere, with
another output directory, cache or thread count, names the same jobs.
Jobs that resolve to the same identity are run once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from suite.core.config import PROFILE_DEFAULTS, PROFILES, RunConfig, TrainRecipe, default_cache_dir
from suite.core.errors import ConfigError, DataError

IDENTITY_EXCLUDED = ("output_dir", "cache_dir", "quiet", "threads")
AXES = ("models", "sources", "compressors", "sparsities", "backends", "seeds", "attacks", "fingerprints")
ARG_AXES = ("attack_args", "fingerprint_args")
TOP_LEVEL = ("name", "profile", "exclude", "settings", "description", *AXES, *ARG_AXES)
EXCLUDE_KEYS = ("model", "source", "compress", "sparsity", "backend", "seed", "attacks", "fingerprints")
RECIPE_OVERRIDES = ("epochs", "batch_size", "lr")
AXIS_FIELDS = ("model", "source", "compress", "compress_args", "sparsity", "backend", "backend_args", "target",
               "seed", "attacks", "fingerprints", "profile", "output_dir")
SETTINGS_FIELDS = tuple(sorted({f.name for f in dataclasses.fields(RunConfig)} - set(AXIS_FIELDS))
                        + list(RECIPE_OVERRIDES))


@dataclass(frozen=True)
class Job:
    """One grid cell: its identity, resolved configuration and axis labels."""

    job_id: str
    config: dict[str, Any]  # RunConfig.as_dict() of the resolved configuration
    labels: dict[str, Any]  # model, source, compress, sparsity, backend, seed, attacks, fingerprints

    @property
    def name(self) -> str:
        lab = self.labels
        extras = "".join(f"/{k[:3]}={'+'.join(lab[k]) or '-'}" for k in ("attacks", "fingerprints")
                         if lab.get(k))
        extras += "".join(f"/{k.split('_')[0][:3]}:" + ",".join(f"{a}={v}" for a, v in sorted(lab[k].items()))
                          for k in ARG_AXES if lab.get(k))
        return (f"{lab['model']}/{lab['source']}/{lab['compress']}@{lab['sparsity']:g}/{lab['backend']}"
                f"/s{lab['seed']}{extras}")


@dataclass(frozen=True)
class GridSpec:
    """A parsed grid file: its name and the expanded, de-duplicated jobs."""

    name: str
    jobs: tuple[Job, ...]
    excluded: int      # cells removed by exclude rules
    duplicates: int    # cells that resolved to an already present job
    output_dir: str | None = None


def job_identity(config: dict[str, Any]) -> str:
    """Stable hash of a resolved configuration (``RunConfig.as_dict()`` or a record's ``config``)."""
    from suite.core.files import json_digest

    payload = {k: v for k, v in config.items() if k not in IDENTITY_EXCLUDED}
    return json_digest(payload, compact=True)[:20]


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from ``as_dict()`` output (or a record's ``config``)."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    kwargs = {k: v for k, v in d.items() if k in fields}
    if isinstance(kwargs.get("recipe"), dict):
        kwargs["recipe"] = TrainRecipe(**kwargs["recipe"])
    for key in ("attacks", "fingerprints"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    return RunConfig(**kwargs)


# ------------------------------------------------------------------ parsing
def load_grid(path: str | Path, *, cache_dir: str | None = None, threads: int | None = None,
              default_threads: int | None = None) -> GridSpec:
    """Read and expand a grid file; bad files raise DataError, bad settings ConfigError."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise DataError(f"cannot read grid file {p}: {err.strerror or err}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DataError(f"grid file {p} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(spec, dict):
        raise DataError(f"grid file {p} must be a YAML mapping of axes (models, compressors, ...)")
    return expand_grid(spec, default_name=p.stem, cache_dir=cache_dir, threads=threads,
                       default_threads=default_threads)


def _as_list(spec: dict[str, Any], key: str, default: list[Any]) -> list[Any]:
    value = spec.get(key, default)
    if value is None:
        return list(default)
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise ConfigError(f"grid axis {key!r} is empty: list at least one value (or leave it out)")
    return value


def _name_sets(spec: dict[str, Any], key: str) -> list[tuple[str, ...] | None]:
    """attacks / fingerprints: absent -> [None]; flat list -> one set; list of lists -> axis."""
    if key not in spec or spec[key] is None:
        return [None]
    value = spec[key]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"grid {key!r} must be a list of names or a list of lists of names")
    if value and all(isinstance(v, list) for v in value):
        return [tuple(str(x) for x in v) for v in value]
    if any(isinstance(v, list) for v in value):
        raise ConfigError(f"grid {key!r} mixes names and lists: use [a, b] (every job) or [[a], [b]] (axis)")
    return [tuple(str(x) for x in value)]


def _arg_sets(spec: dict[str, Any], key: str) -> list[dict[str, Any] | None]:
    """attack_args / fingerprint_args: absent -> [None]; a mapping -> one set; a list of mappings -> axis."""
    value = spec.get(key)
    if value is None:
        return [None]
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, dict) for v in values):
        raise ConfigError(f"grid {key!r} must be a mapping of settings or a list of mappings, got {value!r}")
    return [dict(v) for v in values]


def _entries(spec: dict[str, Any], key: str, default: list[Any], allowed: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for item in _as_list(spec, key, default):
        if isinstance(item, str):
            out.append({"name": item})
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            unknown = sorted(set(item) - set(allowed))
            if unknown:
                raise ConfigError(f"grid {key} entry {item['name']!r}: unknown keys {', '.join(unknown)} "
                                  f"(allowed: {', '.join(allowed)})")
            out.append(dict(item))
        else:
            raise ConfigError(f"grid {key} entries are names or mappings with a 'name', got {item!r}")
    return out


def _sparsity(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"grid sparsities must be numbers or null, got {value!r}") from None


def _settings(spec: dict[str, Any], profile: str) -> dict[str, Any]:
    settings = spec.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError("grid 'settings' must be a mapping of RunConfig fields")
    unknown = sorted(set(settings) - set(SETTINGS_FIELDS))
    if unknown:
        raise ConfigError(f"grid settings: unknown keys {', '.join(unknown)} (allowed: {', '.join(SETTINGS_FIELDS)})")
    out = {k: v for k, v in settings.items() if k not in RECIPE_OVERRIDES}
    overrides = {k: settings[k] for k in RECIPE_OVERRIDES if k in settings}
    base = out.pop("recipe", None)
    if base is not None and not isinstance(base, dict):
        raise ConfigError("grid settings.recipe must be a mapping of TrainRecipe fields")
    if base is not None or overrides:
        recipe = PROFILE_DEFAULTS[profile]["recipe"]
        try:
            recipe = dataclasses.replace(recipe, **(base or {}), **overrides)
        except TypeError as err:
            raise ConfigError(f"grid settings.recipe: {err}") from None
        out["recipe"] = recipe
    for key in ("attacks", "fingerprints"):
        if key in out:
            raise ConfigError(f"grid {key} is an axis: set it at the top level, not under settings")
    return out


def expand_grid(spec: dict[str, Any], *, default_name: str = "grid", cache_dir: str | None = None,
                threads: int | None = None, default_threads: int | None = None) -> GridSpec:
    """Expand a parsed grid mapping into resolved, de-duplicated jobs (see module docstring).

    ``cache_dir`` and ``threads`` override the file's settings;
    ``default_threads`` applies when neither sets threads.  Without a cache
    directory from either, jobs use ``$SUITE_CACHE`` (or ``~/.cache/suite``)
    as resolved here, on the driver.
    """
    from suite.core import registries as reg

    unknown = sorted(set(spec) - set(TOP_LEVEL) - {"output_dir"})
    if unknown:
        raise ConfigError(f"grid file: unknown keys {', '.join(unknown)} (allowed: {', '.join(TOP_LEVEL)}, "
                          f"output_dir)")
    profile = str(spec.get("profile", "default"))
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r} (choices: {', '.join(PROFILES)})")
    settings = _settings(spec, profile)
    if threads is not None:
        settings["threads"] = threads
    elif "threads" not in settings and default_threads is not None:
        settings["threads"] = default_threads
    # one absolute cache path for every job (workers may run elsewhere, with another cwd)
    settings["cache_dir"] = str(Path(cache_dir or settings.get("cache_dir") or default_cache_dir())
                                .expanduser().absolute())
    models = [str(m) for m in _as_list(spec, "models", ["vgg16"])]
    sources = [str(s) for s in _as_list(spec, "sources", ["digits16"])]
    compressors = _entries(spec, "compressors", ["none"], ("name", "args", "sparsities"))
    sparsities = [_sparsity(s) for s in _as_list(spec, "sparsities", [None])]
    backends = _entries(spec, "backends", ["torch"], ("name", "args", "target"))
    seeds = _as_list(spec, "seeds", [0])
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"grid seeds must be integers, got {seeds!r}")
    attack_sets = _name_sets(spec, "attacks")
    fingerprint_sets = _name_sets(spec, "fingerprints")
    arg_sets = {key: _arg_sets(spec, key) for key in ARG_AXES}
    rules = _exclude_rules(spec.get("exclude") or [])

    jobs: dict[str, Job] = {}
    excluded = duplicates = 0
    for model, source, seed, comp in itertools.product(models, sources, seeds, compressors):
        comp_name = reg.compressors.canonical(comp["name"])
        comp_sparsities = ([None] if comp_name == "none" else
                           [_sparsity(s) for s in comp.get("sparsities", sparsities)])
        for sparsity, backend, attacks, fingerprints, attack_args, fingerprint_args in itertools.product(
                comp_sparsities, backends, attack_sets, fingerprint_sets, *arg_sets.values()):
            job_settings = dict(settings)
            for key, value in (("attack_args", attack_args), ("fingerprint_args", fingerprint_args)):
                if value is not None:
                    job_settings[key] = {**settings.get(key, {}), **value}
            cfg = RunConfig(model=model, source=source, compress=comp_name,
                            compress_args=dict(comp.get("args") or {}), sparsity=sparsity,
                            backend=backend["name"], backend_args=dict(backend.get("args") or {}),
                            target=backend.get("target"), seed=seed, profile=profile, attacks=attacks,
                            fingerprints=fingerprints, quiet=True, **job_settings)
            try:
                resolved = cfg.resolved()
            except TypeError as err:
                raise ConfigError(f"grid settings: {err}") from None
            config = resolved.as_dict()
            labels = {"model": resolved.model, "source": resolved.source, "compress": resolved.compress,
                      "sparsity": resolved.sparsity, "backend": resolved.backend, "seed": resolved.seed,
                      "attacks": list(resolved.attacks or ()),
                      "fingerprints": list(resolved.fingerprints or ()),
                      **{key: dict(v) for key, v in (("attack_args", attack_args),
                                                      ("fingerprint_args", fingerprint_args)) if v}}
            if any(_matches(rule, labels) for rule in rules):
                excluded += 1
                continue
            job_id = job_identity(config)
            if job_id in jobs:
                duplicates += 1
                continue
            jobs[job_id] = Job(job_id, config, labels)
    if not jobs:
        raise ConfigError("the grid is empty: every job was excluded")
    output_dir = spec.get("output_dir")
    return GridSpec(str(spec.get("name") or default_name), tuple(jobs.values()), excluded, duplicates,
                    str(output_dir) if output_dir else None)


# ------------------------------------------------------------------ exclude
def _exclude_rules(rules: Any) -> list[dict[str, list[Any]]]:
    from suite.core import registries as reg

    if not isinstance(rules, list):
        raise ConfigError("grid 'exclude' must be a list of mappings like {compress: nm, sparsity: 0.75}")
    canon = {"model": reg.models, "source": reg.sources, "compress": reg.compressors, "backend": reg.backends}
    out = []
    for rule in rules:
        if not isinstance(rule, dict) or not rule:
            raise ConfigError(f"grid exclude rules are non-empty mappings, got {rule!r}")
        unknown = sorted(set(rule) - set(EXCLUDE_KEYS))
        if unknown:
            raise ConfigError(f"grid exclude rule {rule!r}: unknown keys {', '.join(unknown)} "
                              f"(allowed: {', '.join(EXCLUDE_KEYS)})")
        parsed: dict[str, list[Any]] = {}
        for key, value in rule.items():
            if key in ("attacks", "fingerprints"):
                values = value if value and isinstance(value[0], list) else [value]
                parsed[key] = [sorted(v) for v in values]
                continue
            values = value if isinstance(value, list) else [value]
            if key in canon:
                values = [canon[key].canonical(str(v)) for v in values]
            elif key == "sparsity":
                values = [_sparsity(v) for v in values]
            parsed[key] = values
        out.append(parsed)
    return out


def _matches(rule: dict[str, list[Any]], labels: dict[str, Any]) -> bool:
    for key, values in rule.items():
        have = labels[key]
        if key == "sparsity":
            if not any(v is not None and math.isclose(v, have, abs_tol=1e-9) for v in values):
                return False
        elif key in ("attacks", "fingerprints"):
            if sorted(have) not in values:
                return False
        elif have not in values:
            return False
    return True


def describe(jobs: Iterable[Job]) -> list[str]:
    """One line per job: ``<job_id>  <name>`` (for ``--dry-run``)."""
    return [f"{j.job_id}  {j.name}" for j in jobs]
