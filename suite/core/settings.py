"""One declarative settings model for attacks, fingerprint methods, compressors and backends.

A component declares its settings once, next to its class, as a
:class:`SettingsSpec` of :class:`Field` s (default, type, range, choices) plus
optional *profile overrides* (``smoke``: tiny budgets)::

    class UAPPGD(Attack):
        SETTINGS = Attack.SETTINGS.extend(
            steps=Field(200, int, gt=0), step_size=Field(0.1, float, gt=0),
            profiles={"smoke": {"steps": 10}})

:meth:`SettingsSpec.resolve` turns given values into a frozen
:class:`Settings` mapping: defaults filled in, values coerced (ints accepted
for floats, integral floats for ints, command-line strings such as ``"0.1"``,
``"48/255"``, ``"true"`` or ``"none"`` parsed), ranges and choices checked.
Every bad value is a one-line :class:`~suite.core.errors.ConfigError`; an
unknown key names the closest valid key (difflib) and lists the valid ones.

:class:`Configurable` is the base of classes built from settings only: its
``settings`` attribute is the resolved :class:`Settings`, every setting is
readable as an attribute (``attack.eps``, ``method.count``) and none can be
assigned after construction (:class:`FrozenSettingsError`).

:func:`route` is the one router of ``KEY=V`` / ``NAME.KEY=V`` argument dicts
(``--attack-args``, ``--fingerprint-args``) among several named components
and reserved settings :class:`Group` s (the attack stage's keys, the
fingerprint zoo's ``zoo.`` prefix, ``access``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

from suite.core.errors import ConfigError

__all__ = ["Field", "SettingsSpec", "Settings", "Configurable", "FrozenSettingsError", "Group", "route",
           "unknown_key_error", "parse_number"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


class FrozenSettingsError(AttributeError):
    """Assigning a setting of a built component (build a new one instead)."""


def parse_number(text: str) -> float:
    """``"0.1"``, ``"1e-3"`` or a fraction such as ``"48/255"`` -> float (ValueError otherwise)."""
    text = text.strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Field:
    """One setting.

    default: value when not given (resolved through the same checks only when given).
    type: ``bool``, ``int``, ``float``, ``str`` or ``object`` (anything, no coercion).
    optional: ``None`` is a valid value.
    choices: the allowed values (after coercion).
    ge/gt/le/lt: numeric range.
    parse: converts a given (non-None) value before the type check, e.g. a
        norm alias or a colon-separated list; ValueError/TypeError become ConfigErrors.
    doc: one line for listings.
    """

    default: Any = None
    type: type = object
    optional: bool = False
    choices: tuple[Any, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    parse: Callable[[Any], Any] | None = None
    doc: str = ""

    def coerce(self, owner: str, key: str, value: Any) -> Any:
        """The checked value of ``key`` (ConfigError naming ``owner`` and ``key`` if bad)."""
        where = f"{owner} {key}".strip()
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")
                             and self.optional and self.type is not str):
            if self.optional:
                return None
            raise ConfigError(f"{where} must be {self._expected()}, got None")
        if self.parse is not None:
            try:
                value = self.parse(value)
            except ConfigError:
                raise
            except (ValueError, TypeError, ZeroDivisionError) as err:
                raise ConfigError(f"{where}: bad value {value!r} ({err})") from None
        value = self._typed(where, value)
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        self._check_range(where, value)
        return value

    def _expected(self) -> str:
        if self.choices:
            return f"one of {', '.join(map(str, self.choices))}"
        return _TYPE_WORDS.get(self.type, "a value")

    def _typed(self, where: str, value: Any) -> Any:
        t = self.type
        bad = ConfigError(f"{where} must be {self._expected()}, got {value!r}")
        if t is object:
            return value
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            raise bad
        if t is int:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, int):
                return int(value)
            if isinstance(value, str):
                try:
                    value = parse_number(value) if any(c in value for c in "./eE") else int(value.strip())
                except (ValueError, ZeroDivisionError):
                    raise bad from None
                if isinstance(value, int):
                    return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        if t is float:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, (int, float, Fraction)):
                return float(value)
            if isinstance(value, str):
                try:
                    return parse_number(value)
                except (ValueError, ZeroDivisionError):
                    raise bad from None
            raise bad
        if t is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)  # "--attack-args sweep=8" parses to an int
            raise bad
        if not isinstance(value, t):
            raise bad
        return value

    def _check_range(self, where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        lo = f"[{_fmt(self.ge)}" if self.ge is not None else (f"({_fmt(self.gt)}" if self.gt is not None else None)
        hi = f"{_fmt(self.le)}]" if self.le is not None else (f"{_fmt(self.lt)})" if self.lt is not None else None)
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if ok:
            return
        if lo and hi:
            rule = f"in {lo}, {hi}"
        elif lo:
            rule = f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        else:
            rule = f"{'<=' if self.le is not None else '<'} {hi[:-1]}"  # type: ignore[index]
        raise ConfigError(f"{where} must be {rule}, got {_fmt(value)}")


def unknown_key_error(key: str, valid: Iterable[str], *, what: str) -> ConfigError:
    """``unknown setting 'radiuss' for <what>; did you mean 'radius'? (settings: ...)``."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown setting {key!r} for {what}{hint} (settings: {', '.join(valid) or 'none'})")


class Settings(Mapping[str, Any]):
    """Resolved, frozen settings: a read-only mapping with attribute access.

    ``dict(settings)`` (or :meth:`as_dict`) is what records and cache keys hold.
    """

    __slots__ = ("_values", "_owner")

    def __init__(self, values: Mapping[str, Any], owner: str = "") -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_owner", owner)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise FrozenSettingsError(f"settings of {self._owner or 'this component'} are frozen "
                                  f"(cannot set {key!r}; build a new one)")

    __delattr__ = __setattr__  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Settings):
            return self._values == other._values
        if isinstance(other, Mapping):
            return self._values == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def __reduce__(self):
        return (Settings, (self._values, self._owner))

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


class SettingsSpec:
    """The declared settings of one component: fields, profile overrides, owner label.

    owner: how messages name the component (``"uap-pgd"``); :meth:`resolve`
    may override it.  profiles: ``{profile: {key: value}}`` defaults of a
    profile (``smoke``), applied under the given values by :meth:`resolve`.
    """

    def __init__(self, fields: Mapping[str, Field] | None = None, *, owner: str = "",
                 profiles: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.fields: dict[str, Field] = dict(fields or {})
        self.owner = owner
        self.profiles: dict[str, dict[str, Any]] = {p: dict(v) for p, v in (profiles or {}).items()}
        for profile, values in self.profiles.items():
            for key, value in values.items():
                if key not in self.fields:
                    raise unknown_key_error(key, self.fields, what=f"the {profile} profile of {owner or 'settings'}")
                self.fields[key].coerce(owner, key, value)  # a profile value must be valid itself

    def extend(self, *, owner: str | None = None, drop: Iterable[str] = (),
               profiles: Mapping[str, Mapping[str, Any]] | None = None, **fields: Field) -> "SettingsSpec":
        """A new spec: these fields added or replaced (``drop`` removed), profiles merged per profile."""
        merged = {k: f for k, f in self.fields.items() if k not in set(drop)}
        merged.update(fields)
        prof = {p: {k: v for k, v in vals.items() if k in merged} for p, vals in self.profiles.items()}
        for p, vals in (profiles or {}).items():
            prof.setdefault(p, {}).update(vals)
        return SettingsSpec(merged, owner=self.owner if owner is None else owner, profiles=prof)

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def keys(self) -> list[str]:
        return list(self.fields)

    def defaults(self) -> dict[str, Any]:
        return {k: f.default for k, f in self.fields.items()}

    def profile(self, name: str | None) -> dict[str, Any]:
        """The overrides of profile ``name`` (empty for None and for profiles the component does not declare).

        The fields' own defaults are the thorough values (the ``full``
        profile); a component lighter in the first run declares a
        ``default`` profile.  None (a component built directly, outside a
        run) means no profile: the fields' defaults.
        """
        return dict(self.profiles.get(name, {})) if name else {}

    def check_keys(self, values: Iterable[str], *, owner: str | None = None) -> None:
        for key in values:
            if key not in self.fields:
                raise unknown_key_error(key, self.fields, what=owner or self.owner or "these settings")

    def coerce_given(self, values: Mapping[str, Any], *, owner: str | None = None) -> dict[str, Any]:
        """Only the given ``values``, keys and values checked (no defaults filled in)."""
        owner = self.owner if owner is None else owner
        self.check_keys(values, owner=owner)
        return {k: self.fields[k].coerce(owner, k, v) for k, v in values.items()}

    def resolve(self, values: Mapping[str, Any] | None = None, *, profile: str | None = None,
                owner: str | None = None) -> Settings:
        """Defaults, then the profile's overrides, then ``values``; every given value checked."""
        owner = self.owner if owner is None else owner
        values = dict(values or {})
        self.check_keys(values, owner=owner)
        given = {**self.profile(profile), **values}
        out = {}
        for key, f in self.fields.items():
            out[key] = f.coerce(owner, key, given[key]) if key in given else f.default
        return Settings(out, owner)

    def __repr__(self) -> str:
        return f"SettingsSpec({self.owner!r}, {', '.join(self.fields)})"


class Configurable:
    """Base of components built from settings only (``cls(**settings)``).

    Subclasses declare ``SETTINGS`` (a :class:`SettingsSpec`) and may
    override :meth:`validate` for checks across settings.  ``self.settings``
    is the frozen :class:`Settings`; settings read as attributes and cannot
    be assigned.  ``describe()`` gives the owner label used in messages.
    """

    SETTINGS: ClassVar[SettingsSpec] = SettingsSpec()
    name: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        settings = type(self).SETTINGS.resolve(values, owner=self.describe())
        object.__setattr__(self, "settings", settings)
        self.validate()

    @classmethod
    def describe(cls) -> str:
        return str(getattr(cls, "name", "") or cls.__name__)

    @classmethod
    def with_profile(cls, profile: str | None, **values: Any):
        """Build with ``profile``'s overrides under ``values``."""
        return cls(**{**cls.SETTINGS.profile(profile), **values})

    def validate(self) -> None:
        """Checks across settings (raise ConfigError); the fields already checked themselves."""

    def __getattr__(self, key: str) -> Any:
        settings = self.__dict__.get("settings")
        if settings is not None and key in settings:
            return settings[key]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "settings" or key in type(self).SETTINGS:
            raise FrozenSettingsError(f"settings of {self.describe()} are frozen (cannot set {key!r}; "
                                      f"build a new one with the value as a setting)")
        object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        settings = self.__dict__.get("settings", {})
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


# ---------------------------------------------------------------- routing
@dataclass(frozen=True)
class Group:
    """A reserved settings group of a router (not a selectable component).

    name: the group's name and ``NAME.`` prefix (``stage``, ``zoo``).
    keys: the keys it declares (None: any key; the group's owner validates them).
    bare: a bare ``KEY`` it declares goes to this group only (it owns the key).
    prefixed: ``NAME.KEY`` reaches it.
    """

    name: str
    keys: tuple[str, ...] | None = None
    bare: bool = True
    prefixed: bool = True

    @staticmethod
    def of(name: str, spec: SettingsSpec | None, *, bare: bool = True, prefixed: bool = True) -> "Group":
        return Group(name, None if spec is None else tuple(spec.keys()), bare=bare, prefixed=prefixed)


def route(args: Mapping[str, Any], components: Mapping[str, SettingsSpec | Iterable[str]], *,
          groups: Iterable[Group] = (), canonical: Callable[[str], str] | None = None,
          flag: str = "--args", kind: str = "component") -> dict[str, dict[str, Any]]:
    """Split ``KEY=V`` / ``NAME.KEY=V`` arguments among named components and groups.

    components: selected component name -> its spec (or key names).  A bare
    ``KEY`` goes to the group that owns it, else to every component that
    declares it (none: ConfigError with the closest key).  ``NAME.KEY``
    goes to component or group ``NAME`` (``canonical`` maps aliases; a
    component not selected is a ConfigError) and must be one of its keys.
    Returns ``{name: {key: value}}`` for every component and group.
    """
    groups = list(groups)
    keys = {n: set(s.keys() if isinstance(s, SettingsSpec) else s) for n, s in components.items()}
    out: dict[str, dict[str, Any]] = {n: {} for n in components}
    out.update({g.name: {} for g in groups})
    by_name = {g.name: g for g in groups}
    label = f"{kind}s" if not kind.endswith("s") else kind
    selected = ", ".join(components) or "none"

    def known_to_group(g: Group, key: str) -> bool:
        return g.keys is None or key in g.keys

    for key, value in args.items():
        if "." in key:
            name, sub = key.split(".", 1)
            group = by_name.get(name)
            if group is not None and group.prefixed:
                if not known_to_group(group, sub):
                    raise unknown_key_error(sub, group.keys or (), what=f"{flag} group {name!r}")
                out[name][sub] = value
                continue
            target = canonical(name) if canonical is not None else name
            if target not in out or target in by_name:
                raise ConfigError(f"{flag} {key}: {target} is not among the selected {label} ({selected})")
            if sub not in keys[target]:
                raise unknown_key_error(sub, keys[target], what=f"{kind} {target}")
            out[target][sub] = value
            continue
        owner = next((g for g in groups if g.bare and g.keys is not None and key in g.keys), None)
        if owner is not None:
            out[owner.name][key] = value
            continue
        takers = [n for n in components if key in keys[n]]
        if not takers:
            valid = set().union(*keys.values(), *(g.keys or () for g in groups if g.bare))
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            prefixed = [f"{g.name}.{key}" for g in groups if g.prefixed and not g.bare and g.keys and key in g.keys]
            close = prefixed[:1] or close
            hint = f"; did you mean {close[0]!r}?" if close else ""
            prefixes = "".join(f", {g.name}.KEY" for g in groups if g.prefixed and not g.bare)
            raise ConfigError(f"{flag} {key}: no selected {kind} has a setting {key!r}{hint} "
                              f"(selected: {selected}; keys: {', '.join(sorted(valid)) or 'none'}{prefixes})")
        for n in takers:
            out[n][key] = value
    return out
