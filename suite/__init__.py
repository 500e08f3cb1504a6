"""suite: robustness and IP-protection evaluation of compressed image classifiers.

Importing ``suite`` is cheap: registries hold lazy targets, so TVM, ONNX
Runtime and Ray are imported only by the runs that use them.
"""

from __future__ import annotations

try:
    from importlib.metadata import version as _version

    __version__ = _version("suite")
except Exception:  # pragma: no cover - not installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
