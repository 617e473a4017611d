"""A small store of the latest values by key, safe to share between threads (the app's sessions)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class LatestKept(Generic[Value]):
    """The last `size` values put, by key, for several threads at once (the least recently used leaves first)."""

    def __init__(self, size: int):
        self.size, self._values, self._lock = size, OrderedDict[Hashable, Value](), threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            if key not in self._values:
                return None
            self._values.move_to_end(key)
            return self._values[key]

    def put(self, key: Hashable, value: Value) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
