"""The local over-limit cache: known-over keys are answered without Redis until their deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.ratelimit import metrics
from sidegate.ratelimit.local_cache import OverLimitCache
from sidegate.ratelimit.service import RateLimitService, RateLimitUnavailable
from sidegate.ratelimit.settings import RateLimitSettings
from tests.conftest import RedisServer
from tests.ratelimit.conftest import OK, OVER, request, write_rules

RULES = {"c.yaml": "domain: c\ndescriptors:\n  - key: k\n    rate_limit: "
                   "{requests_per_unit: 2, unit: hour}\n"}


def hits(kind: str) -> float:
    return metrics.RULE_HITS.labels("c", "c.k", kind)._value.get()


async def test_over_limit_answered_without_redis(tmp_path: Path,
                                                 redis_server: RedisServer) -> None:
    config = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", RULES), backend="redis",
        default_algorithm="token_bucket",  # reset times independent of the wall clock
        redis={"url": redis_server.url, "retry_interval_seconds": 0}, reload={"watch": False},
    )
    service = RateLimitService.from_settings(config)
    await service.start()
    try:
        req = request("c", [("k", "abuser")])
        assert [(await service.should_rate_limit(req)).overall_code for _ in range(3)] == \
            [OK, OK, OVER]
        cached_before = metrics.LOCAL_CACHE_HITS._value.get()
        with_cache = hits("over_limit_with_local_cache")
        redis_server.stop()  # from now on only the cache can answer
        response = await service.should_rate_limit(req)
        assert response.overall_code == OVER
        status = response.statuses[0]
        assert status.current_limit.requests_per_unit == 2
        assert 1800 < status.duration_until_reset.seconds <= 3600
        assert metrics.LOCAL_CACHE_HITS._value.get() == cached_before + 1
        assert hits("over_limit_with_local_cache") == with_cache + 1
        with pytest.raises(RateLimitUnavailable):
            await service.should_rate_limit(request("c", [("k", "someone-else")]))
        # A reload may raise limits: the cache is dropped and Redis is asked again.
        assert service.reload()
        with pytest.raises(RateLimitUnavailable):
            await service.should_rate_limit(req)
    finally:
        await service.close()


def test_cache_expires_and_stays_bounded() -> None:
    now = [100.0]
    cache = OverLimitCache(max_entries=3, clock=lambda: now[0])
    cache.add("a", 5, 10)
    assert cache.lookup("a") == 10
    now[0] += 4.5
    assert cache.lookup("a") == pytest.approx(5.5)
    now[0] += 0.5
    assert cache.lookup("a") is None  # over-limit deadline passed
    for key in "bcde":
        cache.add(key, 60, 60)
    assert len(cache) == 3
    assert cache.lookup("b") is None  # the oldest made room
    assert cache.lookup("e") == 60
