"""A cache of what was read from the database, forgotten whenever a generation counter there
moves: API keys and token revocations (moved by each revocation), members' data keys (moved by
each erasure). A process looks at the counter at most every ``look_seconds`` (one query), so
nearly every lookup is answered from memory and a change is seen by every process within that
time. A value read while the counter moved under it is not kept: it may be the changed one."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FollowedCache(Generic[K, V]):
    def __init__(
        self,
        generation: Callable[[], int],
        size: int,
        look_seconds: float = 0.5,
        max_age_seconds: float | None = None,
    ) -> None:
        self._generation = generation
        self._size = size
        self._look_seconds = look_seconds
        self._max_age = max_age_seconds  # forget everything this often anyway, if set
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._look_lock = threading.Lock()
        self._seen: int | None = None
        self._next_look = 0.0
        self._cleared = time.monotonic()
        self._epoch = 0  # moves whenever everything is forgotten

    def get(self, key: K, load: Callable[[K], V], keep: Callable[[V], bool] | None = None) -> V:
        """The cached value, or ``load(key)`` (kept when ``keep`` allows it)."""
        epoch = self._follow()
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = load(key)
        if keep is None or keep(value):
            with self._lock:
                if epoch == self._epoch:  # not read across a change this process has seen
                    self._values[key] = value
                    while len(self._values) > self._size:
                        self._values.popitem(last=False)
        return value

    def get_many(self, keys: list[K], load_many: Callable[[list[K]], dict[K, V]]) -> None:
        """Bring ``keys`` into the cache, loading those it lacks with one call."""
        epoch = self._follow()
        with self._lock:
            missing = [key for key in keys if key not in self._values]
        if not missing:
            return
        loaded = load_many(missing)
        with self._lock:
            if epoch == self._epoch:
                self._values.update(loaded)
                while len(self._values) > self._size:
                    self._values.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._values.pop(key, None)

    def forget_all(self) -> None:
        """What this process changed itself: forgotten now, not at the next look."""
        with self._lock:
            self._values.clear()
            self._epoch += 1
            self._cleared = time.monotonic()

    def _follow(self) -> int:
        if time.monotonic() >= self._next_look:
            with self._look_lock:
                if time.monotonic() >= self._next_look:
                    seen = self._generation()
                    old = self._max_age is not None and (
                        time.monotonic() - self._cleared >= self._max_age
                    )
                    if seen != self._seen or old:
                        self.forget_all()
                        self._seen = seen
                    self._next_look = time.monotonic() + self._look_seconds
        return self._epoch
