"""``python -m suite cache {ls,prune}``: what the cache holds, and bounding it.

``ls`` lists every entry (namespace, name, size, last use; ``--runs DIR``
adds the runs whose records use it) and the total; ``prune`` removes entries
unused for ``--older-than`` and then the least recently used ones until the
cache fits ``--max-size`` (``--dry-run`` only says what it would remove).
Entries being loaded or built by another process are skipped; removal is
whole or nothing (:mod:`suite.core.cache_admin`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable


def add_command(sub: Any) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("cache", help="list or prune the cache (models, compressed models, artifacts, ...)",
                       description="List or prune the suite's cache.")
    actions = p.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="list cache entries, sizes, last use and the runs that use them")
    ls.add_argument("--runs", default=None, metavar="DIR", help="runs directory: show which runs use each entry")
    prune = actions.add_parser("prune", help="remove entries by age and/or total size (least recently used first)")
    prune.add_argument("--older-than", default=None, metavar="AGE", help="unused for AGE, e.g. 7d, 12h, 30m")
    prune.add_argument("--max-size", default=None, metavar="SIZE", help="keep the cache under SIZE, e.g. 1G, 500M")
    prune.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    for a in (ls, prune):
        a.add_argument("--cache-dir", default=None, help="cache root (default $SUITE_CACHE or ~/.cache/suite)")
        a.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return cmd_cache


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_cache(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from suite.core import cache_admin as admin
    from suite.core.runtime import default_cache_dir

    root = args.cache_dir or default_cache_dir()
    now = time.time()
    if args.cache_action == "ls":
        entries = admin.list_entries(root)
        if args.runs:
            admin.attach_runs(entries, args.runs)
        total = sum(e.size_bytes for e in entries)
        if args.json:
            print(json.dumps({"cache_dir": str(root), "total_bytes": total, "tree_bytes": admin.tree_size(root),
                              "entries": [e.summary() for e in entries]}))
            return 0
        rows = [[e.namespace, e.name, admin.human_size(e.size_bytes), _age(now - e.last_used) + " ago",
                 ", ".join(e.used_by) if args.runs else None] for e in entries]
        headers = ["namespace", "entry", "size", "last used", "used by"]
        if not args.runs:
            rows, headers = [r[:-1] for r in rows], headers[:-1]
        print(tabulate(rows, headers=headers, tablefmt="simple") if rows else "(empty)")
        other = admin.tree_size(root) - total
        print(f"{len(entries)} entries, {admin.human_size(total)} in {root}"
              + (f" (plus {admin.human_size(other)} of other files: tuning databases, locks, temporaries)"
                 if other > 0 else ""))
        return 0
    older = admin.parse_age(args.older_than) if args.older_than else None
    size = admin.parse_size(args.max_size) if args.max_size else None
    report = admin.prune(root, older_than_s=older, max_size_bytes=size, dry_run=args.dry_run, now=now)
    if args.json:
        print(json.dumps({"cache_dir": str(root), "dry_run": args.dry_run, **report.summary()}))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for e in report.removed:
        print(f"{verb} {e.namespace}/{e.name} ({admin.human_size(e.size_bytes)}, "
              f"last used {_age(now - e.last_used)} ago)")
    for e in report.in_use:
        print(f"kept {e.namespace}/{e.name}: in use by another process")
    for p in report.temporaries:
        print(f"{verb} abandoned temporary {p}")
    print(f"{verb} {len(report.removed)} entries, {admin.human_size(report.freed_bytes)}; "
          f"{admin.human_size(report.kept_bytes)} kept")
    return 0
