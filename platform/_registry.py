"""A name -> object registry whose name is the public ID (timm style).

Registering has no side effect beyond recording the entry; a duplicate name is
an error, and an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Raised for an unknown or duplicate registered name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its public name and where it came from."""

    name: str
    obj: T
    origin: str


class Registry(Generic[T]):
    """Maps public names to objects of one kind (strategies, models, sources...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, obj: T, *, origin: str | None = None) -> T:
        """Record ``obj`` under ``name``; a name registered twice is an error.

        ``origin`` says where it came from (default: ``built-in`` for lifelong's own
        objects, else the file defining ``obj``). Registering the very same object
        again only updates its origin (an entry point naming a self-registering class).
        """
        if not name or not name.replace("_", "").replace(".", "").isalnum():
            raise RegistryError(f"invalid {self.kind} name {name!r}: use letters, digits, '_'")
        origin = origin or origin_of(obj)
        if name in self._entries:
            prev = self._entries[name]
            if prev.obj is obj:
                self._entries[name] = Entry(name, obj, origin)
                return obj
            raise RegistryError(
                f"duplicate {self.kind} name {name!r} from {origin}: "
                f"already registered by {prev.origin}"
            )
        self._entries[name] = Entry(name, obj, origin)
        return obj

    def decorator(self, name: str, *, origin: str | None = None) -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name``."""

        def wrap(obj: T) -> T:
            return self.register(name, obj, origin=origin)

        return wrap

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or fail listing the known names."""
        try:
            return self._entries[name].obj
        except KeyError:
            from lifelong.platform.suggest import did_you_mean

            known = ", ".join(sorted(self._entries)) or "(none)"
            hint = did_you_mean(name, self._entries)
            raise RegistryError(f"unknown {self.kind} {name!r}{hint}; known: {known}") from None

    def entry(self, name: str) -> Entry[T]:
        """Return the full entry (name, object, origin) for ``name``."""
        self.get(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Return every entry, sorted by name."""
        return [self._entries[n] for n in sorted(self._entries)]


def origin_of(obj: object) -> str:
    """``built-in`` for lifelong's own objects, else the file (or module) defining ``obj``."""
    module = getattr(obj, "__module__", "") or ""
    if module.split(".")[0] == "lifelong":
        return "built-in"
    try:
        return f"plugin {inspect.getsourcefile(obj)}"  # type: ignore[arg-type]
    except TypeError:
        return f"plugin module {module}"
