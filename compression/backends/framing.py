"""Length-prefixed frames between a parent and its isolated worker: a JSON header and an ``.npy`` payload.

Standard library and numpy only, so a worker that serves a numpy-only
runtime (an ONNX suspect) starts without importing torch.  A frame is
``>IQ`` (header bytes, payload bytes), the UTF-8 JSON header, then the
payload; arrays are ``.npy`` bytes, never pickles.
"""

from __future__ import annotations

import io
import json
import os
import select
import struct
import time
from typing import Any

import numpy as np

_FRAME = struct.Struct(">IQ")
_MAX_HEADER = 1 << 20


def _one_line(err: BaseException) -> str:
    """``str(err)`` reduced to its first non-empty line (class name if empty)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else err.__class__.__name__


class _Timeout(Exception):
    """A deadline passed while talking to the worker."""


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    """Read exactly ``n`` bytes; EOFError on end of stream, _Timeout past ``deadline`` (monotonic s)."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _Timeout
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes, deadline: float | None) -> None:
    """Write all of ``data`` (``fd`` non-blocking when a deadline is given)."""
    view = memoryview(data)
    while view:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise _Timeout
        try:
            n = os.write(fd, view[:1 << 20])
        except BlockingIOError:
            continue
        view = view[n:]


def encode_array(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def decode_array(payload: bytes) -> np.ndarray:
    """One ``.npy`` array from bytes; never unpickles (ValueError on anything else)."""
    arr = np.load(io.BytesIO(payload), allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError("payload is not a single .npy array")
    return arr if arr.flags.writeable else arr.copy()


def send_frame(fd: int, header: dict[str, Any], payload: bytes = b"", deadline: float | None = None) -> None:
    head = json.dumps(header).encode()
    _write_all(fd, _FRAME.pack(len(head), len(payload)) + head + payload, deadline)


def recv_frame(fd: int, deadline: float | None = None,
               max_payload: int = 1 << 40) -> tuple[dict[str, Any], bytes]:
    """``(header, payload)``; EOFError at end of stream, ValueError on a malformed frame."""
    n_head, n_payload = _FRAME.unpack(_read_exact(fd, _FRAME.size, deadline))
    if n_head > _MAX_HEADER or n_payload > max_payload:
        raise ValueError(f"oversized frame (header {n_head} B, payload {n_payload} B)")
    header = json.loads(_read_exact(fd, n_head, deadline))
    if not isinstance(header, dict):
        raise ValueError("frame header is not a JSON object")
    return header, _read_exact(fd, n_payload, deadline) if n_payload else b""
