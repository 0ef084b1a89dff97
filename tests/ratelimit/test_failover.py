"""A real standalone Redis stopped, frozen and restarted mid-run: every failure mode, recovery."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sidegate.ratelimit import metrics
from sidegate.ratelimit.service import RateLimitService, RateLimitUnavailable
from sidegate.ratelimit.settings import RateLimitSettings
from tests.conftest import RedisServer
from tests.ratelimit.conftest import OK, OVER, request, write_rules

RULES = {"f.yaml": "domain: f\ndescriptors:\n  - key: k\n    rate_limit: "
                   "{requests_per_unit: 3, unit: hour}\n"}
REQ = request("f", [("k", "v")])


async def build(tmp_path: Path, server: RedisServer, **settings: object) -> RateLimitService:
    config = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", RULES),
        backend="redis",
        redis={"url": server.url, "timeout_seconds": 0.2, "connect_timeout_seconds": 0.2,
               "retry_interval_seconds": 0},
        reload={"watch": False},
        # Token buckets: counts that no hour boundary can reset in the middle of a test.
        default_algorithm="token_bucket",
        **settings,
    )
    service = RateLimitService.from_settings(config)
    await service.start()
    return service


async def redis_keys(server: RedisServer) -> int:
    client = aioredis.Redis.from_url(server.url)
    try:
        return len(await client.keys("*"))
    finally:
        await client.aclose()


def transitions(to: str) -> float:
    return metrics.BACKEND_TRANSITIONS.labels("redis", to)._value.get()


@pytest.mark.parametrize("mode", ["error", "allow", "local"])
async def test_redis_restart(tmp_path: Path, redis_server: RedisServer, mode: str) -> None:
    service = await build(tmp_path, redis_server, failure_mode=mode)
    try:
        assert (await service.should_rate_limit(REQ)).statuses[0].limit_remaining == 2
        downs, ups = transitions("down"), transitions("up")
        redis_server.stop()
        if mode == "error":
            with pytest.raises(RateLimitUnavailable):
                await service.should_rate_limit(REQ)
            assert not service.ready
        elif mode == "allow":
            response = await service.should_rate_limit(REQ)
            assert response.overall_code == OK
            assert not response.statuses[0].HasField("current_limit")
            assert service.ready
        else:
            # In-process buckets with the same limits take over (fresh, so 3 more pass).
            answers = [(await service.should_rate_limit(REQ)).overall_code for _ in range(4)]
            assert answers == [OK, OK, OK, OVER]
        assert transitions("down") == downs + 1
        redis_server.start()
        response = await service.should_rate_limit(REQ)
        # Back on Redis: a fresh server, so this is its first hit (and the script was reloaded).
        assert (response.overall_code, response.statuses[0].limit_remaining) == (OK, 2)
        assert await redis_keys(redis_server) == 1
        assert transitions("up") == ups + 1
        assert service.ready
    finally:
        await service.close()


async def test_frozen_redis_is_bounded_by_the_timeout(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    service = await build(tmp_path, redis_server, failure_mode="local")
    assert redis_server.proc is not None
    try:
        assert (await service.should_rate_limit(REQ)).overall_code == OK
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            response = await service.should_rate_limit(REQ)
            assert response.overall_code == OK
            assert not service.backend.up  # type: ignore[union-attr]
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        response = await service.should_rate_limit(REQ)
        assert response.overall_code == OK
        assert service.backend.up  # type: ignore[union-attr]
        # Redis' own count resumed; the timed-out take may or may not have run in Redis.
        assert response.statuses[0].limit_remaining in (0, 1)
    finally:
        await service.close()


async def test_failure_mode_per_domain(tmp_path: Path, redis_server: RedisServer) -> None:
    service = await build(tmp_path, redis_server, failure_mode="allow",
                          failure_mode_by_domain={"f": "error"})
    try:
        redis_server.stop()
        with pytest.raises(RateLimitUnavailable):
            await service.should_rate_limit(REQ)
        other = await service.should_rate_limit(request("g", [("k", "v")]))
        assert other.overall_code == OK  # no rule matched: the backend is not even asked
    finally:
        await service.close()


async def test_start_without_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.stop()
    service = await build(tmp_path, redis_server, failure_mode="error")
    try:
        assert not service.ready
        redis_server.start()
        assert (await service.should_rate_limit(REQ)).overall_code == OK
        assert service.ready
    finally:
        await service.close()
