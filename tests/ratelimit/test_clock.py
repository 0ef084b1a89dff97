"""Exactness over time with a controllable clock (in-memory store; Redis uses its own TIME)."""

from __future__ import annotations

from pathlib import Path

from tests.ratelimit.conftest import OK, OVER, FakeClock, descriptor, memory_service, request

RULES = {
    "c.yaml": """
        domain: c
        descriptors:
          - key: tb
            rate_limit: {requests_per_unit: 10, unit: second, burst: 20}
          - key: slow
            rate_limit: {requests_per_unit: 2, window: 30s}
          - key: fw
            rate_limit: {requests_per_unit: 3, unit: minute, algorithm: fixed_window}
          - key: both
            rate_limit:
              limits:
                - {requests_per_unit: 10, unit: second, burst: 5}
                - {requests_per_unit: 12, unit: minute, algorithm: fixed_window}
    """
}


async def count_ok(service, req, attempts: int) -> int:  # type: ignore[no-untyped-def]
    total = 0
    for _ in range(attempts):
        total += (await service.should_rate_limit(req)).overall_code == OK
    return total


async def test_burst_then_refill_at_the_exact_rate(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, RULES, clock)
    req = request("c", [("tb", "x")])
    assert await count_ok(service, req, 25) == 20  # the burst
    clock.advance(0.099)
    assert await count_ok(service, req, 1) == 0  # one token takes 100 ms
    clock.advance(0.001)
    assert await count_ok(service, req, 3) == 1
    clock.advance(1.0)
    assert await count_ok(service, req, 15) == 10  # 10 per second sustained
    clock.advance(60)
    assert await count_ok(service, req, 25) == 20  # never more than the burst


async def test_any_window_length(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, RULES, clock)
    req = request("c", [("slow", "x")])
    assert await count_ok(service, req, 3) == 2
    response = await service.should_rate_limit(req)
    assert response.statuses[0].duration_until_reset.seconds == 30
    assert response.statuses[0].current_limit.unit == 0  # 30 s is no proto unit
    clock.advance(14.999)
    assert await count_ok(service, req, 1) == 0
    clock.advance(0.001)
    assert await count_ok(service, req, 2) == 1


async def test_fixed_window_is_epoch_aligned(tmp_path: Path, clock: FakeClock) -> None:
    clock.now = 1_700_000_040_000_000 + 50_000_000  # 50 s into a minute
    service = memory_service(tmp_path, RULES, clock)
    req = request("c", [("fw", "x")])
    first = await service.should_rate_limit(req)
    assert first.statuses[0].duration_until_reset.seconds == 10
    assert await count_ok(service, req, 5) == 2
    clock.advance(10)  # the next minute starts: a fresh window
    assert await count_ok(service, req, 5) == 3


async def test_multi_limit_over_time(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, RULES, clock, fixed_window_count_rejected=False)
    req = request("c", [("both", "x")])
    admitted = 0
    for _ in range(60):  # one minute, 10 attempts per second
        admitted += await count_ok(service, req, 10)
        clock.advance(1)
    # The burst of 5, then the per-minute window caps it at 12; refused attempts cost nothing.
    assert admitted == 12


async def test_hits_addend_over_time(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, RULES, clock)
    assert (await service.should_rate_limit(
        request("c", descriptor([("tb", "x")], hits=15)))).overall_code == OK
    assert (await service.should_rate_limit(
        request("c", descriptor([("tb", "x")], hits=6)))).overall_code == OVER
    clock.advance(0.1)
    response = await service.should_rate_limit(request("c", descriptor([("tb", "x")], hits=6)))
    assert (response.overall_code, response.statuses[0].limit_remaining) == (OK, 0)


async def test_memory_store_stays_bounded(clock: FakeClock) -> None:
    from sidegate.ratelimit.buckets.base import BucketRequest
    from sidegate.ratelimit.buckets.memory import MemoryBackend

    backend = MemoryBackend(clock=clock, max_keys=100)
    for i in range(1000):
        await backend.take([BucketRequest(key=f"k{i}", algorithm="token_bucket", limit=1,
                                          window_ms=3_600_000, burst=1, hits=1)])
    assert len(backend) <= 100
    # The newest bucket is still there and still exact.
    (again,) = await backend.take([BucketRequest(key="k999", algorithm="token_bucket", limit=1,
                                                 window_ms=3_600_000, burst=1, hits=1)])
    assert not again.allowed
