"""A small generic registry: name -> factory, with aliases and lazy targets.

A target is either a callable or a ``"package.module:attr"`` string that is
imported only when the entry is first used, so ``import suite`` stays cheap
(no TVM, ONNX Runtime or Ray import until a run needs them).  Lookups of
unknown names raise :class:`~suite.core.errors.UnknownNameError` with close matches
and the full list of choices.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from suite.core.errors import SuiteError, UnknownNameError


@dataclass
class Entry:
    """One registered factory.

    name: canonical name (lower-case, used in records).
    target: callable, or ``"module:attr"`` resolved on first use.
    description: one line shown by ``suite ls``.
    aliases: other accepted spellings.
    tags: free-form metadata (e.g. ``{"needs_data_root": True}``).
    """

    name: str
    target: Callable[..., Any] | str
    description: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> Callable[..., Any]:
        """Import (once) and return the factory."""
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            if not attr:
                raise SuiteError(f"registry target {self.target!r} must look like 'module:attr'")
            module = importlib.import_module(module_name)
            obj: Any = module
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.target = obj
        return self.target  # type: ignore[return-value]


class Registry:
    """Named factories of one kind (``models``, ``sources``, ...)."""

    def __init__(self, kind: str, singular: str | None = None) -> None:
        self.kind = kind
        self.singular = singular or kind.rstrip("s")
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        # Called before every lookup: imports the modules that register this
        # kind's entries (plugins), so listing or resolving sees all of them.
        self.loader: Callable[[], None] | None = None

    def _load(self) -> None:
        if self.loader is not None:
            self.loader()

    # -- registration -------------------------------------------------
    def register(
        self,
        name: str,
        target: Callable[..., Any] | str | None = None,
        *,
        description: str = "",
        aliases: tuple[str, ...] | list[str] = (),
        **tags: Any,
    ) -> Any:
        """Register ``target`` under ``name``; without a target, act as a decorator."""
        if target is None:
            def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
                doc = (obj.__doc__ or "").strip().splitlines()
                self.register(name, obj, description=description or (doc[0] if doc else ""),
                              aliases=aliases, **tags)
                return obj
            return decorator
        key = self._normalise(name)
        if key in self._entries or key in self._aliases:
            raise SuiteError(f"{self.singular} {name!r} is already registered")
        alias_keys = tuple(dict.fromkeys(a for a in map(self._normalise, aliases) if a != key))
        entry = Entry(key, target, description, alias_keys, dict(tags))
        self._entries[key] = entry
        for alias in entry.aliases:
            if alias in self._entries or alias in self._aliases:
                raise SuiteError(f"alias {alias!r} of {self.singular} {name!r} is already taken")
            self._aliases[alias] = key
        return target

    # -- lookup -------------------------------------------------------
    @staticmethod
    def _normalise(name: str) -> str:
        return name.strip().lower().replace("_", "-")

    def canonical(self, name: str) -> str:
        """Canonical name for ``name`` or an alias; raises UnknownNameError."""
        self._load()
        key = self._normalise(str(name))
        if key in self._entries:
            return key
        if key in self._aliases:
            return self._aliases[key]
        choices = sorted(self._entries)
        close = difflib.get_close_matches(key, choices + sorted(self._aliases), n=3, cutoff=0.6)
        close = list(dict.fromkeys(self._aliases.get(c, c) for c in close))
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.singular} {name!r}{hint} (choices: {', '.join(choices)})"
        )

    def entry(self, name: str) -> Entry:
        return self._entries[self.canonical(name)]

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under ``name`` (imported on first use)."""
        return self.entry(name).resolve()

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory of ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        try:
            self.canonical(str(name))
        except UnknownNameError:
            return False
        return True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        for key in self.names():
            yield self._entries[key]

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
