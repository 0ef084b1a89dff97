"""The shipped examples/ratelimit answer as the Envoy demo and the end-to-end tests expect."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT
from tests.ratelimit.conftest import OK, ServiceFactory, request

EXAMPLES = REPO_ROOT / "examples" / "ratelimit"


def example_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))}


async def admitted(service, req, attempts: int) -> int:  # type: ignore[no-untyped-def]
    return sum([(await service.should_rate_limit(req)).overall_code == OK
                for _ in range(attempts)])


# What examples/envoy.yaml sends: domain sidegate for "/", sidegate_tiers for "/api/".
PREFIXES = {"sidegate": [], "sidegate_tiers": [("generic_key", "api")]}


@pytest.mark.parametrize("domain", ["sidegate", "sidegate_tiers"])
@pytest.mark.parametrize(("tier", "quota"),
                         [("free", 5), ("premium", 20), ("default", 10), ("unheard-of", 10)])
async def test_tier_quotas(make_service: ServiceFactory, domain: str, tier: str,
                           quota: int) -> None:
    # Token buckets everywhere: counts in this test must not depend on a minute boundary.
    service = await make_service(example_files(), default_algorithm="token_bucket")
    prefix = PREFIXES[domain]
    req = request(domain, [*prefix, ("tier", tier), ("consumer", "alice")])
    assert await admitted(service, req, quota + 3) == quota
    # Per consumer: bob has his own bucket.
    bob = request(domain, [*prefix, ("tier", tier), ("consumer", "bob")])
    assert await admitted(service, bob, 1) == 1


async def test_limited_route(make_service: ServiceFactory) -> None:
    service = await make_service(example_files(), default_algorithm="token_bucket")
    req = request("sidegate", [("generic_key", "limited")])
    assert await admitted(service, req, 6) == 3


async def test_enterprise_is_unlimited(make_service: ServiceFactory) -> None:
    service = await make_service(example_files())
    req = request("sidegate_tiers",
                  [("generic_key", "api"), ("tier", "enterprise"), ("consumer", "big")])
    assert await admitted(service, req, 50) == 50



def test_every_example_domain_is_sent_by_the_example_envoy() -> None:
    """A domain no Envoy filter sends is a rule file that never applies."""
    import yaml

    from sidegate.ratelimit.config.loader import load_rules

    envoy = yaml.safe_load((REPO_ROOT / "examples" / "envoy.yaml").read_text())
    sent: set[str] = set()
    for listener in envoy["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                for http_filter in hcm.get("http_filters", []):
                    if http_filter["name"] == "envoy.filters.http.ratelimit":
                        sent.add(http_filter["typed_config"]["domain"])
                # Routes may override the filter's domain (RateLimitPerRoute.domain).
                for host in hcm.get("route_config", {}).get("virtual_hosts", []):
                    for route in host["routes"]:
                        per_route = route.get("typed_per_filter_config", {})
                        override = per_route.get("envoy.filters.http.ratelimit", {})
                        if "domain" in override:
                            sent.add(override["domain"])
    rules = load_rules(EXAMPLES)
    assert set(rules.domains) <= sent
    # The upstream-format file answers as upstream does; the tier file uses token buckets.
    assert rules.domains["sidegate"].default_algorithm == "fixed_window"
    assert rules.domains["sidegate_tiers"].default_algorithm == "token_bucket"
