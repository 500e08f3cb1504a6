"""TVM targets: the host CPU detected automatically, or a user JSON target."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from suite.core.errors import ConfigError

MOBILE_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]}


def host_target_dict(threads: int | None = None) -> dict[str, Any]:
    """The host CPU as a TVM 0.27 JSON target (``mcpu`` named, never ``native``)."""
    from tvm.target import codegen

    return {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": codegen.llvm_get_system_cpu(),
            "num-cores": int(threads or os.cpu_count() or 1)}


def parse_target(text: str | dict | None, threads: int | None = None) -> dict[str, Any]:
    """``None``/``"host"`` -> host target; ``"android-arm64"`` -> NEON target; else a JSON dict."""
    if text is None or text == "host":
        return host_target_dict(threads)
    if isinstance(text, dict):
        return dict(text)
    if text in ("android-arm64", "aarch64"):
        return dict(MOBILE_TARGET)
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"--target must be 'host', 'android-arm64' or a TVM JSON target, got {text!r}") from None
    if not isinstance(value, dict) or "kind" not in value:
        raise ConfigError(f"--target JSON needs a 'kind' key, got {text!r}")
    return value


def is_host(target: dict[str, Any]) -> bool:
    return str(target.get("mtriple", "")).startswith("x86_64") and target.get("kind") == "llvm"


@functools.lru_cache(maxsize=16)
def _vector_registers(target_json: str) -> tuple[int, int]:
    import tvm
    from tvm.target import codegen

    target = json.loads(target_json)
    if str(target.get("mtriple", "")).startswith("aarch64"):
        return 4, 32  # NEON: 32 registers of 128 bits
    if target.get("kind") != "llvm":
        return 4, 16
    tvm_target = tvm.target.Target(target)
    if codegen.target_has_features("avx512f", tvm_target):
        return 16, 32
    if codegen.target_has_features("avx2", tvm_target) or codegen.target_has_features("avx", tvm_target):
        return 8, 16
    return 4, 16  # SSE


def vector_registers(target: dict[str, Any]) -> tuple[int, int]:
    """``(float32 lanes per vector register, number of vector registers)`` of ``target``'s ISA.

    AVX-512: ``(16, 32)``; AVX2 / AVX: ``(8, 16)``; aarch64 NEON: ``(4, 32)``;
    anything else: ``(4, 16)``.  The conv template sizes its register tiles
    from this (an accumulator tile larger than the register file spills).
    """
    return _vector_registers(json.dumps(target, sort_keys=True))
