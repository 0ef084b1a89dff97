"""Reusable caching primitives for verifiers: a bounded TTL LRU and a single-flight helper.

``TTLCache`` keeps at most ``max_entries`` values, each with its own lifetime; the least
recently used entry goes first when full, an expired one is dropped when read. The clock is
injectable (``time.monotonic`` by default) so tests control expiry without sleeping.

``SingleFlight`` coalesces concurrent calls for the same key into one awaited call: the first
caller runs the coroutine, the others await its result (or its exception).

Keys must never be credentials in clear: hash them first (``credential_key``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


def credential_key(credential: str, *, namespace: str = "") -> str:
    """SHA-256 hex of a credential (optionally namespaced), safe to use as a cache key."""
    digest = hashlib.sha256()
    if namespace:
        digest.update(namespace.encode())
        digest.update(b"\x00")
    digest.update(credential.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


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


class SingleFlight(Generic[K, V]):
    """At most one in-flight call per key; concurrent callers share its outcome.

    The call runs as its own task, so a caller that is cancelled (say, Envoy gave up on the
    Check) neither cancels the shared work nor the other callers waiting for it.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def in_flight(self, key: K) -> bool:
        return key in self._inflight

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._inflight[key] = task
            task.add_done_callback(lambda done, key=key: self._forget(key, done))
        return await asyncio.shield(task)

    async def cancel_all(self) -> None:
        """Cancel every in-flight call (on shutdown) and wait until they have ended."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            # retrieved here so an outcome nobody awaited any more is not logged as lost
            task.exception()
