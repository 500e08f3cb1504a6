"""Weight-level pruning schemes (see ``compression.schemes.base`` for the contract).

``SCHEMES`` maps a scheme name to its class; :func:`make_scheme` builds one
from user settings, rejecting unknown setting names and bad values with a
one-line :class:`~suite.core.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
from typing import Any

from compression.schemes.base import CompactLayer, Scheme, gemm_view
from compression.schemes.block import Block
from compression.schemes.nm import NM
from compression.schemes.pattern import Pattern, select_library
from compression.schemes.punched import BlockPunched
from compression.schemes.unstructured import Unstructured, global_masks
from suite.core.errors import ConfigError, UnknownNameError

SCHEMES: dict[str, type] = {
    "unstructured": Unstructured,
    "block": Block,
    "block-punched": BlockPunched,
    "pattern": Pattern,
    "nm": NM,
}


def accepted_settings(name: str) -> list[str]:
    """The setting names scheme ``name`` accepts (its constructor's keyword arguments)."""
    params = inspect.signature(_scheme_class(name)).parameters
    return [p for p in params if p != "self"]


def make_scheme(name: str, **settings: Any) -> Scheme:
    """Build scheme ``name`` from ``settings``.

    Raises UnknownNameError for an unknown scheme and ConfigError for unknown
    setting names (listing the accepted ones) or bad values.
    """
    accepted = accepted_settings(name)
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        choices = ", ".join(accepted) if accepted else "none"
        raise ConfigError(f"unknown setting(s) for scheme {name!r}: {', '.join(unknown)}; "
                          f"accepted: {choices}")
    return _scheme_class(name)(**settings)


def _scheme_class(name: str) -> type:
    if name not in SCHEMES:
        raise UnknownNameError(f"unknown scheme {name!r}; choices: {', '.join(SCHEMES)}")
    return SCHEMES[name]


__all__ = ["SCHEMES", "make_scheme", "accepted_settings", "select_library", "global_masks",
           "CompactLayer", "Scheme", "gemm_view", "Unstructured", "Block", "BlockPunched",
           "Pattern", "NM"]
