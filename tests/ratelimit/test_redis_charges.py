"""A slow or paused Redis never charges a request twice, and is given up on at its timeout
(or the gRPC call's deadline); a corrupted key fails its own request, not the backend.

All against a real redis-server. Assertions are on charges and outcomes, never on wall time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import structlog
from redis.asyncio.connection import Connection

from sidegate.common import deadline
from sidegate.ratelimit import metrics
from sidegate.ratelimit.buckets.redis_pipeline import _Pipe
from sidegate.ratelimit.failover import FailoverBackend
from sidegate.ratelimit.service import RateLimitService, RateLimitUnavailable
from sidegate.ratelimit.settings import RateLimitSettings
from tests.conftest import RedisServer
from tests.ratelimit.conftest import OK, descriptor, request, write_rules

RULES = {
    "a.yaml": """
        domain: a
        descriptors:
          - key: k
            rate_limit: {requests_per_unit: 10, unit: hour}
          - key: w
            rate_limit: {requests_per_unit: 10, unit: hour, algorithm: fixed_window}
        """,
    "b.yaml": """
        domain: b
        descriptors:
          - key: k
            rate_limit: {requests_per_unit: 10, unit: hour}
        """,
}

# Keeps Redis' only thread busy for ARGV[1] seconds: a slow Redis, as under a latency spike.
BUSY = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) + tonumber(t0[2]) / 1e6
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) + tonumber(t[2]) / 1e6 - start > tonumber(ARGV[1]) then break end
end
return 1
"""


async def _service(
    tmp_path: Path, server: RedisServer, redis_timeout: float = 0.25, **settings: object
) -> RateLimitService:
    config = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", RULES),
        backend="redis",
        redis={"url": server.url, "timeout_seconds": redis_timeout, "connect_timeout_seconds": 0.5,
               "retry_interval_seconds": 30},
        reload={"watch": False},
        **settings,
    )
    service = RateLimitService.from_settings(config)
    await service.start()
    return service


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


async def _remaining(service: RateLimitService, domain: str, entries: list[tuple[str, str]]) -> int:
    response = await service.should_rate_limit(request(domain, descriptor(entries, hits=0)))
    return response.statuses[0].limit_remaining


@pytest.fixture
def evalsha_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts EVALSHA commands written to any Redis socket (the wire, below any retry): by
    the pipelined standalone connection and by redis-py's (Cluster, Sentinel)."""
    writes: list[int] = []
    original = Connection.send_packed_command
    original_flush = _Pipe._flush

    def counting_flush(self: _Pipe) -> None:
        writes.extend(1 for command in self._out if b"EVALSHA" in command[:40].upper())
        original_flush(self)

    monkeypatch.setattr(_Pipe, "_flush", counting_flush)

    async def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        packed = command if isinstance(command, bytes | str) else b"".join(
            bytes(part) for part in command
        )
        packed_bytes = packed.encode() if isinstance(packed, str) else packed
        if b"EVALSHA" in packed_bytes.upper():
            writes.append(1)
        return await original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    return writes


async def test_paused_redis_is_asked_once_and_given_up_on(
    tmp_path: Path, redis_server: RedisServer, admin: redis.Redis, evalsha_writes: list[int]
) -> None:
    """CLIENT PAUSE WRITE: connections still open (so a retry could be sent) but scripts
    wait. The request is written once, answered by the failure mode, and charges at most once."""
    service = await _service(tmp_path, redis_server)
    try:
        assert await _remaining(service, "a", [("k", "x")]) == 10
        evalsha_writes.clear()
        admin.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
        with pytest.raises(RateLimitUnavailable):
            await service.should_rate_limit(request("a", [("k", "x")]))
        assert len(evalsha_writes) == 1
        admin.execute_command("CLIENT", "UNPAUSE")
        service.backend.up = True  # type: ignore[union-attr]  # skip the retry interval
        assert await _remaining(service, "a", [("k", "x")]) in (9, 10)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        await service.close()


async def test_slow_redis_charges_once(
    tmp_path: Path, redis_server: RedisServer, admin: redis.Redis
) -> None:
    """Redis busy past the timeout, then free again: the script that was sent runs once when
    Redis gets to it. Sending it again (redis-py's retry on TimeoutError) ran it twice."""
    service = await _service(tmp_path, redis_server, failure_mode="local")
    try:
        assert await _remaining(service, "a", [("k", "x")]) == 10
        busy = threading.Thread(
            target=lambda: redis.Redis.from_url(redis_server.url).eval(BUSY, 0, 0.4)
        )
        busy.start()
        await asyncio.sleep(0.05)
        response = await service.should_rate_limit(request("a", [("k", "x")]))
        assert response.overall_code == OK  # from Redis, or from the local failure mode
        await asyncio.to_thread(busy.join)
        service.backend.up = True  # type: ignore[union-attr]
        assert await _remaining(service, "a", [("k", "x")]) == 9
    finally:
        await service.close()


async def test_call_deadline_bounds_the_wait_without_marking_redis_down(
    tmp_path: Path, redis_server: RedisServer, admin: redis.Redis
) -> None:
    service = await _service(tmp_path, redis_server, redis_timeout=5.0)
    backend = service.backend
    assert isinstance(backend, FailoverBackend)
    try:
        admin.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
        for time_left in (0.2, 0.0):
            with deadline.within_call(time_left), pytest.raises(RateLimitUnavailable):
                await service.should_rate_limit(request("a", [("k", "x")]))
            # The caller ran out of time, not Redis: later calls still go to Redis.
            assert backend.up
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        await service.close()


def _bucket_keys(admin: redis.Redis) -> list[bytes]:
    return sorted(admin.scan_iter(match="*{a}*"))


@pytest.mark.parametrize("corruption", ["wrongtype", "garbage"])
@pytest.mark.parametrize("entry", ["k", "w"])
async def test_corrupted_key_fails_only_its_request(
    tmp_path: Path, redis_server: RedisServer, admin: redis.Redis, corruption: str, entry: str
) -> None:
    service = await _service(tmp_path, redis_server, failure_mode_by_domain={"b": "local"})
    backend = service.backend
    assert isinstance(backend, FailoverBackend)
    try:
        await service.should_rate_limit(request("a", [(entry, "victim")]))
        (key,) = _bucket_keys(admin)
        admin.delete(key)
        if corruption == "wrongtype":
            admin.rpush(key, "x")
        elif entry == "k":
            admin.set(key, "not-a-bucket")
        else:
            admin.hset(key, mapping={"w": "x", "c": "y"})
        errors_before = metrics.BUCKET_ERRORS.labels("a")._value.get()
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(RateLimitUnavailable):
                await service.should_rate_limit(request("a", [(entry, "victim")]))
        assert backend.up  # not an outage
        assert metrics.BUCKET_ERRORS.labels("a")._value.get() == errors_before + 1
        (event,) = [e for e in logs if e["event"] == "ratelimit_bucket_error"]
        assert event["rules"] == [f"a.{entry}"] and event["domain"] == "a"
        assert "victim" not in str(event)
        # Other keys of the same domain and other domains answer from Redis as before.
        assert (await service.should_rate_limit(request("a", [(entry, "other")]))).overall_code \
            == OK
        assert (await service.should_rate_limit(request("b", [("k", "x")]))).overall_code == OK
        assert await _remaining(service, "b", [("k", "x")]) == 9
        # The corrupted key was not overwritten by the failed request.
        assert admin.type(key) == (b"list" if corruption == "wrongtype" else
                                   b"string" if entry == "k" else b"hash")
    finally:
        await service.close()


async def test_corrupted_key_uses_the_domains_failure_mode(
    tmp_path: Path, redis_server: RedisServer, admin: redis.Redis
) -> None:
    service = await _service(tmp_path, redis_server, failure_mode_by_domain={"a": "local"})
    try:
        await service.should_rate_limit(request("a", [("k", "victim")]))
        (key,) = _bucket_keys(admin)
        admin.delete(key)
        admin.rpush(key, "x")
        # Answered by the local buckets, with the rule's limit.
        response = await service.should_rate_limit(request("a", [("k", "victim")]))
        assert response.overall_code == OK
        assert response.statuses[0].current_limit.requests_per_unit == 10
        assert service.backend.up  # type: ignore[union-attr]
    finally:
        await service.close()


async def test_only_errors_raised_while_connecting_count_as_never_sent(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from sidegate.ratelimit.buckets.redis import _never_sent
    from tests.conftest import free_port

    no_retry = Retry(NoBackoff(), 0)
    refused = redis.asyncio.Redis(port=free_port(), retry=no_retry)
    with pytest.raises(redis.exceptions.ConnectionError) as connect_error:
        await refused.eval("return 1", 0)
    await refused.aclose()
    assert _never_sent(connect_error.value)

    slow = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=0.2, retry=no_retry)
    await slow.ping()
    admin.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    try:
        with pytest.raises(redis.exceptions.TimeoutError) as read_timeout:
            await slow.eval("return redis.call('INCR', 'x')", 0)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        await slow.aclose()
    assert not _never_sent(read_timeout.value)
