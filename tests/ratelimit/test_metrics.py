"""Per-rule stats as envoyproxy/ratelimit counts them, with bounded label cardinality."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from tests.ratelimit.conftest import FakeClock, memory_service, request

RULES = {
    "m.yaml": """
        domain: m
        descriptors:
          - key: fw
            rate_limit: {requests_per_unit: 10, unit: hour, algorithm: fixed_window}
          - key: user
            detailed_metric: true
            rate_limit: {requests_per_unit: 10, unit: hour}
          - key: shadow
            shadow_mode: true
            rate_limit: {requests_per_unit: 1, unit: hour}
    """
}


def value(rule: str, kind: str) -> float:
    return REGISTRY.get_sample_value(
        "sidegate_ratelimit_rule_hits_total", {"domain": "m", "rule": rule, "kind": kind}
    ) or 0.0


async def test_rule_stats(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, RULES, clock)
    before = {k: value("m.fw", k) for k in ("total_hits", "within_limit", "near_limit",
                                            "over_limit")}
    for _ in range(12):
        await service.should_rate_limit(request("m", [("fw", "x")]))
    delta = {k: value("m.fw", k) - v for k, v in before.items()}
    # near = floor(10 * 0.8) = 8: the 9th and 10th hits are near the limit.
    assert delta == {"total_hits": 12, "within_limit": 10, "near_limit": 2, "over_limit": 2}
    shadow = value("m.shadow", "shadow_mode")
    for _ in range(3):
        await service.should_rate_limit(request("m", [("shadow", "x")]))
    assert value("m.shadow", "shadow_mode") == shadow + 2


async def test_detailed_metric_is_bounded(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, RULES, clock, detailed_metric_max_series=2)
    for user in ("u1", "u2", "u3", "u4"):
        await service.should_rate_limit(request("m", [("user", user)]))
    assert value("m.user_u1", "total_hits") >= 1
    assert value("m.user_u2", "total_hits") >= 1
    assert value("m.user_u3", "total_hits") == 0  # over the cap: rolled up instead
    assert value("m.user", "total_hits") >= 2


async def test_value_to_metric(tmp_path: Path, clock: FakeClock) -> None:
    rules = {"v.yaml": """
        domain: m
        descriptors:
          - key: route
            value_to_metric: true
            descriptors:
              - key: user
                rate_limit: {requests_per_unit: 10, unit: hour}
    """}
    service = memory_service(tmp_path, rules, clock)
    await service.should_rate_limit(request("m", [("route", "/a"), ("user", "u1")]))
    # The flagged level carries its value; the other does not.
    assert value("m.route_/a.user", "total_hits") == 1
