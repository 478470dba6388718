"""One generic name -> object registry for every swap point (samplers, context builders, losses, rewards).

Registering a taken name raises; looking up an unknown name raises with the list of valid names, so a typo in
YAML fails at load time with something to copy from. An entry may be *lazy*: the string ``"package.module:attr"``
is imported on the first ``get`` only, so knowing the names (the config layer's check) imports no runtime code
(``maskgrpo.catalog`` lists the built-in entries that way).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components of one kind, e.g. ``SAMPLERS = Registry("sampler", {"emerge": "mod:Class"})``."""

    def __init__(self, kind: str, lazy: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        for name, target in (lazy or {}).items():
            self.register_lazy(name, target)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@SAMPLERS.register("emerge")`` above a class or function."""

        def add(obj: T) -> T:
            self._claim(name)
            self._items[name] = obj
            return obj

        return add

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attribute"`` under ``name``; imported on the first ``get(name)``."""
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} entry {name!r}: {target!r} is not 'package.module:attribute'")
        self._claim(name)
        self._lazy[name] = target

    def _claim(self, name: str) -> None:
        if name in self:
            owner = self._items.get(name, self._lazy.get(name))
            raise KeyError(f"{self.kind} {name!r} is already registered (by {owner!r})")

    def get(self, name: str) -> T:
        if name not in self:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {self.names()}.{hint}")
        if name in self._lazy:
            module, _, attr = self._lazy[name].partition(":")
            self._items[name] = getattr(importlib.import_module(module), attr)
            del self._lazy[name]
        return self._items[name]

    def names(self) -> list[str]:
        return sorted([*self._items, *self._lazy])

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items) + len(self._lazy)
