"""A small name -> factory registry, one instance per component kind."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pamc.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories and rejects unknown names.

    Use as a decorator::

        BACKBONES = Registry("backbone")

        @BACKBONES.register("resnet50")
        def resnet50(...): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = factory
            return factory

        return decorator

    @contextlib.contextmanager
    def registered(self, name: str, factory: Callable[..., T]) -> Iterator[Callable[..., T]]:
        """Register ``factory`` as ``name`` for the duration of a ``with`` block (tests)."""
        self.register(name)(factory)
        try:
            yield factory
        finally:
            del self._items[name]

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items))
            raise RegistryError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def create(self, name: str, /, **kwargs: object) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
