"""Command-line interface: ``python -m suite {run,train,ls,...} ...``.

Built-in subcommands live here; the others (``grid``, ``leaderboard``,
``audit``, ``meta-train``) live next to the code they drive and are listed in
:data:`PLUGIN_COMMANDS` as ``"module:add_command"``.  ``add_command(sub)``
adds its parser to the subparsers object and returns the handler
``f(args) -> exit code``.  Those modules must import nothing heavy at the top.

Exit codes: 0 success; 2 bad usage (unknown names, impossible settings,
missing or malformed data) with a one-line ``error:`` message; 130 when
interrupted by Ctrl-C (SIGINT) and 143 on SIGTERM (no record is left behind:
SIGTERM is raised as :class:`~suite.app.interrupts.Terminated` in the main
thread, so every ``with``/``finally`` cleanup runs, as for Ctrl-C; an
interrupt swallowed by a finaliser is delivered again).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from suite.app.interrupts import InterruptGuard, Terminated
from suite.app.quiet import silence_known_library_warnings
from suite.core.errors import SuiteError

KINDS = ("models", "sources", "compressors", "backends", "attacks", "fingerprints")

# name -> "module:add_command"; see the module docstring.
PLUGIN_COMMANDS: dict[str, str] = {
    "meta-train": "attacks.meta_cli:add_command",
    "grid": "suite.app.grid:add_command",
    "leaderboard": "reports.cli:add_command",
    "audit": "fingerprints.audit_cli:add_command",
    "cache": "suite.app.cache_cli:add_command",
}


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="classification",
                   help="classification (default) | sr: single-image super-resolution (models espcn, fsrcnn, "
                        "edsr; source photos or srfolder; --compress none|block|auto; PSNR/SSIM and 720p latency)")
    p.add_argument("--model", default=None,
                   help="model name (see `suite ls models`; default vgg16, or fsrcnn for --task sr)")
    p.add_argument("--source", default=None,
                   help="image source (see `suite ls sources`; default digits16, or photos for --task sr)")
    p.add_argument("--data-root", default=None, help="dataset directory for on-disk sources")
    p.add_argument("--width", type=float, default=None, help="width multiplier (profile default)")
    p.add_argument("--seed", type=int, default=0, help="seed for model init, data order and stages")
    p.add_argument("--profile", default="default", help="default (the first run: minutes on 2 cores) | full (full-width model, large zoo, five-point sweep) | smoke (tests)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--cache-dir", default=None, help="model cache (default $SUITE_CACHE or ~/.cache/suite)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's training epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override the training batch size")
    p.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suite", description=__doc__.splitlines()[0])
    from suite import __version__

    parser.add_argument("--version", action="version", version=f"suite {__version__}")
    names = ["run", "train", "ls", *PLUGIN_COMMANDS]
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(names) + "}")

    p_run = sub.add_parser("run", help="compress, deploy, evaluate and record one model")
    _add_common(p_run)
    p_run.add_argument("--compress", default="none", help="compression scheme (see `suite ls compressors`)")
    p_run.add_argument("--sparsity", type=_fraction, default=None,
                       help="fraction of prunable weights removed, in [0, 1) (default: the scheme's)")
    p_run.add_argument("--compress-args", default="", help="scheme settings, e.g. r=8,c=4 or recovery=admm")
    p_run.add_argument("--mapping", default=None, help="auto only: rule | search")
    p_run.add_argument("--latency-target", type=_fraction, default=None,
                       help="--compress auto only. classification (--mapping search): latency as a fraction of "
                            "dense; --task sr: milliseconds per 720p output frame (1280x720; LR 640x360 at x2, "
                            "320x180 at x4) on the chosen backend")
    p_run.add_argument("--scale", type=int, default=None, help="--task sr only: SR factor, 2 (default) or 4")
    p_run.add_argument("--recovery", default=None, help="oneshot | gradual | admm (default oneshot)")
    p_run.add_argument("--backend", default="torch", help="deployment backend (see `suite ls backends`)")
    p_run.add_argument("--backend-args", default="", help="backend settings, e.g. batch_sizes=1,tune=false")
    p_run.add_argument("--target", default=None,
                       help="tvm only: 'host' (default), 'android-arm64', or a TVM JSON target")
    p_run.add_argument("--output-dir", default="runs", help="where run directories are created")
    p_run.add_argument("--attacks", default=None,
                       help="comma-separated attacks to run after deployment, or 'none' (default: the "
                            "standard list; see `suite ls attacks`)")
    p_run.add_argument("--attack-args", default="", help="settings passed to every attack, e.g. eps=0.04")
    p_run.add_argument("--fingerprints", default=None,
                       help="comma-separated fingerprint methods, or 'none' (default: the standard list)")
    p_run.add_argument("--fingerprint-args", default="", help="settings passed to every fingerprint method")
    p_run.add_argument("--negatives", type=int, default=None,
                       help="independent models in the suspect zoo (default: the profile's)")
    p_run.add_argument("--json", action="store_true",
                       help="print one JSON line (run_dir, model, metrics, seconds) instead of the summary")

    p_train = sub.add_parser("train", help="train (or load from cache) one dense model")
    _add_common(p_train)

    p_ls = sub.add_parser("ls", help="list registry entries")
    p_ls.add_argument("kind", nargs="?", default=None, help=f"one of: {', '.join(KINDS)}")

    import importlib

    for name, target in PLUGIN_COMMANDS.items():
        module, attr = target.split(":")
        COMMANDS[name] = getattr(importlib.import_module(module), attr)(sub)
    return parser


def _config_from_args(args: argparse.Namespace, **extra):
    from suite.core.config import PROFILE_DEFAULTS, PROFILES, RunConfig, default_cache_dir
    import dataclasses

    from suite.core.config import SR_DEFAULTS, Task
    from suite.core.errors import ConfigError

    if args.profile not in PROFILES:
        raise ConfigError(f"unknown profile {args.profile!r} (choices: {', '.join(PROFILES)})")
    task = Task.parse(args.task)
    recipe = PROFILE_DEFAULTS[args.profile]["recipe"]
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr))
                 if v is not None}
    if task is Task.SR:
        if overrides:
            raise ConfigError(f"--{next(iter(overrides)).replace('_', '-')} is a classification training setting; "
                              f"--task sr trains with its profile's SR recipe")
        recipe = None
        extra["task"] = task
    else:
        recipe = dataclasses.replace(recipe, **overrides)
    defaults = SR_DEFAULTS if task is Task.SR else {"model": "vgg16", "source": "digits16"}
    return RunConfig(
        model=args.model or defaults["model"], source=args.source or defaults["source"], data_root=args.data_root,
        width=args.width, seed=args.seed,
        profile=args.profile, device=args.device, threads=args.threads,
        cache_dir=args.cache_dir or default_cache_dir(), limit=args.limit, recipe=recipe, quiet=args.quiet,
        **extra,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from suite.app.pipeline import run
    from suite.core.config import Task, parse_kv, parse_names
    from suite.core.errors import ConfigError

    compress_args = parse_kv(args.compress_args)
    sr = Task.parse(args.task) is Task.SR
    extra = {}
    if sr:
        # milliseconds per 720p frame, a run-level setting of the SR search (validated in RunConfig)
        extra = {"latency_target": args.latency_target, "scale": args.scale}
    elif args.scale is not None:
        raise ConfigError("--scale applies to --task sr only")
    for key, value in (("mapping", args.mapping), ("latency_target", None if sr else args.latency_target),
                       ("recovery", args.recovery)):
        if value is not None:
            compress_args[key] = value
    cfg = _config_from_args(args, **extra, compress=args.compress, sparsity=args.sparsity,
                            compress_args=compress_args, backend=args.backend, target=args.target,
                            backend_args=parse_kv(args.backend_args),
                            output_dir=args.output_dir, attacks=parse_names(args.attacks),
                            attack_args=parse_kv(args.attack_args),
                            fingerprints=parse_names(args.fingerprints),
                            fingerprint_args=parse_kv(args.fingerprint_args), negatives=args.negatives)
    path, record = run(cfg)
    if args.json:
        summary = {"run_dir": str(path), "model": record["model"]["id"], **record["metrics"],
                   "seconds": record["timings"]["total"]}
        print(json.dumps(summary))
    elif record.get("task") == "sr":
        from suite.app.sr_pipeline import format_sr_summary

        print(format_sr_summary(path, record))
    else:
        from suite.app.summary import format_summary

        print(format_summary(path, record))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from suite.app.pipeline import get_trained_model, load_source, setup_runtime

    from suite.core.config import Task
    from suite.core.errors import ConfigError

    cfg = _config_from_args(args).resolved()
    if cfg.task is not Task.CLASSIFICATION:
        raise ConfigError("`suite train` trains classifiers; `suite run --task sr` trains (or loads) the SR model")
    setup_runtime(cfg)
    source = load_source(cfg)
    trained = get_trained_model(cfg, source)
    info = trained.info
    val = info["train"].get("val_acc") or [None]
    print(json.dumps({"model": info["id"], "cache_hit": info["cache_hit"], "path": info["cache_dir"],
                      "params": info["params"], "macs": info["macs"], "final_val_acc": val[-1]}))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from suite.app.summary import _eps as budget_text
    from suite.core.registries import REGISTRIES
    from suite.core.errors import UnknownNameError
    import difflib

    kinds = KINDS if args.kind is None else (args.kind,)
    for kind in kinds:
        if kind not in REGISTRIES:
            close = difflib.get_close_matches(kind, KINDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(f"unknown kind {kind!r}{hint} (choices: {', '.join(KINDS)})")
        registry = REGISTRIES[kind]
        print(f"{kind}:")
        entries = list(registry.entries())
        if not entries:
            print("  (none yet)")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            alias = f"  (aliases: {', '.join(e.aliases)})" if e.aliases else ""
            threat = e.tags.get("threat")
            budgets = (f"  [standard budgets: Linf {budget_text('linf', threat.linf)}, L2 {threat.l2:.4g}"
                       f"{', derived' if threat.derived else ''}]") if threat is not None else ""
            print(f"  {e.name:<{width}}  {e.description}{budgets}{alias}")
        if args.kind is None:
            print()
    return 0


COMMANDS: dict = {"run": cmd_run, "train": cmd_train, "ls": cmd_ls}


def main(argv: Sequence[str] | None = None) -> int:
    silence_known_library_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    with InterruptGuard() as guard:
        try:
            return COMMANDS[args.command](args)
        except SuiteError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt:
            guard.caught()
            print("interrupted: no record was written", file=sys.stderr)
            return 130
        except Terminated:
            guard.caught()
            print("interrupted (SIGTERM)", file=sys.stderr)
            return 143
