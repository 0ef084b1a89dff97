"""The Redis key store: shared by several verifier instances, each with its own connection."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from sidegate.cli import main as sidegate_main
from sidegate.extauthz.identity.api_keys.digest import KeyDigester, new_key
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.redis_store import RedisKeyStore
from sidegate.extauthz.identity.api_keys.verifier import ApiKeyVerifier
from sidegate.extauthz.identity.base import AuthnFailure, failure_code
from tests.conftest import RedisServer
from tests.identity.test_api_keys import make_view


class MonoClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def store(url: str, prefix: str, clock: MonoClock | None = None, **kw: float) -> RedisKeyStore:
    return RedisKeyStore(url, prefix=prefix, clock=clock, **kw)  # type: ignore[arg-type]


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"test:{request.node.name}:"


async def test_key_added_through_one_instance_is_accepted_by_another(
    redis_url: str, prefix: str
) -> None:
    clock = MonoClock()
    a = ApiKeyVerifier(store(redis_url, prefix, clock))
    b = ApiKeyVerifier(store(redis_url, prefix, clock))
    await a.start()
    await b.start()
    try:
        key = new_key()
        digest = KeyDigester().digest(key)
        with pytest.raises(AuthnFailure):
            await b.verify(key, make_view())  # unknown for now (and negatively cached)
        await a.store.add(
            ApiKeyRecord(digest=digest, consumer="acme", tier="premium", roles=("r",))
        )
        clock.now += 1.01  # past B's negative cache TTL (1 s)
        identity = await b.verify(key, make_view())
        assert (identity.consumer, identity.tier, identity.roles) == ("acme", "premium", ("r",))
        # revoked through A: B stops accepting once its positive cache entry (5 s) is gone
        assert await a.store.revoke(digest)
        assert (await b.verify(key, make_view())).consumer == "acme"
        clock.now += 5.01
        with pytest.raises(AuthnFailure) as caught:
            await b.verify(key, make_view())
        assert failure_code(caught.value) == "unknown"
    finally:
        await a.close()
        await b.close()


async def test_only_the_digest_is_stored(redis_url: str, prefix: str) -> None:
    key = new_key()
    s = store(redis_url, prefix)
    digest = KeyDigester().digest(key)
    expires = datetime.now(UTC) + timedelta(days=1)
    await s.add(
        ApiKeyRecord(
            digest=digest, consumer="acme", tier="free", services=("orders",), expires_at=expires
        )
    )
    with pytest.raises(ValueError, match="already exists"):
        await s.add(ApiKeyRecord(digest=digest, consumer="other"))
    raw = aioredis.from_url(redis_url, decode_responses=True)
    try:
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
        assert keys == [f"{prefix}{digest}"]
        fields = await raw.hgetall(keys[0])
        assert key not in json.dumps(fields)
        assert fields["tier"] == "free" and json.loads(fields["services"]) == ["orders"]
        # Redis expires the entry itself shortly after the key's own expiry
        ttl = await raw.ttl(keys[0])
        assert 86_000 < ttl <= 86_401
    finally:
        await raw.aclose()
        await s.close()


async def test_disabled_and_malformed_entries_are_rejected(redis_url: str, prefix: str) -> None:
    disabled, broken = new_key(), new_key()
    d = KeyDigester()
    raw = aioredis.from_url(redis_url, decode_responses=True)
    await raw.hset(f"{prefix}{d.digest(disabled)}", mapping={"consumer": "x", "disabled": "1"})
    await raw.hset(f"{prefix}{d.digest(broken)}", mapping={"tier": "free"})  # no consumer
    await raw.aclose()
    v = ApiKeyVerifier(store(redis_url, prefix))
    try:
        with pytest.raises(AuthnFailure) as caught:
            await v.verify(disabled, make_view())
        assert failure_code(caught.value) == "disabled"
        with pytest.raises(AuthnFailure) as caught:
            await v.verify(broken, make_view())
        assert failure_code(caught.value) == "unknown"
    finally:
        await v.close()


async def test_cli_adds_to_redis_and_a_verifier_accepts(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["keys", "add", "--consumer", "cli", "--tier", "free", "--store", redis_url]
    # the CLI runs its own event loop, so it runs in a thread here
    assert await asyncio.to_thread(sidegate_main, [*argv, "--redis-prefix", prefix]) == 0
    key = capsys.readouterr().out.strip()
    v = ApiKeyVerifier(store(redis_url, prefix))
    try:
        assert (await v.verify(key, make_view())).consumer == "cli"
        revoke = ["keys", "revoke", "--key", key, "--store", redis_url, "--redis-prefix", prefix]
        assert await asyncio.to_thread(sidegate_main, revoke) == 0
    finally:
        await v.close()
    fresh = ApiKeyVerifier(store(redis_url, prefix))
    try:
        with pytest.raises(AuthnFailure):
            await fresh.verify(key, make_view())
    finally:
        await fresh.close()


async def test_redis_down_is_unavailable_and_recovers(redis_server: RedisServer) -> None:
    key = new_key()
    s = store(redis_server.url, "t:", cache_ttl=0, negative_cache_ttl=0, timeout=0.3)
    await s.add(ApiKeyRecord(digest=KeyDigester().digest(key), consumer="acme"))
    v = ApiKeyVerifier(s)
    try:
        assert (await v.verify(key, make_view())).consumer == "acme"
        redis_server.stop()
        with pytest.raises(AuthnFailure) as caught:
            await v.verify(key, make_view())
        assert caught.value.kind == "unavailable"
        assert failure_code(caught.value) == "store_unavailable"
        redis_server.start()  # same port, empty data (no persistence)
        await s.add(ApiKeyRecord(digest=KeyDigester().digest(key), consumer="acme"))
        assert (await v.verify(key, make_view())).consumer == "acme"
    finally:
        await v.close()
