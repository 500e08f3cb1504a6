"""``python -m suite audit``: the command-line front of :mod:`fingerprints.audit`.

Imports nothing heavy at module level (``suite --help`` stays fast); the
handler imports the audit machinery when it runs.  Exit status: 0 for a
completed audit whatever the verdict; 2 with a one-line ``error:`` for an
unreadable suspect, a wrong input shape or class count, a suspect that hangs
past its time limit or is killed by its sandbox, a bad setting, or (with
``--require-sandbox``) a sandbox protection that is not available here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable


def add_command(sub) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("audit", help="audit a suspect model against an owner's fingerprints",
                       description="Query a suspect model (label-only by default) with an owner's fingerprints "
                                   "and decide: derived, independent or inconclusive.")
    p.add_argument("--owner", required=True,
                   help="run directory, model-cache entry directory, or cached model id of the owner")
    p.add_argument("--suspect", required=True,
                   help="suspect: .pt/.pth state_dict (with --arch), .pt2 torch.export archive, .onnx, "
                        "or a TVM/ONNX artifact directory")
    p.add_argument("--arch", default=None, help="architecture of a state_dict suspect (vgg16, resnet18, ...)")
    p.add_argument("--width", type=float, default=None, help="width of a state_dict suspect (default: inferred)")
    p.add_argument("--fingerprints", default="ltrc-examples", help="fingerprint method (default ltrc-examples)")
    p.add_argument("--fingerprint-args", default="", help="method / zoo settings, as for `suite run`")
    p.add_argument("--access", default="label", help="label (default) | prob")
    p.add_argument("--negatives", type=int, default=None, help="independent models in the zoo (profile default)")
    p.add_argument("--profile", default=None, help="smoke | default (default: the owner run's, else default)")
    p.add_argument("--data-root", default=None, help="dataset directory, if fingerprints must be built")
    p.add_argument("--limit", type=int, default=None, help="images per split, as in the owner's run")
    p.add_argument("--cache-dir", default=None, help="model cache (default $SUITE_CACHE or ~/.cache/suite)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per query batch (default 30)")
    p.add_argument("--startup-timeout", type=float, default=60.0, help="seconds allowed to load the suspect")
    p.add_argument("--threads", type=int, default=1, help="threads of the suspect worker (default 1)")
    p.add_argument("--alpha", type=float, default=0.01, help="significance level of a derived verdict")
    p.add_argument("--require-sandbox", action="store_true",
                   help="refuse to load the suspect unless every sandbox protection (filesystem, network, "
                        "syscalls, limits, user) is active")
    p.add_argument("--memory-limit", type=int, default=None, metavar="MB",
                   help="address-space limit of the suspect worker in MiB (default: half the machine's "
                        "memory, at least 8192; 0: none)")
    p.add_argument("--cpu-limit", type=int, default=None, metavar="S",
                   help="CPU seconds the suspect worker may use (default 3600; 0: none)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return cmd_audit


def cmd_audit(args: argparse.Namespace) -> int:
    from fingerprints.audit import audit, human_summary, resolve_owner
    from suite.core.config import PROFILES, default_cache_dir, parse_kv
    from suite.core.errors import ConfigError

    cache_dir = args.cache_dir or default_cache_dir()
    if args.timeout <= 0 or args.startup_timeout <= 0:
        raise ConfigError("--timeout and --startup-timeout must be > 0 seconds")
    if (args.memory_limit is not None and args.memory_limit < 0) or (args.cpu_limit is not None and args.cpu_limit < 0):
        raise ConfigError("--memory-limit and --cpu-limit must be >= 0 (0: no limit)")
    if args.negatives is not None and args.negatives < 2:
        raise ConfigError(f"--negatives must be >= 2 (half calibrate, half evaluate), got {args.negatives}")
    ref = resolve_owner(args.owner, cache_dir)
    if args.profile is not None:
        if args.profile not in PROFILES:
            raise ConfigError(f"unknown profile {args.profile!r} (choices: {', '.join(PROFILES)})")
        ref.profile = args.profile
    if args.data_root is not None:
        ref.data_root = args.data_root
    if args.limit is not None:
        ref.limit = args.limit

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[audit] {message}", file=sys.stderr, flush=True)

    result = audit(ref, args.suspect, cache_dir=cache_dir, method=args.fingerprints, access=args.access,
                   arch=args.arch, width=args.width, fingerprint_args=parse_kv(args.fingerprint_args),
                   negatives=args.negatives, timeout=args.timeout, startup_timeout=args.startup_timeout,
                   threads=args.threads, alpha=args.alpha, require_sandbox=args.require_sandbox,
                   memory_mb=args.memory_limit, cpu_seconds=args.cpu_limit, log=log)
    print(json.dumps(result, indent=2) if args.json else human_summary(result))
    return 0
