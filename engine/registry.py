"""Named registries filled by the ``register_*`` hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import pluggy

from engine.errors import PluginError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object (usually a factory), filled once from one registration hook."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        """Add ``entry`` under ``name``; a name registered twice is an error."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries:
            raise PluginError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name lists the ones available."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise PluginError(f"unknown {self.kind} {name!r} (available: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)


def collect(kind: str, hook: Callable[..., object]) -> Registry[T]:
    """Call a ``register_*`` hook and return what its implementations registered."""
    registry: Registry[T] = Registry(kind)
    hook(register=registry.register)
    return registry


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """A plugin's registered name (its dotted module name for built-ins)."""
    return pm.get_name(plugin) or repr(plugin)
