"""TVM targets: the host CPU detected automatically, or a user JSON target."""

from __future__ import annotations

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

