"""A bounded cache of things a process makes again and again (a figure's font subset, a report's
palette PNG): at most `size` values, the least recently used dropped first."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class RecentCache(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> T:
        """The value kept for key, else make() kept (dropping the oldest beyond `size`)."""
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.size:
            self.popitem(last=False)
        return value
