"""envoyproxy/ratelimit compatibility, on the in-memory and the real Redis backend.

Written from the behaviour described in the reference (matching precedence, depth, wildcards,
unlimited, shadow mode, replaces, hits_addend and peek, overrides, unknown domain, statuses).
"""

from __future__ import annotations

import pytest

from sidegate.ratelimit.config.units import UNIT_ENUM
from sidegate.ratelimit.response import UINT32_MAX
from sidegate.ratelimit.service import RateLimitRequestError
from tests.ratelimit.conftest import OK, OVER, ServiceFactory, codes, descriptor, request

# Fixed windows are epoch-aligned and Redis keeps its own clock: year-long windows keep a
# window boundary from falling inside a test.
TREE = """
domain: d
descriptors:
  - key: k1
    value: exact
    rate_limit: {unit: year, requests_per_unit: 1, name: exact}
  - key: k1
    value: "pre*"
    rate_limit: {unit: year, requests_per_unit: 2}
  - key: k1
    value: "*fix"
    rate_limit: {unit: year, requests_per_unit: 3}
  - key: k1
    value: "a*b*c"
    share_threshold: true
    rate_limit: {unit: year, requests_per_unit: 4}
  - key: k1
    rate_limit: {unit: year, requests_per_unit: 5}
  - key: parent
    value: p
    descriptors:
      - key: child
        value: c
        rate_limit: {unit: year, requests_per_unit: 6}
  - key: parent
    descriptors:
      - key: child
        rate_limit: {unit: year, requests_per_unit: 7}
  - key: shallow
    rate_limit: {unit: year, requests_per_unit: 8}
    descriptors:
      - key: deep
        rate_limit: {unit: year, requests_per_unit: 9}
  - key: whitelisted
    value: vip
  - key: whitelisted
    rate_limit: {unit: year, requests_per_unit: 10}
  - key: free
    rate_limit: {unlimited: true}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: year, requests_per_unit: 1}
  - key: old
    rate_limit: {unit: year, requests_per_unit: 1, name: old_rule}
  - key: new
    rate_limit: {unit: year, requests_per_unit: 100, replaces: [{name: old_rule}]}
  - key: q1
    quota_mode: true
    rate_limit: {unit: year, requests_per_unit: 1}
  - key: q2
    quota_mode: true
    rate_limit: {unit: year, requests_per_unit: 1}
"""


@pytest.fixture
async def service(make_service: ServiceFactory):  # type: ignore[no-untyped-def]
    return await make_service({"d.yaml": TREE}, default_algorithm="fixed_window")


def limit_of(response, index: int = 0) -> int:  # type: ignore[no-untyped-def]
    return response.statuses[index].current_limit.requests_per_unit


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([("k1", "exact")], 1),
        ([("k1", "prefix")], 2),  # "pre*" is the first wildcard that matches
        ([("k1", "suffix")], 3),
        ([("k1", "pre-and-fix")], 2),  # both wildcards match: load order decides
        ([("k1", "a-b-c")], 4),
        ([("k1", "other")], 5),  # key-only default
        ([("parent", "p"), ("child", "c")], 6),
        ([("parent", "x"), ("child", "anything")], 7),
        ([("shallow", "s")], 8),
        ([("shallow", "s"), ("deep", "z")], 9),
        ([("whitelisted", "someone")], 10),
    ],
)
async def test_matching_precedence(service, entries, expected) -> None:  # type: ignore[no-untyped-def]
    response = await service.should_rate_limit(request("d", entries))
    assert response.overall_code == OK
    assert limit_of(response) == expected
    assert response.statuses[0].current_limit.unit == UNIT_ENUM["year"]
    assert response.statuses[0].limit_remaining == expected - 1
    assert 0 < response.statuses[0].duration_until_reset.seconds <= 365 * 86400


@pytest.mark.parametrize(
    "entries",
    [
        [("parent", "p"), ("child", "other")],  # exact parent matched: no backtracking to "parent"
        [("parent", "p")],  # shallower than the config: the node has no limit
        [("k1", "exact"), ("extra", "x")],  # deeper than the config
        [("whitelisted", "vip")],  # a value node without limit or children exempts the value
        [("nobody", "x")],
    ],
)
async def test_no_limit(service, entries) -> None:  # type: ignore[no-untyped-def]
    response = await service.should_rate_limit(request("d", entries))
    assert response.overall_code == OK
    status = response.statuses[0]
    assert status.code == OK
    assert not status.HasField("current_limit")
    assert status.limit_remaining == 0
    assert not status.HasField("duration_until_reset")


async def test_fixed_window_counts_like_upstream(service) -> None:  # type: ignore[no-untyped-def]
    answers = []
    for _ in range(4):
        response = await service.should_rate_limit(request("d", [("k1", "prefix")]))
        answers.append((response.overall_code, response.statuses[0].limit_remaining))
    assert answers == [(OK, 1), (OK, 0), (OVER, 0), (OVER, 0)]
    # Rejected hits were counted (upstream behaviour): a peek sees the count above the limit.
    peek = await service.should_rate_limit(request("d", descriptor([("k1", "prefix")], hits=0)))
    assert peek.overall_code == OVER


async def test_wildcard_counters(service) -> None:  # type: ignore[no-untyped-def]
    # Without share_threshold every value has its own counter...
    for value in ("pre-1", "pre-2"):
        response = await service.should_rate_limit(request("d", [("k1", value)]))
        assert response.statuses[0].limit_remaining == 1
    # ...with it, all values matching the pattern share one.
    remaining = []
    for value in ("a1b1c", "a2b2c", "abc", "axbxc", "ab-c"):
        response = await service.should_rate_limit(request("d", [("k1", value)]))
        remaining.append((response.statuses[0].code, response.statuses[0].limit_remaining))
    assert remaining == [(OK, 3), (OK, 2), (OK, 1), (OK, 0), (OVER, 0)]


async def test_unlimited(service) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        response = await service.should_rate_limit(request("d", [("free", "x")]))
        status = response.statuses[0]
        assert (status.code, status.limit_remaining) == (OK, UINT32_MAX)
        assert not status.HasField("current_limit")


async def test_rule_shadow_mode(service) -> None:  # type: ignore[no-untyped-def]
    responses = [await service.should_rate_limit(request("d", [("shadow", "x")]))
                 for _ in range(3)]
    assert [r.overall_code for r in responses] == [OK, OK, OK]
    assert [r.statuses[0].limit_remaining for r in responses] == [0, 0, 0]
    assert all(r.statuses[0].current_limit.requests_per_unit == 1 for r in responses)


async def test_global_shadow_mode(make_service: ServiceFactory) -> None:
    service = await make_service({"d.yaml": TREE}, default_algorithm="fixed_window",
                                 shadow_mode=True)
    for _ in range(2):
        response = await service.should_rate_limit(request("d", [("k1", "exact")]))
    assert response.overall_code == OK
    assert codes(response) == [OVER]  # statuses keep the truth


async def test_replaces(service) -> None:  # type: ignore[no-untyped-def]
    both = request("d", [("old", "x")], [("new", "x")])
    for _ in range(3):
        response = await service.should_rate_limit(both)
    assert response.overall_code == OK
    old, new = response.statuses
    assert (old.code, old.HasField("current_limit")) == (OK, False)
    assert (new.current_limit.requests_per_unit, new.limit_remaining) == (100, 97)
    # Alone, the replaced rule still applies: it was not charged while replaced.
    alone = await service.should_rate_limit(request("d", [("old", "x")]))
    assert (alone.overall_code, alone.statuses[0].limit_remaining) == (OK, 0)


async def test_quota_mode(service) -> None:  # type: ignore[no-untyped-def]
    await service.should_rate_limit(request("d", [("q1", "x")]))
    one_over = await service.should_rate_limit(request("d", [("q1", "x")], [("q2", "x")]))
    assert codes(one_over) == [OVER, OK]
    assert one_over.overall_code == OK  # not every quota descriptor is over
    both_over = await service.should_rate_limit(request("d", [("q1", "x")], [("q2", "x")]))
    assert codes(both_over) == [OVER, OVER]
    assert both_over.overall_code == OVER


async def test_hits_addend(service) -> None:  # type: ignore[no-untyped-def]
    # Request-level hits_addend applies to every descriptor; per-descriptor wins.
    response = await service.should_rate_limit(
        request("d", [("whitelisted", "a")], descriptor([("k1", "b")], hits=2), hits_addend=4)
    )
    assert [s.limit_remaining for s in response.statuses] == [6, 3]
    # Request-level 0 means 1.
    response = await service.should_rate_limit(request("d", [("whitelisted", "a")]))
    assert response.statuses[0].limit_remaining == 5
    # Per-descriptor 0 is a peek: nothing is charged.
    for _ in range(2):
        response = await service.should_rate_limit(
            request("d", descriptor([("whitelisted", "a")], hits=0))
        )
        assert (response.overall_code, response.statuses[0].limit_remaining) == (OK, 5)


async def test_limit_override(service) -> None:  # type: ignore[no-untyped-def]
    override = descriptor([("nobody", "x"), ("deep", "y")], limit=(2, UNIT_ENUM["year"]))
    answers = []
    for _ in range(3):
        response = await service.should_rate_limit(request("d", override))
        status = response.statuses[0]
        answers.append((status.code, status.limit_remaining, status.current_limit.unit))
    year = UNIT_ENUM["year"]
    assert answers == [(OK, 1, year), (OK, 0, year), (OVER, 0, year)]
    # The domain must exist for an override to apply.
    unknown = await service.should_rate_limit(request("nope", override))
    assert (unknown.overall_code, unknown.statuses[0].HasField("current_limit")) == (OK, False)


async def test_unknown_domain(service) -> None:  # type: ignore[no-untyped-def]
    response = await service.should_rate_limit(request("nope", [("k1", "exact")], [("k", "v")]))
    assert response.overall_code == OK
    assert codes(response) == [OK, OK]


async def test_statuses_one_per_descriptor(service) -> None:  # type: ignore[no-untyped-def]
    response = await service.should_rate_limit(
        request("d", [("k1", "exact")], [("nobody", "x")], [("free", "y")])
    )
    assert len(response.statuses) == 3
    assert [s.limit_remaining for s in response.statuses] == [0, 0, UINT32_MAX]


async def test_request_errors(service) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RateLimitRequestError, match=r"^rate limit domain must not be empty$"):
        await service.should_rate_limit(request("", [("k1", "x")]))
    with pytest.raises(RateLimitRequestError,
                       match=r"^rate limit descriptor list must not be empty$"):
        await service.should_rate_limit(request("d"))


async def test_response_headers(make_service: ServiceFactory) -> None:
    service = await make_service({"d.yaml": TREE}, default_algorithm="fixed_window",
                                 response_headers={"enabled": True})
    for _ in range(2):
        response = await service.should_rate_limit(
            request("d", [("k1", "exact")], [("k1", "other")])
        )
    headers = {h.key: h.value for h in response.response_headers_to_add}
    # The over-limit descriptor wins over the one with more left.
    assert headers["RateLimit-Limit"] == "1"
    assert headers["RateLimit-Remaining"] == "0"
    assert 0 < int(headers["RateLimit-Reset"]) <= 365 * 86400


async def test_dynamic_metadata(make_service: ServiceFactory) -> None:
    tree = TREE.replace("  - key: free\n", "  - key: free\n    metadata: {team: edge}\n")
    service = await make_service({"d.yaml": tree}, response_dynamic_metadata=True)
    response = await service.should_rate_limit(request("d", [("free", "x")], hits_addend=2))
    document = dict(response.dynamic_metadata)
    assert document["domain"] == "d"
    assert list(document["descriptors"][0]["entries"]) == ["free=x"]
    assert document["hitsAddend"] == 2
    assert dict(document["metadata"]) == {"team": "edge"}
