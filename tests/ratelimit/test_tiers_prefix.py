"""A tiers block behind a descriptor prefix (e.g. ``generic_key: api``), on both backends."""

from __future__ import annotations

from pathlib import Path

from sidegate.ratelimit.config.loader import load_rules
from tests.ratelimit.conftest import OK, ServiceFactory, request, write_rules

RULES = """
domain: p
descriptors:
  - key: generic_key
    value: api
    tiers:
      tier_key: tier
      consumer_key: consumer
      default: free
      quotas:
        free: {requests_per_unit: 2, unit: hour}
        premium: {requests_per_unit: 5, unit: hour}
        gold: {unlimited: true}
  - key: generic_key
    value: other
    descriptors:
      - key: tier
        value: free
        rate_limit: {requests_per_unit: 1, unit: hour}
tiers:
  default: free
  quotas:
    free: {requests_per_unit: 3, unit: hour}
"""


def api(tier: str, consumer: str) -> list[tuple[str, str]]:
    return [("generic_key", "api"), ("tier", tier), ("consumer", consumer)]


async def admitted(service, entries, attempts: int = 8) -> int:  # type: ignore[no-untyped-def]
    return sum(
        [(await service.should_rate_limit(request("p", entries))).overall_code == OK
         for _ in range(attempts)]
    )


async def test_tiers_behind_a_prefix(make_service: ServiceFactory) -> None:
    service = await make_service({"p.yaml": RULES})
    assert await admitted(service, api("free", "alice")) == 2
    assert await admitted(service, api("free", "bob")) == 2  # per consumer
    assert await admitted(service, api("premium", "carol")) == 5
    assert await admitted(service, api("no-such-tier", "dave")) == 2  # the default tier
    assert await admitted(service, api("gold", "erin")) == 8
    # The top-level tiers of the same domain are separate quotas.
    assert await admitted(service, [("tier", "free"), ("consumer", "alice")]) == 3
    # A prefix the tiers are not under gets no tier quota.
    assert await admitted(service, [("generic_key", "nope"), ("tier", "free"),
                                     ("consumer", "x")]) == 8


def test_stat_keys_name_the_prefix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = load_rules(write_rules(tmp_path, {"p.yaml": RULES}))
    api_node = rules.domains["p"].root.nodes["generic_key_api"]
    free = api_node.children.nodes["tier_free"].children.nodes["consumer"].rule
    fallback = api_node.children.nodes["tier"].children.nodes["consumer"].rule
    assert free is not None and free.stat_key == "p.generic_key_api.tier_free.consumer"
    # Unknown tiers are counted under the default tier's name (bounded series).
    assert fallback is not None and fallback.stat_key == "p.generic_key_api.tier_free.consumer"


def test_tiers_beside_explicit_children_must_not_collide(tmp_path: Path) -> None:
    import pytest

    from sidegate.ratelimit.config import RuleConfigError

    text = RULES.replace("    value: api\n", "    value: api\n    descriptors:\n"
                         "      - {key: tier, value: free, rate_limit: {requests_per_unit: 1, "
                         "unit: hour}}\n", 1)
    with pytest.raises(RuleConfigError) as info:
        load_rules(write_rules(tmp_path, {"p.yaml": text}))
    assert info.value.problem == "duplicate descriptor composite key 'p.generic_key_api.tier_free'"
