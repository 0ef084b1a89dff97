"""The shared cache primitives: bounded TTL LRU, single-flight, credential hashing."""

from __future__ import annotations

import asyncio

import pytest

from sidegate.common.cache import TTLCache
from sidegate.extauthz.identity.cache import SingleFlight, credential_key
from tests.identity.conftest import FakeClock


def test_ttl_cache_expiry_and_lru_eviction() -> None:
    clock = FakeClock(start=0)
    cache: TTLCache[str, int] = TTLCache(2, clock=clock)
    cache.set("a", 1, ttl=10)
    cache.set("b", 2, ttl=5)
    assert cache.get("a") == 1  # a is now most recently used
    cache.set("c", 3, ttl=10)  # evicts b, the least recently used
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    clock.advance(10)
    assert cache.get("a") is None and len(cache) == 1
    cache.set("d", 4, ttl=0)
    assert cache.get("d") is None
    with pytest.raises(ValueError):
        TTLCache(0)


async def test_single_flight_coalesces_and_shares_errors() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    waiters = [asyncio.ensure_future(flight.run("k", work)) for _ in range(10)]
    await asyncio.sleep(0)
    assert flight.in_flight("k")
    gate.set()
    assert await asyncio.gather(*waiters) == [42] * 10
    assert calls == 1 and not flight.in_flight("k")

    async def boom() -> int:
        raise RuntimeError("down")

    results = await asyncio.gather(
        flight.run("e", boom), flight.run("e", boom), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_single_flight_survives_a_cancelled_caller() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 7

    first = asyncio.ensure_future(flight.run("k", work))
    second = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == 7


def test_credential_key_hides_the_credential() -> None:
    key = credential_key("secret-token", namespace="src")
    assert "secret-token" not in key and len(key) == 64
    assert key != credential_key("secret-token", namespace="other")
    assert key == credential_key("secret-token", namespace="src")
