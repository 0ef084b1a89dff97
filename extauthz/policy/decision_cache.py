"""A bounded, short-lived memo of embedded decisions, keyed by what the engine was given.

Setting an input costs regopy about half a microsecond per byte, so a repeated (pruned) input
is cheaper to remember than to evaluate. The key is (bundle generation, entrypoint, digest of
the exact input JSON the engine would set): the input itself never sits in the cache (it can
hold headers and claims), and every compiled bundle has its own generation, so a decision of
an older policy or data set is never served. Values are the engine's raw results (a value or
UNDEFINED); errors are never stored. Whether decisions may be cached at all is decided per
bundle by the engine (see determinism.py).

Stored values are shared between the callers that hit them: they must not be mutated
(parse_decision only reads them).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from sidegate.common.cache import Clock, TTLCache, jittered_ttl

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_TTL_S = 5.0

CacheKey = tuple[int, str, bytes]


def cache_key(generation: int, entrypoint: str, input_json: str) -> CacheKey:
    """(generation, entrypoint, 16-byte BLAKE2b of the input JSON)."""
    digest = hashlib.blake2b(input_json.encode(), digest_size=16).digest()
    return generation, entrypoint, digest


class DecisionCache:
    """Thread-safe: a thread-pool server may decide on several threads at once."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.ttl_s = ttl_s
        self._entries: TTLCache[CacheKey, tuple[Any]] = TTLCache(max_entries, clock=clock)
        self._lock = threading.Lock()

    @property
    def max_entries(self) -> int:
        return self._entries.max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> tuple[Any] | None:
        """``(value,)`` when a live decision is stored (the value may be None: JSON null)."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: CacheKey, value: Any) -> None:
        # Jittered: decisions cached in one burst must not all expire in the same instant.
        ttl = jittered_ttl(self.ttl_s)
        with self._lock:
            self._entries.set(key, (value,), ttl)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def keys(self) -> list[CacheKey]:
        """The stored keys, least recently used first (tests and diagnostics)."""
        with self._lock:
            return self._entries.keys()
