"""envoyproxy/ratelimit's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT, on both backends.

Upstream (src/redis/fixed_cache_impl.go) reads every key first; when one would go over, that
key is still incremented by its hits and the request's other keys by 0. So the over-limit key
is charged and only the others are spared, which a later peek shows.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidegate.ratelimit.settings import RateLimitSettings
from tests.ratelimit.conftest import OK, OVER, ServiceFactory, codes, descriptor, request

RULES = {"f.yaml": """
    domain: f
    descriptors:
      - key: a
        rate_limit: {requests_per_unit: 1, unit: year}
      - key: b
        rate_limit: {requests_per_unit: 5, unit: year}
      - key: t
        rate_limit: {requests_per_unit: 1, unit: year, algorithm: token_bucket}
    """}


async def _peek(service, entries):  # type: ignore[no-untyped-def]
    response = await service.should_rate_limit(request("f", descriptor(entries, hits=0)))
    return response.statuses[0].code, response.statuses[0].limit_remaining


async def test_over_limit_key_is_charged_the_others_spared(make_service: ServiceFactory) -> None:
    service = await make_service(RULES, default_algorithm="fixed_window",
                                 stop_cache_key_increment_when_overlimit=True)
    both = request("f", [("a", "x")], [("b", "x")])
    first = await service.should_rate_limit(both)
    assert codes(first) == [OK, OK]
    second = await service.should_rate_limit(both)
    assert codes(second) == [OVER, OK]
    assert second.statuses[1].limit_remaining == 4  # b reported as not charged
    # a was charged (count 2 > 1: even a peek is over), b was spared (still 1 of 5 used).
    assert await _peek(service, [("a", "x")]) == (OVER, 0)
    assert await _peek(service, [("b", "x")]) == (OK, 4)


async def test_without_the_setting_all_or_nothing_charges_neither(
    make_service: ServiceFactory,
) -> None:
    """fixed_window_count_rejected: false is sidegate's all-or-nothing: nothing is charged."""
    service = await make_service(RULES, default_algorithm="fixed_window",
                                 fixed_window_count_rejected=False)
    both = request("f", [("a", "x")], [("b", "x")])
    await service.should_rate_limit(both)
    assert codes(await service.should_rate_limit(both)) == [OVER, OK]
    assert await _peek(service, [("a", "x")]) == (OK, 0)  # count still 1: not charged
    assert await _peek(service, [("b", "x")]) == (OK, 4)


async def test_default_counting_charges_every_key(make_service: ServiceFactory) -> None:
    service = await make_service(RULES, default_algorithm="fixed_window")
    both = request("f", [("a", "x")], [("b", "x")])
    await service.should_rate_limit(both)
    await service.should_rate_limit(both)
    assert await _peek(service, [("a", "x")]) == (OVER, 0)
    assert await _peek(service, [("b", "x")]) == (OK, 3)


async def test_a_refusing_token_bucket_spares_the_windows(make_service: ServiceFactory) -> None:
    """Token buckets keep their all-or-nothing rule; a request they refuse charges no
    stop-increment window either."""
    service = await make_service(RULES, default_algorithm="fixed_window",
                                 stop_cache_key_increment_when_overlimit=True)
    assert (await service.should_rate_limit(request("f", [("t", "x")]))).overall_code == OK
    mixed = await service.should_rate_limit(request("f", [("t", "x")], [("b", "x")]))
    assert codes(mixed) == [OVER, OK]
    assert await _peek(service, [("b", "x")]) == (OK, 5)


def test_two_charging_rules_cannot_both_be_set() -> None:
    with pytest.raises(ValidationError, match="set one"):
        RateLimitSettings(stop_cache_key_increment_when_overlimit=True,
                          fixed_window_count_rejected=False)
