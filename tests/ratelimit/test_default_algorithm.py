"""default_algorithm auto: upstream-format files answer as envoyproxy/ratelimit does (fixed,
epoch-aligned windows); files using sidegate's extensions get token buckets."""

from __future__ import annotations

from pathlib import Path

from sidegate.ratelimit.config.loader import load_rules
from tests.ratelimit.conftest import (
    OK,
    OVER,
    FakeClock,
    descriptor,
    memory_service,
    request,
    write_rules,
)

UPSTREAM = """
    domain: up
    descriptors:
      - key: k
        rate_limit: {unit: minute, requests_per_unit: 3}
    """
EXTENDED = """
    domain: ext
    descriptors:
      - key: k
        rate_limit: {unit: minute, requests_per_unit: 3, burst: 3}
    """


async def _codes(service, domain: str, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    return [(await service.should_rate_limit(request(domain, [("k", "x")]))).overall_code
            for _ in range(n)]


async def test_upstream_file_counts_in_fixed_windows(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, {"up.yaml": UPSTREAM, "ext.yaml": EXTENDED}, clock)
    assert service.settings.default_algorithm == "auto"
    assert await _codes(service, "up", 4) == [OK, OK, OK, OVER]
    assert await _codes(service, "ext", 4) == [OK, OK, OK, OVER]
    clock.advance(20)
    # A token bucket has refilled one request; upstream's window has not ended.
    assert await _codes(service, "up", 1) == [OVER]
    assert await _codes(service, "ext", 2) == [OK, OVER]
    clock.advance(40)  # the next minute: a fresh window
    assert await _codes(service, "up", 4) == [OK, OK, OK, OVER]


async def test_setting_overrides_auto(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, {"up.yaml": UPSTREAM}, clock,
                             default_algorithm="token_bucket")
    assert await _codes(service, "up", 4) == [OK, OK, OK, OVER]
    clock.advance(20)
    assert await _codes(service, "up", 2) == [OK, OVER]


def test_domain_algorithm_is_resolved_per_file(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, {"up.yaml": UPSTREAM, "ext.yaml": EXTENDED}))
    assert rules.domains["up"].default_algorithm == "fixed_window"
    assert rules.domains["ext"].default_algorithm == "token_bucket"
    up_rule = rules.domains["up"].root.nodes["k"].rule
    assert up_rule is not None and up_rule.limits[0].algorithm == "fixed_window"


async def test_limit_override_uses_the_domains_algorithm(tmp_path: Path, clock: FakeClock) -> None:
    service = memory_service(tmp_path, {"up.yaml": UPSTREAM}, clock)
    minute = 2  # RateLimitResponse.RateLimit.Unit.MINUTE
    req = request("up", descriptor([("k", "y")], limit=(1, minute)))
    assert (await service.should_rate_limit(req)).overall_code == OK
    clock.advance(59)
    assert (await service.should_rate_limit(req)).overall_code == OVER
    clock.advance(1)
    assert (await service.should_rate_limit(req)).overall_code == OK
