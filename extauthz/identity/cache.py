"""Caching helpers for verifiers: single-flight calls and credential-safe cache keys.

The bounded TTL LRU they store results in is ``sidegate.common.cache.TTLCache``.

``SingleFlight`` coalesces concurrent calls for the same key into one awaited call: the first
caller runs the coroutine, the others await its result (or its exception).

Keys must never be credentials in clear: hash them first (``credential_key``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def credential_key(credential: str, *, namespace: str = "") -> str:
    """SHA-256 hex of a credential (optionally namespaced), safe to use as a cache key."""
    digest = hashlib.sha256()
    if namespace:
        digest.update(namespace.encode())
        digest.update(b"\x00")
    # surrogatepass: a lone surrogate (not valid UTF-8) must hash, not raise
    digest.update(credential.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


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
