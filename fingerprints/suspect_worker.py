"""Worker process that loads one untrusted suspect model and answers predict requests.

Usage: ``python -m fingerprints.suspect_worker SPEC_JSON`` where the spec is
``{"format", "path", "arch"?, "width"?, "input_hw": [H, W], "threads"}`` (see
:func:`fingerprints.suspects.load_suspect`).  It speaks exactly the frame
protocol of :mod:`compression.backends.artifact` (JSON headers, ``.npy``
payloads, never pickle) and reuses the start-up and serving loop of
:mod:`compression.backends.worker`: the process enters the kernel sandbox of
:mod:`compression.backends.sandbox` (policy from
:class:`fingerprints.isolation.SuspectPredictor`: read-only access to the
suspect's private copy and the runtime, no network, no new programs or
processes, limits, uid ``nobody``) and reports it in a ``sandbox`` frame before
the suspect is read; the ``ready`` frame adds the suspect's ``format`` and
``details``.  Exit codes: 0 on close, 1 if the suspect does not load, 2 on bad
usage, 3 when the full sandbox is required and missing.
"""

from __future__ import annotations

import json
import sys


def _load(argument: str):
    spec = json.loads(argument)
    if spec.get("format") == "onnx":  # onnxruntime and numpy only: this worker never imports torch
        from fingerprints.onnx_suspect import OnnxSuspect

        return OnnxSuspect.from_spec(spec)
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
