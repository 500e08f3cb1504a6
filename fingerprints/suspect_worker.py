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
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    from compression.backends.worker import _claim_stdio

    proto_in, proto_out = _claim_stdio()
    from compression.backends.artifact import send_frame
    from compression.backends.worker import _message, _serve

    if len(args) != 1:
        send_frame(proto_out, {"op": "error", "message": "usage: python -m fingerprints.suspect_worker SPEC_JSON"})
        return 2
    try:
        spec = json.loads(args[0])
        import torch

        torch.set_num_threads(max(1, int(spec.get("threads") or 1)))
        from fingerprints.suspects import load_suspect

        predictor = load_suspect(spec)
    except Exception as err:  # noqa: BLE001 - every load failure goes back as one line
        send_frame(proto_out, {"op": "error", "message": _message(err)})
        return 1
    send_frame(proto_out, {"op": "ready", "pid": os.getpid(), "input_shape": list(predictor.input_shape),
                           "num_classes": int(predictor.num_classes), "format": spec.get("format"),
                           "details": predictor.details})
    try:
        return _serve(predictor, proto_in, proto_out)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
