"""Worker process that loads one untrusted suspect model and answers predict requests.

Usage: ``python -m fingerprints.suspect_worker SPEC_JSON`` where the spec is
``{"format", "path", "arch"?, "width"?, "input_hw": [H, W], "threads"}`` (see
:func:`fingerprints.suspects.load_suspect`).  It speaks exactly the frame
protocol of :mod:`compression.backends.artifact` (JSON headers, ``.npy``
payloads, never pickle) and reuses the serving loop of
:mod:`compression.backends.worker`; the ``ready`` frame adds the suspect's
``format`` and ``details``.  Exit codes: 0 on close, 1 if the suspect does
not load, 2 on bad usage.
"""

from __future__ import annotations

import json
import sys


def _load(argument: str):
    spec = json.loads(argument)
    import torch

    torch.set_num_threads(max(1, int(spec.get("threads") or 1)))
    from fingerprints.suspects import load_suspect

    return load_suspect(spec)


def main(argv: list[str] | None = None) -> int:
    from compression.backends.worker import serve_main

    return serve_main(sys.argv[1:] if argv is None else argv, _load,
                      "usage: python -m fingerprints.suspect_worker SPEC_JSON",
                      lambda p, argument: {"format": json.loads(argument).get("format"), "details": p.details})


if __name__ == "__main__":
    sys.exit(main())
