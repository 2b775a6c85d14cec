"""A small per-process store of things read lately, each reused for a few seconds."""

import threading
import time


def now() -> float:
    return time.monotonic()


class Recent:
    """Values by key, each with the moment it was stored; `get` answers None once a value
    is older than the age asked for. Holds at most `size` keys (then starts over)."""

    def __init__(self, size: int):
        self.size = size
        self._items: dict = {}
        self._lock = threading.Lock()

    def get(self, key, max_age: float):
        item = self._items.get(key)
        if item is None or now() - item[0] > max_age:
            return None
        return item[1]

    def put(self, key, value) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = (now(), value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
