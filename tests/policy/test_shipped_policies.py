"""The shipped policies in policies/, through the Check service on both engines.

Their Rego unit tests run in test_policy_cli.py; here they answer real CheckRequests with a
verified identity, as a route selecting them through context_extensions would.
"""

from __future__ import annotations

import json

import pytest

from sidegate.extauthz.identity.base import AnonymousAuthenticator, Identity
from tests.policy.conftest import REPO_POLICIES
from tests.policy.helpers import check_request, headers_of, status_of


class FixedIdentity(AnonymousAuthenticator):
    """Every caller is the given identity (the identity stage is tested in tests/identity)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def authenticate(self, view):
        return self.identity


def user(subject: str = "u-1", *, roles=(), scopes=(), tier: str = "default") -> Identity:
    return Identity(
        method="jwt", subject=subject, consumer=subject, tier=tier, roles=roles, scopes=scopes
    )


async def service_as(make_service, identity: Identity | None):
    authenticator = FixedIdentity(identity) if identity else None
    return await make_service(
        directory=REPO_POLICIES, default_path="envoy/authz/allow", authenticator=authenticator
    )


@pytest.mark.parametrize(
    ("path", "roles", "expected"),
    [
        ("/hello", (), 200),
        ("/deny", (), 403),
        ("/deny/x", ("admin",), 403),
        ("//admin", (), 403),
        ("/admin/panel", ("admin",), 200),
        ("/admin/panel", ("user",), 403),
    ],
)
async def test_default_policy(make_service, path, roles, expected):
    service = await service_as(make_service, user(roles=roles))
    assert status_of(await service.check(check_request(path))) == expected


async def test_rbac_decision(make_service):
    anonymous = await service_as(make_service, None)
    response = await anonymous.check(check_request("/orders", policy="rbac/decision"))
    assert status_of(response) == 401
    assert ("www-authenticate", "Bearer", False) in headers_of(response.denied_response.headers)
    assert json.loads(response.denied_response.body) == {"error": "unauthenticated"}

    viewer = await service_as(make_service, user(roles=("viewer",)))
    assert status_of(await viewer.check(check_request("/orders/1", policy="rbac/decision"))) == 200
    response = await viewer.check(check_request("/orders", method="POST", policy="rbac/decision"))
    assert status_of(response) == 403

    writer = await service_as(make_service, user(scopes=("orders:write",)))
    request = check_request("/orders", method="POST", policy="rbac/decision")
    assert status_of(await writer.check(request)) == 200


async def test_owner_access(make_service):
    owner = await service_as(make_service, user("u-1"))
    assert status_of(await owner.check(check_request("/users/u-1", policy="owner/allow"))) == 200
    assert status_of(await owner.check(check_request("/users/u-2", policy="owner/allow"))) == 403
    admin = await service_as(make_service, user("root", roles=("admin",)))
    assert status_of(await admin.check(check_request("/users/u-2", policy="owner/allow"))) == 200


async def test_tier_gating(make_service):
    basic = await service_as(make_service, user(tier="default"))
    response = await basic.check(check_request("/premium/charts", policy="tiers/decision"))
    assert status_of(response) == 403
    assert ("x-required-tier", "premium", False) in headers_of(response.denied_response.headers)
    premium = await service_as(make_service, user(tier="premium"))
    response = await premium.check(check_request("/premium/charts", policy="tiers/decision"))
    assert status_of(response) == 200


async def test_custom_problem_responses(make_service):
    anonymous = await service_as(make_service, None)
    response = await anonymous.check(check_request("/orders", policy="responses/decision"))
    assert status_of(response) == 401
    assert json.loads(response.denied_response.body)["title"] == "Unauthorized"

    member = await service_as(make_service, user(roles=("user",)))
    response = await member.check(check_request("/billing/x", policy="responses/decision"))
    assert status_of(response) == 403
    assert json.loads(response.denied_response.body)["detail"] == "Missing role: billing."

    billing = await service_as(make_service, user(roles=("billing",)))
    response = await billing.check(check_request("/billing/x", policy="responses/decision"))
    assert status_of(response) == 200
    assert headers_of(response.ok_response.response_headers_to_add) == [
        ("cache-control", "private, no-store", False)
    ]
