"""``python -m suite meta-train``: meta-train a UAP attacker across sources (cached like models).

Tasks are (source, model) pairs at each source's standard budget: the task
sources of every dataset family except ``--held-out``'s (default: digits16,
the default source, so the Fashion-MNIST family) times ``--models``.
``--ship NAME`` copies the trained state into ``attacks/shipped/NAME`` with
its provenance (this command, versions, every task); ``suite run`` adapts a
shipped state whose tasks never saw its source's family, and meta-trains
(cached, with the same tasks as this command) only when none fits.
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
    p.add_argument("--held-out", default="digits16",
                   help="source whose whole dataset family is left out of meta-training")
    p.add_argument("--sources", default=None, help="comma-separated meta-training sources (default: the task "
                                                   "sources of the other dataset families)")
    p.add_argument("--models", default=",".join(DEFAULT_TASK_MODELS),
                   help="comma-separated victim architectures of the tasks (default: the ones `run` uses)")
    p.add_argument("--norm", default="linf", help="linf | l2")
    p.add_argument("--eps", type=parse_budget, default=None,
                   help="one budget for every task, e.g. 10/255 (default: each task at its source's standard "
                        "budget for --norm)")
    p.add_argument("--meta-steps", type=int, default=None, help="outer iterations (profile default)")
    p.add_argument("--inner-steps", type=int, default=None, help="unrolled adaptation steps K")
    p.add_argument("--profile", default="default", help="smoke | default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="default $SUITE_CACHE or ~/.cache/suite")
    p.add_argument("--ship", default=None, metavar="NAME",
                   help="copy the trained state into attacks/shipped/NAME (one --variant only)")
    p.add_argument("--ship-dir", default=None, help="where --ship writes (default: the package's attacks/shipped)")
    p.add_argument("--quiet", action="store_true")
    return run_meta_train


def run_meta_train(args: argparse.Namespace) -> int:
    from attacks.meta import VARIANTS, MetaConfig, get_meta_state
    from attacks.tasks import build_tasks, meta_training_sources, with_profile
    from suite.core import registries as reg
    import torch

    from suite.core.config import PROFILES, default_cache_dir, default_threads
    from suite.core.errors import ConfigError
    from suite.core.threat import declared_threat_model
    from attacks.base import canonical_norm

    if args.profile not in PROFILES:
        raise ConfigError(f"unknown profile {args.profile!r} (choices: {', '.join(PROFILES)})")
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    if args.ship and len(variants) != 1:
        raise ConfigError("--ship takes one --variant")
    held_out = reg.sources.canonical(args.held_out)
    sources = ([reg.sources.canonical(s.strip()) for s in args.sources.split(",") if s.strip()]
               if args.sources else meta_training_sources(held_out))
    models = [reg.models.canonical(m.strip()) for m in args.models.split(",") if m.strip()]
    cache_dir = args.cache_dir or default_cache_dir()
    torch.set_num_threads(args.threads or default_threads())
    log = (lambda m: None) if args.quiet else (lambda m: print(f"[suite] {m}", flush=True))
    norm = canonical_norm(args.norm)
    tasks = build_tasks(sources, models, profile=args.profile, seed=args.seed, cache_dir=cache_dir,
                        threads=args.threads, quiet=args.quiet, norm=norm, log=log)
    overrides = {k: v for k, v in (("meta_steps", args.meta_steps), ("inner_steps", args.inner_steps))
                 if v is not None}
    eps = args.eps
    if eps is None:  # each task at its own source's budget; the config's eps is the held-out source's
        declared = declared_threat_model(held_out)
        eps = declared.budget(norm) if declared is not None else tasks[0].eps
    else:
        for t in tasks:
            t.eps = None
    out = []
    for variant in variants:
        cfg = MetaConfig(variant=variant, norm=args.norm, eps=eps,
                         **with_profile({"seed": args.seed, **overrides}, args.profile))
        state, path, hit = get_meta_state(tasks, cfg, cache_dir, progress=not args.quiet, log=log)
        item = {"variant": variant, "dir": str(path), "cache_hit": hit, "tasks": [t.name for t in tasks],
                "seconds": state.info.get("seconds")}
        if args.ship:
            from pathlib import Path

            from attacks.shipped import SHIPPED_DIR, ship

            target = Path(args.ship_dir) if args.ship_dir else SHIPPED_DIR
            item["shipped"] = str(ship(path, args.ship, provenance(args, held_out), directory=target))
        out.append(item)
    print(json.dumps(out if len(out) > 1 else out[0]))
    return 0


def provenance(args: argparse.Namespace, held_out: str) -> dict:
    """How a shipped state was made: the command, the held-out source, package versions."""
    import platform
    import sys

    import numpy
    import torch

    import suite

    argv = [a for a in sys.argv[1:]]
    return {"command": "python -m suite " + " ".join(argv), "held_out_source": held_out,
            "versions": {"suite": suite.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
                         "python": platform.python_version()}}
