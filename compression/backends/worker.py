"""Worker process for :class:`~compression.backends.artifact.IsolatedPredictor`.

Usage: ``python -m compression.backends.worker ARTIFACT_DIR``.  Loads the
artifact with ``load_predictor(ARTIFACT_DIR, isolated=False)`` and serves
predict requests over stdin/stdout frames (see the protocol in
:mod:`compression.backends.artifact`) until ``close`` or end of input.
Anything the runtime prints (Python or C level) goes to stderr, never into the
protocol stream.  Before anything is loaded the worker enters the sandbox its
parent asked for (:mod:`compression.backends.sandbox`, policy in the environment)
and reports what is active in a first ``{"op": "sandbox", "sandbox": {...}}``
frame, sent before the artifact is read (so code in the artifact cannot forge
it).  Exit codes: 0 on a normal close, 1 if the artifact does not load, 3 if the
policy requires the full sandbox and a protection is missing.
"""

from __future__ import annotations

import os
import signal
import sys


def _claim_stdio() -> tuple[int, int]:
    """Private fds for the protocol; fd 0 becomes /dev/null and fd 1 a copy of stderr."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_in, proto_out


def _serve(predictor, proto_in: int, proto_out: int) -> int:
    """Answer frames until ``close``/EOF; a failing request gets an error frame and the loop goes on.

    A runtime with ``predict_array`` (numpy in, float32 logits out) is served
    without importing torch; any other gets a torch tensor.
    """
    import numpy as np

    from compression.backends.framing import decode_array, encode_array, recv_frame, send_frame

    numpy_only = callable(getattr(predictor, "predict_array", None))

    shape = tuple(predictor.input_shape)
    while True:
        try:
            header, payload = recv_frame(proto_in)
        except EOFError:
            return 0
        op = header.get("op")
        if op == "close":
            return 0
        try:
            if op != "predict":
                raise ValueError(f"unknown request {op!r}")
            x = decode_array(payload)
            if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != shape:
                raise ValueError(f"expected float32 input [N, {', '.join(map(str, shape))}], "
                                 f"got {x.dtype} {list(x.shape)}")
            if numpy_only:
                out = np.ascontiguousarray(predictor.predict_array(x), np.float32)
            else:
                out = _predict_torch(predictor, x)
        except ValueError as err:
            send_frame(proto_out, {"op": "error", "kind": "value", "message": _message(err)})
            continue
        except Exception as err:  # noqa: BLE001 - reported to the parent, the worker stays up
            send_frame(proto_out, {"op": "error", "kind": "artifact",
                                   "message": f"deployment failed in predict ({_message(err)})"})
            continue
        send_frame(proto_out, {"op": "result"}, encode_array(out))


def _predict_torch(predictor, x):
    import torch

    with torch.no_grad():
        logits = predictor.predict(torch.from_numpy(x))
    return logits.detach().to("cpu", torch.float32).contiguous().numpy()


def _message(err: BaseException) -> str:
    from compression.backends.framing import _one_line
    from suite.core.errors import SuiteError

    text = _one_line(err)
    return text if isinstance(err, SuiteError) else f"{err.__class__.__name__}: {text}"


def serve_main(args: list[str], load, usage: str, ready_extra=lambda predictor, argument: {}) -> int:
    """Shared worker start-up: claim the protocol pipes, load one predictor, announce it, serve it.

    args: command-line arguments (exactly one: what ``load`` receives).
    load: ``str -> predictor`` (``input_shape``, ``num_classes``, ``predict``);
        any exception becomes one error frame and exit code 1.
    usage: the error text for a wrong argument count (exit code 2).
    ready_extra: ``(predictor, argument) -> dict`` merged into the ``ready`` frame.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    proto_in, proto_out = _claim_stdio()
    # confine the process before torch, a runtime or the untrusted file is loaded
    from compression.backends.sandbox import describe_missing, enter_from_environment, missing

    sandbox, policy = enter_from_environment()
    from compression.backends.framing import send_frame

    send_frame(proto_out, {"op": "sandbox", "sandbox": sandbox})
    if policy is not None and policy.require and missing(sandbox):
        send_frame(proto_out, {"op": "error", "kind": "sandbox", "sandbox": sandbox,
                               "message": f"refusing to load without the full sandbox ({describe_missing(sandbox)})"})
        return 3
    if len(args) != 1:
        send_frame(proto_out, {"op": "error", "message": usage})
        return 2
    try:
        predictor = load(args[0])
        extra = ready_extra(predictor, args[0])
    except Exception as err:  # noqa: BLE001 - every startup failure goes back as one line
        send_frame(proto_out, {"op": "error", "message": _message(err)})
        return 1
    send_frame(proto_out, {"op": "ready", "pid": os.getpid(), "input_shape": list(predictor.input_shape),
                           "num_classes": int(predictor.num_classes), **extra})
    try:
        return _serve(predictor, proto_in, proto_out)
    except BrokenPipeError:  # the parent went away
        return 0


def _load_artifact(directory: str):
    from compression.backends.artifact import load_predictor

    return load_predictor(directory, isolated=False)


def main(argv: list[str] | None = None) -> int:
    return serve_main(sys.argv[1:] if argv is None else argv, _load_artifact,
                      "usage: python -m compression.backends.worker DIR")


if __name__ == "__main__":
    sys.exit(main())
