"""Turning ``--fingerprint-args`` and the profile into method settings, zoo settings and access.

``--fingerprint-args`` keys:

* ``key=value``: given to every selected method that has a setting ``key``
  (a key no selected method knows is a ConfigError);
* ``<method>.key=value``: that method only (``ltrc-examples.radius=0.6``);
* ``zoo.key=value``: a :class:`~fingerprints.zoo.ZooSpec` field
  (``zoo.schemes=block:nm``, ``zoo.executor=ray``, ``zoo.jobs=4``);
* ``access=label|prob``: how suspects are queried (default ``label``).

Profiles: ``smoke`` shrinks the generators (few fingerprints, few steps) so a
smoke run stays within seconds; ``default`` uses each method's own defaults.
"""

from __future__ import annotations

from typing import Any

from fingerprints.verify import ACCESS
from suite.core import registries as reg
from suite.core.errors import ConfigError

# profile -> {"*" or method name: settings}; "*" applies to every method that has the setting
PROFILE_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "smoke": {"*": {"count": 16, "steps": 15, "k": 2, "confidence": 1.0, "batch_size": 16, "max_rounds": 5},
              "rc-examples": {"noise": 0.5}, "ltrc-examples": {"noise": 0.5}},
}


def method_defaults(name: str) -> dict[str, Any]:
    """The DEFAULTS table of a registered method (imports its module)."""
    return dict(getattr(reg.fingerprints.get(name), "DEFAULTS", {}))


def split_args(methods: tuple[str, ...], args: dict[str, Any]) -> tuple[dict[str, dict[str, Any]],
                                                                         dict[str, Any], str]:
    """``(per-method settings, zoo settings, access)`` from ``--fingerprint-args``."""
    per: dict[str, dict[str, Any]] = {m: {} for m in methods}
    zoo: dict[str, Any] = {}
    access = "label"
    for key, value in args.items():
        if key == "access":
            if value not in ACCESS:
                raise ConfigError(f"access must be one of {', '.join(ACCESS)}, got {value!r}")
            access = str(value)
        elif key.startswith("zoo."):
            zoo[key[4:]] = value
        elif "." in key:
            name, sub = key.split(".", 1)
            name = reg.fingerprints.canonical(name)
            if name not in per:
                raise ConfigError(f"--fingerprint-args {key}: {name} is not among the selected methods "
                                  f"({', '.join(methods) or 'none'})")
            per[name][sub] = value
        else:
            takers = [m for m in methods if key in method_defaults(m)]
            if not takers:
                raise ConfigError(f"no selected fingerprint method has a setting {key!r} "
                                  f"(methods: {', '.join(methods) or 'none'})")
            for m in takers:
                per[m][key] = value
    return per, zoo, access


def build_method(name: str, profile: str, settings: dict[str, Any]):
    """``reg.fingerprints.build(name, **settings)`` on top of the profile's shrunken defaults."""
    name = reg.fingerprints.canonical(name)
    defaults = method_defaults(name)
    table = PROFILE_SETTINGS.get(profile, {})
    base = {k: v for k, v in table.get("*", {}).items() if k in defaults}
    base.update(table.get(name, {}))
    return reg.fingerprints.build(name, **{**base, **settings})
