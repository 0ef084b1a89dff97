"""The shipped examples/ratelimit answer as the Envoy demo and the lead's e2e tests expect."""

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


@pytest.mark.parametrize("domain", ["sidegate", "sidegate_tiers"])
@pytest.mark.parametrize(("tier", "quota"),
                         [("free", 5), ("premium", 20), ("default", 10), ("unheard-of", 10)])
async def test_tier_quotas(make_service: ServiceFactory, domain: str, tier: str,
                           quota: int) -> None:
    service = await make_service(example_files())
    req = request(domain, [("tier", tier), ("consumer", "alice")])
    assert await admitted(service, req, quota + 3) == quota
    # Per consumer: bob has his own bucket.
    bob = request(domain, [("tier", tier), ("consumer", "bob")])
    assert await admitted(service, bob, 1) == 1


async def test_limited_route(make_service: ServiceFactory) -> None:
    service = await make_service(example_files())
    req = request("sidegate", [("generic_key", "limited")])
    assert await admitted(service, req, 6) == 3


async def test_enterprise_is_unlimited(make_service: ServiceFactory) -> None:
    service = await make_service(example_files())
    req = request("sidegate_tiers", [("tier", "enterprise"), ("consumer", "big")])
    assert await admitted(service, req, 50) == 50

