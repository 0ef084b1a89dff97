"""API keys in Redis, shared by every sidegate instance: one hash per key digest.

Layout: ``{prefix}{digest}`` → hash with ``consumer``, ``tier``, ``roles``/``scopes``/``services``
(JSON lists), ``expires_at``/``created_at`` (ISO 8601, optional), ``disabled`` ("0"/"1"),
``description``.
Lookups are one HGETALL by digest. A small local cache (positive ``cache_ttl``, negative
``negative_cache_ttl``) keeps Redis off the hot path for repeat callers; a revocation or a new
key is therefore seen by every instance within those TTLs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

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
    if record.created_at is not None:
        fields["created_at"] = record.created_at.isoformat()
    if record.description:
        fields["description"] = record.description
    return fields


def store_label(url: str) -> str:
    """``redis key store HOST:PORT/DB`` (or the socket path): never the user or password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            where = parts.path
        else:
            host = parts.hostname or "localhost"
            host = f"[{host}]" if ":" in host else host
            db = parts.path.strip("/") or "0"
            where = f"{host}:{parts.port or 6379}/{db}"
    except ValueError:
        where = "(unparsable url)"
    return f"redis key store {where}"


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
        self.label = store_label(url)
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

    def _unavailable(self, exc: BaseException) -> KeyStoreUnavailable:
        # the message names the store (host:port/db) and the error class; redis-py's own
        # text is left out: it may echo the URL it was given
        return KeyStoreUnavailable(f"{self.label}: {type(exc).__name__}")

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

    def debug_state(self) -> dict[str, object]:
        # The URL may carry a password: only where the store is, never how to log in.
        where = self.url.rsplit("@", 1)[-1]
        return {"type": "redis", "at": where, "prefix": self.prefix}

    async def start(self) -> None:
        # Connect lazily but say early when Redis is unreachable; keys may be served later.
        try:
            await self.client.ping()
        except RedisError as exc:
            log.warning(
                "api key redis unreachable at start", store=self.label, error=type(exc).__name__
            )

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
            raise self._unavailable(exc) from None
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
                    raise ValueError(f"{self.label}: a key with this digest already exists")
                pipe.multi()
                pipe.hset(key, mapping=record_to_hash(record))
                if record.expires_at is not None:
                    # Redis drops the entry itself once it can no longer be used.
                    pipe.expireat(key, int(record.expires_at.timestamp()) + 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        self._cache.pop(record.digest)

    async def revoke(self, digest: str) -> bool:
        try:
            removed = await self.client.delete(self._key(digest))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        self._cache.pop(digest)
        return bool(removed)

    # --- management (the CLI): not on the request path ----------------------------------------

    async def list_records(self) -> list[ApiKeyRecord]:
        """Every valid record under the prefix (SCAN, so Redis is never blocked by KEYS)."""
        records: list[ApiKeyRecord] = []
        try:
            keys = [key async for key in self.client.scan_iter(match=f"{self.prefix}*", count=500)]
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        for key, fields in zip(keys, answers, strict=True):
            digest = key[len(self.prefix) :]
            if not fields:
                continue  # expired between SCAN and HGETALL
            try:
                records.append(record_from_hash(digest, fields))
            except (ValidationError, ValueError):
                log.warning("api key redis entry invalid", key_id=digest[:12], store=self.label)
        return records

    async def update(self, record: ApiKeyRecord) -> None:
        """Replace an existing record (disable, enable, expire); its Redis TTL follows."""
        key = self._key(record.digest)
        fields = record_to_hash(record)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                if not await pipe.exists(key):
                    raise ValueError(f"{self.label}: no key with key_id={record.digest[:12]}")
                pipe.multi()
                pipe.delete(key)
                pipe.hset(key, mapping=fields)
                if record.expires_at is not None:
                    pipe.expireat(key, int(record.expires_at.timestamp()) + 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        self._cache.pop(record.digest)
