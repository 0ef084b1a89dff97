"""Verified-token cache: repeated requests with the same token skip the signature check.

Keyed by SHA-256 of the token (never the token itself); an entry lives no longer than the
configured maximum and never past the token's ``exp``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sidegate.common.cache import TTLCache, jittered_ttl
from sidegate.common.metric_children import LabelledChildren
from sidegate.extauthz.identity import metrics
from sidegate.extauthz.identity.base import Identity
from sidegate.extauthz.identity.cache import credential_key

# One lookup per token-verified request: children looked up once per (configured cache name,
# result), see common/metric_children.py.
_LOOKUPS = LabelledChildren(metrics.CACHE_LOOKUPS)


class VerifiedTokenCache:
    def __init__(
        self,
        name: str,
        *,
        max_entries: int,
        max_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.max_ttl_seconds = max_ttl_seconds
        self._clock = clock
        # the wall clock, because ``exp`` is wall-clock time
        self._entries: TTLCache[str, Identity] = TTLCache(max_entries, clock=clock)

    def key(self, token: str) -> str:
        return credential_key(token, namespace=self.name)

    def get(self, key: str) -> Identity | None:
        identity = self._entries.get(key)
        _LOOKUPS(self.name, "miss" if identity is None else "hit").inc()
        return identity

    def put(self, key: str, identity: Identity, expires_at: float) -> None:
        # Jittered (never longer): tokens first seen in one burst do not all expire together.
        ttl = min(jittered_ttl(self.max_ttl_seconds), expires_at - self._clock())
        self._entries.set(key, identity, ttl)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
