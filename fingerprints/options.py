"""Turning ``--fingerprint-args`` and the profile into method settings, zoo settings and access.

``--fingerprint-args`` keys:

* ``key=value``: given to every selected method that has a setting ``key``
  (a key no selected method knows is a ConfigError);
* ``<method>.key=value``: that method only (``ltrc-examples.radius=0.6``);
* ``zoo.key=value``: a :class:`~fingerprints.zoo.ZooSpec` field
  (``zoo.schemes=block:nm``, ``zoo.executor=ray``, ``zoo.jobs=4``);
* ``access=label|prob``: how suspects are queried (default ``label``).

Routing is :func:`suite.core.settings.route`; ``zoo`` and ``access`` are its
settings groups.  Profiles: each method declares its ``smoke`` overrides next
to its class (``SETTINGS.profiles``: few fingerprints, few steps, so a smoke
run stays within seconds); ``default`` uses each method's own defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fingerprints.verify import ACCESS
from suite.core import registries as reg
from suite.core.settings import Field, Group, SettingsSpec, route

# ``access=label|prob``: how suspects are queried (its own settings group, bare key only).
VERIFY = SettingsSpec({"access": Field("label", str, choices=ACCESS, doc="label | prob")})


def zoo_group() -> Group:
    """``zoo.KEY``: a :class:`~fingerprints.zoo.ZooSpec` field (prefix only; ``make_spec`` checks values)."""
    from fingerprints.zoo import ZooSpec

    return Group("zoo", tuple(f.name for f in dataclasses.fields(ZooSpec)), bare=False, prefixed=True)


def method_defaults(name: str) -> dict[str, Any]:
    """The default settings of a registered method (imports its module)."""
    return reg.fingerprints.get(name).SETTINGS.defaults()


def split_args(methods: tuple[str, ...], args: dict[str, Any]) -> tuple[dict[str, dict[str, Any]],
                                                                         dict[str, Any], str]:
    """``(per-method settings, zoo settings, access)`` from ``--fingerprint-args`` (one ``route`` call)."""
    routed = route(args, {m: reg.fingerprints.get(m).SETTINGS for m in methods},
                   groups=[zoo_group(), Group.of("verify", VERIFY, prefixed=False)],
                   canonical=reg.fingerprints.canonical, flag="--fingerprint-args", kind="fingerprint method")
    zoo = routed.pop("zoo")
    access = VERIFY.resolve(routed.pop("verify")).access
    return routed, zoo, access


def build_method(name: str, profile: str, settings: dict[str, Any]):
    """``reg.fingerprints.build(name, **settings)`` on top of the profile's overrides declared by the method."""
    name = reg.fingerprints.canonical(name)
    return reg.fingerprints.build(name, **{**reg.fingerprints.get(name).SETTINGS.profile(profile), **settings})
