"""Generic caching primitives shared by areas: a bounded LRU whose entries expire.

``TTLCache`` keeps at most ``max_entries`` values, each with its own lifetime; the least
recently used entry goes first when full, an expired one is dropped when read. The clock is
injectable (``time.monotonic`` by default) so tests control expiry without sleeping. It is not
locked: callers shared between threads hold their own lock around it.

Keys must never be secrets in clear: hash them first.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


class TTLCache(Generic[K, V]):
    """A bounded LRU whose entries expire ``ttl`` seconds after they were stored."""

    def __init__(self, max_entries: int, *, clock: Clock = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The live value for ``key`` (refreshing its LRU position), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def set(self, key: K, value: V, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; a non-positive ttl stores nothing."""
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def keys(self) -> list[K]:
        """The stored keys (expired ones included), least recently used first."""
        return list(self._entries)


# Entries stored together (a burst of misses after a restart or a policy reload) would also
# expire together and miss together: a stampede every TTL. Shortening each TTL by a random
# share spreads their expiry out; a jittered entry never outlives the configured TTL.
TTL_JITTER = 0.2


def jittered_ttl(ttl: float, jitter: float = TTL_JITTER) -> float:
    """``ttl`` shortened by a uniformly random share in [0, jitter)."""
    return ttl * (1.0 - jitter * random.random())
