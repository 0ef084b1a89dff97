"""The in-memory store's bound (`ratelimit.memory.max_keys`) cannot be used to reset a quota.

Flooding the store with fresh descriptor values evicts expired (full) buckets first, then the
least recently used ones with room left; an exhausted bucket stays until its refill.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.ratelimit.buckets.base import BucketRequest
from sidegate.ratelimit.buckets.memory import MemoryBackend
from sidegate.ratelimit.config.loader import load_from_settings
from sidegate.ratelimit.service import RateLimitService
from sidegate.ratelimit.settings import RateLimitSettings
from tests.ratelimit.conftest import OK, OVER, FakeClock, request, write_rules

MAX_KEYS = 50


def _service(tmp_path: Path, clock: FakeClock, algorithm: str) -> RateLimitService:
    files = {"u.yaml": f"""
        domain: u
        descriptors:
          - key: user
            rate_limit: {{requests_per_unit: 3, unit: minute, algorithm: {algorithm}}}
        """}
    settings = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", files),
        reload={"watch": False},
        memory={"max_keys": MAX_KEYS},
    )
    backend = MemoryBackend(clock=clock, max_keys=settings.memory.max_keys)
    return RateLimitService(settings, load_from_settings(settings), backend)


async def _code(service: RateLimitService, user: str) -> int:
    return (await service.should_rate_limit(request("u", [("user", user)]))).overall_code


@pytest.mark.parametrize(("algorithm", "refill_s"), [("token_bucket", 20), ("fixed_window", 60)])
async def test_flood_cannot_reset_an_exhausted_quota(
    tmp_path: Path, clock: FakeClock, algorithm: str, refill_s: int
) -> None:
    service = _service(tmp_path, clock, algorithm)
    backend = service.backend
    assert isinstance(backend, MemoryBackend)
    assert [await _code(service, "victim") for _ in range(4)] == [OK, OK, OK, OVER]
    for i in range(3 * MAX_KEYS):
        assert await _code(service, f"flood-{i}") == OK
        assert len(backend) <= MAX_KEYS
    assert backend.evictions >= 2 * MAX_KEYS
    assert await _code(service, "victim") == OVER
    clock.advance(refill_s - 0.5)
    assert await _code(service, "victim") == OVER
    clock.advance(0.5)
    assert await _code(service, "victim") == OK


async def test_max_keys_is_a_setting(tmp_path: Path) -> None:
    settings = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", {"u.yaml": "domain: u\n"}),
        reload={"watch": False},
        memory={"max_keys": 1234},
    )
    service = RateLimitService.from_settings(settings)
    assert isinstance(service.backend, MemoryBackend)
    assert service.backend.max_keys == 1234
    assert RateLimitSettings().memory.max_keys == 1_000_000


def _take(backend: MemoryBackend, key: str, limit: int, window_ms: int) -> bool:
    (result,) = backend.take_now([BucketRequest(key=key, algorithm="token_bucket", limit=limit,
                                                window_ms=window_ms, burst=limit, hits=1)])
    return result.allowed


def test_one_insert_evicts_one_bucket(clock: FakeClock) -> None:
    """Eviction is incremental: a full store loses one bucket per new one, never a batch."""
    backend = MemoryBackend(clock=clock, max_keys=100)
    for i in range(100):
        _take(backend, f"k{i}", 5, 3_600_000)
    assert len(backend) == 100
    _take(backend, "new", 5, 3_600_000)
    assert len(backend) == 100
    assert backend.evictions == 1
    assert "k0" not in backend and "k1" in backend and "new" in backend


def test_expired_buckets_go_before_live_ones(clock: FakeClock) -> None:
    backend = MemoryBackend(clock=clock, max_keys=10)
    for i in range(5):
        _take(backend, f"hour{i}", 10, 3_600_000)  # older, still holding a used token
    for i in range(5):
        _take(backend, f"second{i}", 10, 1_000)  # newer, full again 0.1 s later
    clock.advance(1)
    for i in range(5):
        _take(backend, f"new{i}", 10, 3_600_000)
    assert all(f"hour{i}" in backend for i in range(5))
    assert not any(f"second{i}" in backend for i in range(5))
    assert backend.evictions == 0  # nothing with state was lost


def test_least_recently_used_goes_first(clock: FakeClock) -> None:
    backend = MemoryBackend(clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        _take(backend, key, 10, 3_600_000)
    _take(backend, "a", 10, 3_600_000)  # "a" is used again: "b" is now the oldest
    _take(backend, "d", 10, 3_600_000)
    assert "b" not in backend and {"a", "c", "d"} <= {k for k in "abcd" if k in backend}


def test_a_store_of_exhausted_buckets_stays_bounded(clock: FakeClock) -> None:
    backend = MemoryBackend(clock=clock, max_keys=10)
    for i in range(100):
        _take(backend, f"k{i}", 1, 3_600_000)
    assert len(backend) == 10
    assert not _take(backend, "k99", 1, 3_600_000)  # the newest is still exact


def test_a_sharded_store_keeps_the_exhausted_bucket_too(clock: FakeClock) -> None:
    """Above 4,096 buckets the store is split in shards; the guarantee holds in each."""
    backend = MemoryBackend(clock=clock, max_keys=12_000)
    assert len(backend._shards) == 2
    assert [_take(backend, "victim", 1, 3_600_000) for _ in range(2)] == [True, False]
    for i in range(36_000):
        _take(backend, f"flood-{i}", 10, 3_600_000)
    assert len(backend) <= 12_000
    assert not _take(backend, "victim", 1, 3_600_000)
    clock.advance(3600)
    assert _take(backend, "victim", 1, 3_600_000)
