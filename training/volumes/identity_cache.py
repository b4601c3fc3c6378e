"""A small LRU cache keyed by object identity, for results derived from volumes that are not hashable."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable


class IdentityCache:
    """A small LRU cache keyed by object identity that holds the object itself.

    Holding it keeps ``id(obj)`` from being reused by a later object while the entry lives, which a plain
    ``{id(obj): value}`` does not: a new query could silently get an old query's result.
    """

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[int, ...], tuple[tuple[Any, ...], Any]] = OrderedDict()

    def get(self, objs: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        key = tuple(id(o) for o in objs)
        hit = self._items.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], objs)):
            self._items.move_to_end(key)
            return hit[1]
        value = make()
        self._items[key] = (objs, value)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
