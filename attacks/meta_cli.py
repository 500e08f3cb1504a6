"""``python -m suite meta-train``: meta-train a UAP attacker across sources (cached like models).

Tasks are (source, model) pairs: every embedded source except ``--held-out``
(default: digits16, the default source) times ``--models``.  ``suite run``
with ``uap-meta`` / ``uap-maml`` / ``uap-l2o`` looks up the same cache entry
(same settings, the run's model on the sources other than the run's), so a
meta-train ahead of time makes those runs adapt only.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable


def parse_budget(text: str) -> float:
    """``"10/255"`` or ``"0.04"`` -> float."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 10/255, got {text!r}") from None


def add_command(sub) -> Callable[[argparse.Namespace], int]:
    from attacks.tasks import DEFAULT_TASK_MODELS

    p = sub.add_parser("meta-train", help="meta-train the uap-meta / uap-maml / uap-l2o attackers (cached)")
    p.add_argument("--variant", default="meta", help="meta | maml | l2o | all")
    p.add_argument("--held-out", default="digits16", help="source left out of meta-training")
    p.add_argument("--sources", default=None, help="comma-separated meta-training sources (default: the "
                                                   "embedded sources other than --held-out)")
    p.add_argument("--models", default=",".join(DEFAULT_TASK_MODELS),
                   help="comma-separated victim architectures of the tasks (default: the ones `run` uses)")
    p.add_argument("--norm", default="linf", help="linf | l2")
    p.add_argument("--eps", type=parse_budget, default=None,
                   help="budget, e.g. 10/255 (default: the held-out source's standard budget for --norm, the "
                        "one `run` on that source uses)")
    p.add_argument("--meta-steps", type=int, default=None, help="outer iterations (profile default)")
    p.add_argument("--inner-steps", type=int, default=None, help="unrolled adaptation steps K")
    p.add_argument("--profile", default="default", help="smoke | default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="default $SUITE_CACHE or ~/.cache/suite")
    p.add_argument("--quiet", action="store_true")
    return run_meta_train


def run_meta_train(args: argparse.Namespace) -> int:
    from attacks.meta import VARIANTS, MetaConfig, get_meta_state
    from attacks.tasks import build_tasks, other_sources, with_profile
    from suite.core import registries as reg
    import torch

    from suite.core.config import PROFILES, default_cache_dir, default_threads
    from suite.core.errors import ConfigError
    from suite.core.threat import declared_threat_model
    from attacks.base import canonical_norm

    if args.profile not in PROFILES:
        raise ConfigError(f"unknown profile {args.profile!r} (choices: {', '.join(PROFILES)})")
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    sources = ([reg.sources.canonical(s.strip()) for s in args.sources.split(",") if s.strip()]
               if args.sources else other_sources(args.held_out))
    models = [reg.models.canonical(m.strip()) for m in args.models.split(",") if m.strip()]
    cache_dir = args.cache_dir or default_cache_dir()
    torch.set_num_threads(args.threads or default_threads())
    log = (lambda m: None) if args.quiet else (lambda m: print(f"[suite] {m}", flush=True))
    tasks = build_tasks(sources, models, profile=args.profile, seed=args.seed, cache_dir=cache_dir,
                        threads=args.threads, quiet=args.quiet, log=log)
    overrides = {k: v for k, v in (("meta_steps", args.meta_steps), ("inner_steps", args.inner_steps))
                 if v is not None}
    eps = args.eps
    if eps is None:
        declared = declared_threat_model(args.held_out)
        if declared is None:
            raise ConfigError(f"source {args.held_out!r} declares no standard budget: pass --eps")
        eps = declared.budget(canonical_norm(args.norm))
    out = []
    for variant in variants:
        cfg = MetaConfig(variant=variant, norm=args.norm, eps=eps,
                         **with_profile({"seed": args.seed, **overrides}, args.profile))
        state, path, hit = get_meta_state(tasks, cfg, cache_dir, progress=not args.quiet, log=log)
        out.append({"variant": variant, "dir": str(path), "cache_hit": hit, "tasks": [t.name for t in tasks],
                    "seconds": state.info.get("seconds")})
    print(json.dumps(out if len(out) > 1 else out[0]))
    return 0
