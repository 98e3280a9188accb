"""Name -> factory registries for tasks and encoders, with entry-point discovery.

A plug-in joins in one place: either a ``@TASKS.register("name")`` decorator in its own module, or an
entry point in its distribution's metadata (groups ``lesionbench.tasks`` and
``lesionbench.encoders``) whose object is the factory. There is no second mapping to edit.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from lesionbench.benchmark.errors import ConfigurationError, UnknownNameError, did_you_mean

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest task or encoder name: names become folder names, MLflow params and leaderboard cells.
MAX_NAME_LENGTH = 64


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a task or encoder (a phrase that shows the name safely), or None when it can.

    A name is a non-empty string of at most :data:`MAX_NAME_LENGTH` characters without leading or trailing
    spaces and without control, format or unassigned characters (Unicode categories C*, line and paragraph
    separators): bidirectional controls such as U+202E would make a name display as another one on the
    leaderboard, and zero-width characters would make two names look identical.
    """
    if not isinstance(name, str) or not name:
        return f"the name {name!r} is not a non-empty string"
    shown = repr(name[:40]) + ("..." if len(name) > 40 else "")  # repr escapes the invisible characters
    if len(name) > MAX_NAME_LENGTH:
        return f"the name {shown} is {len(name)} characters long, at most {MAX_NAME_LENGTH} are allowed"
    bad = sorted(
        {f"U+{ord(ch):04X} ({unicodedata.name(ch, unicodedata.category(ch))})" for ch in name if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")}
    )
    if bad:
        return f"the name {shown} contains control, bidirectional or invisible character(s) {', '.join(bad)}"
    if name != name.strip():
        return f"the name {shown} has leading or trailing whitespace"
    return None


class Registry(Generic[T]):
    """A case-sensitive registry of factories, filled by decorators and by entry points.

    ``get(name)`` returns the factory (a class or a function); calling it builds the object.
    """

    def __init__(self, kind: str, entry_point_group: str):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Callable[..., T]] = {}
        self._origins: dict[str, str] = {}
        self._entry_points_loaded = False

    def register(self, name: str, *, replace: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``factory`` under ``name``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, replace=replace)
            return factory

        return deco

    def add(self, name: str, factory: Callable[..., T], *, replace: bool = False, origin: str = "") -> None:
        if (why := name_problem(name)) is not None:
            raise ConfigurationError(f"Invalid {self.kind} name{f' ({origin})' if origin else ''}: {why}. Use letters, digits and -_. (e.g. 'my-ct-model').")
        if name in self._factories and not replace and self._factories[name] is not factory:
            raise ConfigurationError(
                f"{self.kind.capitalize()} {name!r} is registered twice "
                f"({self._origins.get(name) or 'built-in'} and {origin or _describe(factory)}). "
                "Rename one of them, or pass replace=True to override on purpose."
            )
        self._factories[name] = factory
        self._origins[name] = origin or _describe(factory)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._factories:
                continue
            if (why := name_problem(ep.name)) is not None:  # checked before the plug-in's code is imported
                logger.warning("Skipping %s plug-in from entry point %r: %s.", self.kind, ep.value, why)
                continue
            try:
                factory = ep.load()
            except Exception as exc:  # a broken plug-in must not break the harness
                logger.warning(
                    "Could not load %s plug-in %r from entry point %r (%s: %s); it is skipped.",
                    self.kind, ep.name, ep.value, type(exc).__name__, exc,
                )
                continue
            self.add(ep.name, factory, origin=f"entry point {ep.value}")

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._factories)

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origins[name]

    def get(self, name: str) -> Callable[..., T]:
        self._load_entry_points()
        if (why := name_problem(name)) is not None:  # before any "did you mean" over a hostile string
            raise UnknownNameError(f"Unknown {self.kind}: {why}. Available: {', '.join(self.names()) or '(none)'}.")
        try:
            return self._factories[name]
        except KeyError:
            available = self.names()
            hint = did_you_mean(name, available, cutoff=0.5)
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(available) or '(none)'}. "
                f"Third-party {self.kind}s register through the entry-point group {self.entry_point_group!r}."
            ) from None

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _describe(factory: Callable[..., object]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"
