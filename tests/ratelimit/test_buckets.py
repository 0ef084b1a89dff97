"""Token buckets and multi-limit takes, the same suite on the in-memory and the real Redis store."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from sidegate.ratelimit.buckets.base import BucketRequest
from sidegate.ratelimit.buckets.redis import RedisBackend
from tests.ratelimit.conftest import OK, OVER, ServiceFactory, codes, descriptor, request

TIERS = """
domain: t
tiers:
  default: basic
  quotas:
    basic: {requests_per_unit: 10, unit: minute}
    free: {requests_per_unit: 5, unit: minute}
    burst: {requests_per_unit: 1, unit: hour, burst: 4}
    multi:
      limits:
        - {requests_per_unit: 3, unit: minute}
        - {requests_per_unit: 5, unit: year, algorithm: fixed_window}
    gold: {unlimited: true}
descriptors:
  - key: a
    rate_limit: {requests_per_unit: 2, unit: hour}
  - key: b
    rate_limit: {requests_per_unit: 5, unit: hour}
  - key: conc
    rate_limit: {requests_per_unit: 1, unit: year, burst: 37}
"""


def tier(name: str, consumer: str = "c1") -> list[tuple[str, str]]:
    return [("tier", name), ("consumer", consumer)]


async def admitted(service, req, attempts: int = 30) -> int:  # type: ignore[no-untyped-def]
    count = 0
    for _ in range(attempts):
        response = await service.should_rate_limit(req)
        count += response.overall_code == OK
    return count


async def test_tiers_per_consumer(make_service: ServiceFactory) -> None:
    service = await make_service({"t.yaml": TIERS})
    assert await admitted(service, request("t", tier("free"))) == 5
    assert await admitted(service, request("t", tier("free", "c2"))) == 5
    assert await admitted(service, request("t", tier("basic"))) == 10
    assert await admitted(service, request("t", tier("no-such-tier"))) == 10  # the default
    assert await admitted(service, request("t", tier("gold"))) == 30


async def test_burst_then_refused_without_charge(make_service: ServiceFactory) -> None:
    service = await make_service({"t.yaml": TIERS})
    answers = []
    for _ in range(6):
        response = await service.should_rate_limit(request("t", tier("burst")))
        status = response.statuses[0]
        answers.append((status.code, status.limit_remaining))
    assert answers == [(OK, 3), (OK, 2), (OK, 1), (OK, 0), (OVER, 0), (OVER, 0)]
    # One hour per token, four tokens of capacity: full again in 4 h (rounded up to seconds).
    assert 3 * 3600 < response.statuses[0].duration_until_reset.seconds <= 4 * 3600
    assert response.statuses[0].current_limit.requests_per_unit == 1


async def test_cost_above_burst_never_passes(make_service: ServiceFactory) -> None:
    service = await make_service({"t.yaml": TIERS})
    response = await service.should_rate_limit(request("t", descriptor(tier("burst"), hits=5)))
    assert response.overall_code == OVER
    # ...and charged nothing: the whole burst is still there.
    response = await service.should_rate_limit(request("t", descriptor(tier("burst"), hits=4)))
    assert (response.overall_code, response.statuses[0].limit_remaining) == (OK, 0)


async def test_peek_does_not_consume(make_service: ServiceFactory) -> None:
    service = await make_service({"t.yaml": TIERS})
    for _ in range(3):
        response = await service.should_rate_limit(
            request("t", descriptor(tier("free"), hits=0))
        )
        assert (response.overall_code, response.statuses[0].limit_remaining) == (OK, 5)


async def test_multi_limit_all_or_nothing(make_service: ServiceFactory) -> None:
    service = await make_service({"t.yaml": TIERS}, fixed_window_count_rejected=False)
    # 3/min token bucket and 5/h fixed window on one descriptor: the tighter one reports.
    answers = []
    for _ in range(4):
        response = await service.should_rate_limit(request("t", tier("multi")))
        status = response.statuses[0]
        answers.append((status.code, status.current_limit.requests_per_unit,
                        status.limit_remaining))
    assert answers == [(OK, 3, 2), (OK, 3, 1), (OK, 3, 0), (OVER, 3, 0)]
    # The refusal charged neither limit: the yearly window still has 2 left.
    peek = await service.should_rate_limit(request("t", descriptor(tier("multi"), hits=0)))
    assert peek.overall_code == OK


async def test_descriptors_all_or_nothing(make_service: ServiceFactory) -> None:
    service = await make_service({"t.yaml": TIERS})
    both = request("t", [("a", "x")], [("b", "x")])
    assert [r.overall_code for r in [await service.should_rate_limit(both) for _ in range(2)]] \
        == [OK, OK]
    refused = await service.should_rate_limit(both)
    assert codes(refused) == [OVER, OK]
    # "b" was not charged by the refused request: 5 - 2 = 3 left.
    alone = await service.should_rate_limit(request("t", descriptor([("b", "x")], hits=0)))
    assert alone.statuses[0].limit_remaining == 3


async def test_fixed_window_counts_rejected_by_default(make_service: ServiceFactory) -> None:
    """envoyproxy/ratelimit charges every fixed-window descriptor even when one is over."""
    service = await make_service(
        {"t.yaml": "domain: f\ndescriptors:\n  - {key: a, rate_limit: {requests_per_unit: 1, "
                   "unit: year}}\n  - {key: b, rate_limit: {requests_per_unit: 5, unit: year}}\n"},
        default_algorithm="fixed_window",
    )
    both = request("f", [("a", "x")], [("b", "x")])
    for _ in range(3):
        response = await service.should_rate_limit(both)
    assert codes(response) == [OVER, OK]
    assert response.statuses[1].limit_remaining == 2


async def test_concurrent_requests_admit_exactly_the_burst(
    make_service: ServiceFactory, backend_kind: str
) -> None:
    service = await make_service({"t.yaml": TIERS}, redis={"max_connections": 32})
    # 37 tokens that refill one a year: no refill can blur the count while the race runs.
    n, burst = 200, 37
    req = request("t", [("conc", "x")])
    responses = await asyncio.gather(*(service.should_rate_limit(req) for _ in range(n)))
    assert sum(r.overall_code == OK for r in responses) == burst


async def test_redis_many_connections_admit_exactly(redis_url: str) -> None:
    """Separate clients (separate connections) against one bucket of B tokens admit exactly B."""
    clients = [RedisBackend(aioredis.Redis.from_url(redis_url), "conc:") for _ in range(8)]
    bucket = BucketRequest(key="{conc}:tb3600000:x", algorithm="token_bucket", limit=10,
                           window_ms=3_600_000, burst=25, hits=1)
    await clients[0].client.delete("conc:" + bucket.key)

    async def hammer(backend: RedisBackend) -> int:
        results = [await backend.take([bucket]) for _ in range(10)]
        return sum(r[0].allowed for r in results)

    try:
        assert sum(await asyncio.gather(*(hammer(c) for c in clients))) == 25
    finally:
        for backend in clients:
            await backend.close()


@pytest.mark.parametrize("backend_kind", ["redis"])
async def test_keys_share_one_hash_tag_and_hide_values(
    redis_url: str, make_service: ServiceFactory
) -> None:
    service = await make_service({"t.yaml": TIERS})
    await service.should_rate_limit(request("t", tier("multi", "secret-consumer"), [("a", "y")]))
    client = aioredis.Redis.from_url(redis_url)
    try:
        prefix = service.settings.redis.key_prefix
        keys = [k.decode() for k in await client.keys(prefix + "*")]
        assert len(keys) == 3
        assert all(k.startswith(prefix + "{t}:") for k in keys)
        assert not any("secret" in k for k in keys)
        ttls = [await client.pttl(k) for k in keys]
        assert all(ttl > 0 for ttl in ttls)  # set in the same script as the values
    finally:
        await client.aclose()


async def test_redis_refill_follows_the_rate_exactly(redis_url: str) -> None:
    """Burst, then refill at exactly 10/s by Redis' own clock (read around each call, so the
    check is arithmetic, not timing: a stalled machine widens the bounds, never breaks them)."""
    backend = RedisBackend(aioredis.Redis.from_url(redis_url), "refill:", timeout=5.0)
    client = backend.client
    key = "{refill}:tb1000:x"
    await client.delete("refill:" + key)

    async def redis_us() -> int:
        seconds, micros = await client.time()
        return seconds * 1_000_000 + micros

    def bucket(hits: int) -> list[BucketRequest]:
        return [BucketRequest(key=key, algorithm="token_bucket", limit=10, window_ms=1000,
                              burst=20, hits=hits)]

    step, tau = 100_000, 2_000_000
    try:
        before = await redis_us()
        (burst,) = await backend.take(bucket(20))
        after = await redis_us()
        assert (burst.allowed, burst.remaining) == (True, 0)
        tat, stored_step = map(int, (await client.get("refill:" + key)).decode().split(":"))
        assert stored_step == step
        assert before + tau <= tat <= after + tau
        # One more hit is refused until one interval has passed (by Redis' clock), and a
        # refused take charges nothing.
        early_at = await redis_us()
        (early,) = await backend.take(bucket(1))
        if early_at < tat - tau + step and not early.allowed:
            assert int((await client.get("refill:" + key)).decode().split(":")[0]) == tat
        if await redis_us() < tat - tau + step:
            assert not early.allowed
        if early.allowed:
            tat += step

        for _ in range(500):  # bounded: wait for 3 tokens by Redis' clock
            if await redis_us() >= tat - tau + 3 * step:
                break
            await asyncio.sleep(0.02)
        low_at = await redis_us()
        (peek,) = await backend.take(bucket(0))
        high_at = await redis_us()
        low = (tau - (tat - low_at)) // step
        high = (tau - (tat - high_at)) // step
        assert 2 <= low <= peek.remaining <= high
        # The peek charged nothing.
        assert int((await client.get("refill:" + key)).decode().split(":")[0]) == tat
    finally:
        await backend.close()


async def test_rate_above_a_million_per_second_is_capped_not_a_crash(
    make_service: ServiceFactory,
) -> None:
    # The emission interval is whole microseconds; a faster rate once divided by zero.
    huge = (
        "domain: h\ndescriptors:\n  - key: k\n"
        "    rate_limit: {requests_per_unit: 4000000000, unit: second}\n"
    )
    service = await make_service({"h.yaml": huge})
    response = await service.should_rate_limit(request("h", [("k", "v")]))
    assert response.overall_code == OK
    assert response.statuses[0].limit_remaining > 0
