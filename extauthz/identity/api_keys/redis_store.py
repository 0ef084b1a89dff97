"""API keys in Redis, shared by every sidegate instance: one hash per key digest.

Layout: ``{prefix}{digest}`` → hash with ``consumer``, ``tier``, ``roles``/``scopes``/``services``
(JSON lists), ``expires_at`` (ISO 8601, optional), ``disabled`` ("0"/"1"), ``description``.
Lookups are one HGETALL by digest. A small local cache (positive ``cache_ttl``, negative
``negative_cache_ttl``) keeps Redis off the hot path for repeat callers; a revocation or a new
key is therefore seen by every instance within those TTLs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import ValidationError
from redis.exceptions import RedisError

from sidegate.common import deadline
from sidegate.common.cache import Clock, TTLCache
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.store import KeyStoreUnavailable
from sidegate.extauthz.identity.cache import SingleFlight

log = structlog.get_logger("sidegate.identity.api_keys")

DEFAULT_PREFIX = "sidegate:apikey:"
_LIST_FIELDS = ("roles", "scopes", "services")
_MISSING = object()
# a waiter's own bound sits this much past the socket timeout, so Redis' own error comes first
WAIT_GRACE_S = 0.1


def record_to_hash(record: ApiKeyRecord) -> dict[str, str]:
    fields: dict[str, str] = {
        "consumer": record.consumer,
        "tier": record.tier,
        "disabled": "1" if record.disabled else "0",
    }
    for name in _LIST_FIELDS:
        fields[name] = json.dumps(list(getattr(record, name)))
    if record.expires_at is not None:
        fields["expires_at"] = record.expires_at.isoformat()
    if record.description:
        fields["description"] = record.description
    return fields


def record_from_hash(digest: str, fields: dict[str, str]) -> ApiKeyRecord:
    data: dict[str, Any] = {"digest": digest, **fields}
    for name in _LIST_FIELDS:
        if name in data:
            data[name] = json.loads(data[name])
    data["disabled"] = fields.get("disabled", "0") in ("1", "true", "True")
    return ApiKeyRecord.model_validate(data)


class RedisKeyStore:
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        cache_ttl: float = 5.0,
        negative_cache_ttl: float = 1.0,
        cache_size: int = 10_000,
        timeout: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.cache_ttl = cache_ttl
        self.negative_cache_ttl = negative_cache_ttl
        self.timeout = timeout
        cache_kwargs = {"clock": clock} if clock is not None else {}
        self._cache: TTLCache[str, object] = TTLCache(cache_size, **cache_kwargs)
        self._flight: SingleFlight[str, ApiKeyRecord | None] = SingleFlight()
        self._client: aioredis.Redis | None = None

    def _key(self, digest: str) -> str:
        return f"{self.prefix}{digest}"

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
            )
        return self._client

    async def start(self) -> None:
        # Connect lazily but say early when Redis is unreachable; keys may be served later.
        try:
            await self.client.ping()
        except RedisError as exc:
            log.warning("api key redis unreachable at start", error=type(exc).__name__)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def lookup(self, digest: str) -> ApiKeyRecord | None:
        cached = self._cache.get(digest)
        if cached is not None:
            return None if cached is _MISSING else cached  # type: ignore[return-value]
        # Envoy's ext_authz timeout (200 ms by default) may be shorter than the socket timeout:
        # wait no longer than the Check may; the shared lookup goes on for the other callers
        try:
            return await asyncio.wait_for(
                self._flight.run(digest, lambda: self._fetch(digest)),
                deadline.bound(self.timeout + WAIT_GRACE_S),
            )
        except (TimeoutError, deadline.DeadlineExceeded):
            raise KeyStoreUnavailable("redis key store: no answer within the call's time") from None

    async def _fetch(self, digest: str) -> ApiKeyRecord | None:
        try:
            fields = await self.client.hgetall(self._key(digest))
        except (RedisError, OSError) as exc:
            raise KeyStoreUnavailable(f"redis key store: {type(exc).__name__}") from None
        if not fields:
            self._cache.set(digest, _MISSING, self.negative_cache_ttl)
            return None
        try:
            record = record_from_hash(digest, fields)
        except (ValidationError, ValueError) as exc:
            # A malformed entry must not open a door: treat it as absent, and say which one.
            log.warning("api key redis entry invalid", key_id=digest[:12], error=type(exc).__name__)
            return None
        self._cache.set(digest, record, self.cache_ttl)
        return record

    async def add(self, record: ApiKeyRecord) -> None:
        key = self._key(record.digest)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                if await pipe.exists(key):
                    raise ValueError("a key with this digest already exists")
                pipe.multi()
                pipe.hset(key, mapping=record_to_hash(record))
                if record.expires_at is not None:
                    # Redis drops the entry itself once it can no longer be used.
                    pipe.expireat(key, int(record.expires_at.timestamp()) + 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise KeyStoreUnavailable(f"redis key store: {type(exc).__name__}") from None
        self._cache.pop(record.digest)

    async def revoke(self, digest: str) -> bool:
        try:
            removed = await self.client.delete(self._key(digest))
        except (RedisError, OSError) as exc:
            raise KeyStoreUnavailable(f"redis key store: {type(exc).__name__}") from None
        self._cache.pop(digest)
        return bool(removed)
