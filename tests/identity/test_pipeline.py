"""The identity pipeline through AuthzService.check() with real CheckRequests: source order,
route limits, anonymous routes, no fall-through, upstream headers, spoofing, credential strip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidegate.extauthz.factory import build_authenticator
from sidegate.extauthz.identity.base import AnonymousAuthenticator
from sidegate.extauthz.identity.pipeline import IdentityPipeline
from sidegate.extauthz.service import AuthzService
from tests.identity.conftest import IdP, SigningKey, check_request
from tests.identity.jwt_helpers import (
    authz_settings,
    denied_header,
    metadata,
    start_service,
    status_of,
    upstream_headers,
)


def jwt_source(idp: IdP, name: str = "idp", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "jwt",
        "issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri, "audiences": ["api"]}],
        **extra,
    }


BASE: dict[str, Any] = {
    "anonymous": [
        {"context_extensions": {"auth": "anonymous"}},
        {"path_prefixes": ["/public/"]},
    ],
    "upstream_headers": {
        "X-User-Id": "subject",
        "x-user-roles": "roles",
        "x-consumer-tier": "tier",
        "x-user-email": "claim:email",
    },
    "realm": "api.example.com",
}


@pytest.fixture
async def service(idp: IdP) -> AsyncIterator[AuthzService]:
    svc = await start_service(
        {
            **BASE,
            "sources": [
                jwt_source(idp, "header"),
                jwt_source(
                    idp,
                    "cookie",
                    credential={"cookie": "session"},
                    routes={"hosts": ["*.example.com"], "path_prefixes": ["/app"]},
                ),
                jwt_source(
                    idp,
                    "query",
                    credential={"query": "access_token"},
                    routes={"context_extensions": {"auth": "query-ok"}},
                ),
            ],
        }
    )
    try:
        yield svc
    finally:
        await svc.close()


async def check(service: AuthzService, path: str = "/hello", **kwargs: Any) -> Any:
    return await service.check(check_request(path, **kwargs))


async def test_no_credential_is_401_without_error_code(service: AuthzService) -> None:
    response = await check(service)
    assert status_of(response) == 401
    assert denied_header(response, "www-authenticate") == 'Bearer realm="api.example.com"'


async def test_other_auth_scheme_is_no_credential(service: AuthzService) -> None:
    response = await check(service, headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert status_of(response) == 401
    assert denied_header(response, "www-authenticate") == 'Bearer realm="api.example.com"'


async def test_empty_bearer_is_an_invalid_credential(service: AuthzService) -> None:
    response = await check(service, headers={"authorization": "Bearer "})
    assert status_of(response) == 401
    assert 'error="invalid_token"' in denied_header(response, "www-authenticate")


async def test_bad_token_is_401_with_realm_and_reason(service: AuthzService) -> None:
    response = await check(service, headers={"authorization": "Bearer not.a.jwt"})
    assert denied_header(response, "www-authenticate") == (
        'Bearer realm="api.example.com", error="invalid_token", '
        'error_description="invalid token"'
    )


async def test_valid_token_headers_metadata_and_spoofing(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(idp.claims(tier="premium", email="u@example.com"))
    response = await check(
        service,
        headers={
            "authorization": f"bearer {token}",  # scheme is case-insensitive
            "x-user-id": "admin",
            "x-user-roles": "admin",
        },
    )
    assert status_of(response) == 200
    headers = upstream_headers(response)
    assert headers["x-user-id"] == ("user-1", False)
    assert headers["x-consumer-tier"] == ("premium", False)
    assert headers["x-user-email"] == ("u@example.com", False)
    # no roles in the token: the client's x-user-roles must not survive
    assert "x-user-roles" not in headers
    removed = list(response.ok_response.headers_to_remove)
    assert "x-user-roles" in removed
    # a header we set is never also removed (Envoy removes after setting)
    assert "x-user-id" not in removed
    assert "authorization" not in removed
    meta = metadata(response)
    assert (meta["tier"], meta["consumer"]) == ("premium", "user-1")


async def test_no_fall_through_to_a_later_source(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    good = rsa_key.sign(idp.claims())
    response = await check(
        service,
        "/app/x?access_token=" + good,
        headers={"authorization": "Bearer broken", "cookie": f"session={good}"},
        context_extensions={"auth": "query-ok"},
    )
    assert status_of(response) == 401


async def test_route_limited_sources(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    good = rsa_key.sign(idp.claims())
    cookie = {"cookie": f"theme=dark; session={good}"}
    assert status_of(await check(service, "/app/page", headers=cookie)) == 200
    # the cookie source covers only /app on *.example.com
    assert status_of(await check(service, "/other", headers=cookie)) == 401
    assert status_of(await check(service, "/app/page", headers=cookie, host="evil.test")) == 401
    assert status_of(await check(service, "/application", headers=cookie)) == 401
    # the query source only where the route says so
    assert status_of(await check(service, f"/q?access_token={good}")) == 401
    ok = await check(service, f"/q?access_token={good}", context_extensions={"auth": "query-ok"})
    assert status_of(ok) == 200


async def test_anonymous_routes(service: AuthzService) -> None:
    response = await check(service, "/x", context_extensions={"auth": "anonymous"})
    assert status_of(response) == 200
    assert metadata(response)["consumer"] == "anonymous"
    assert "x-user-id" in response.ok_response.headers_to_remove
    assert status_of(await check(service, "/public/logo.png")) == 200
    assert status_of(await check(service, "/public")) == 401
    # dot segments do not escape the anonymous prefix
    assert status_of(await check(service, "/public/../admin")) == 401
    assert status_of(await check(service, "/public/%2e%2e/admin")) == 401


async def test_anonymous_route_still_verifies_a_presented_token(service: AuthzService) -> None:
    response = await check(
        service, "/public/x", headers={"authorization": "Bearer forged.token.here"}
    )
    assert status_of(response) == 401


async def test_policy_sees_identity(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    admin = rsa_key.sign(idp.claims(roles=["admin"]))
    user = rsa_key.sign(idp.claims(roles=["user"]))
    for token, status in ((admin, 200), (user, 403)):
        response = await check(service, "/admin", headers={"authorization": f"Bearer {token}"})
        assert status_of(response) == status


@pytest.mark.parametrize(
    ("credential", "where"),
    [
        ({"header": "authorization", "prefix": "Bearer "}, "header"),
        ({"header": "x-token"}, "plain-header"),
        ({"cookie": "session"}, "cookie"),
        ({"query": "access_token"}, "query"),
    ],
)
async def test_strip_credential(
    idp: IdP, rsa_key: SigningKey, credential: dict[str, str], where: str
) -> None:
    token = rsa_key.sign(idp.claims())
    svc = await start_service(
        {"strip_credential": True, "sources": [jwt_source(idp, credential=credential)]}
    )
    path, headers = "/hello", {}
    if where == "header":
        headers = {"authorization": f"Bearer {token}"}
    elif where == "plain-header":
        headers = {"x-token": token}
    elif where == "cookie":
        headers = {"cookie": f"a=1; session={token}; b=2"}
    else:
        path = f"/hello?x=1&access_token={token}"
    try:
        response = await check(svc, path, headers=headers)
    finally:
        await svc.close()
    assert status_of(response) == 200
    ok = response.ok_response
    if where == "header":
        assert "authorization" in ok.headers_to_remove
    elif where == "plain-header":
        assert "x-token" in ok.headers_to_remove
    elif where == "cookie":
        assert upstream_headers(response)["cookie"] == ("a=1; b=2", False)
    else:
        assert list(ok.query_parameters_to_remove) == ["access_token"]


def test_factory_picks_the_pipeline_only_when_sources_exist(idp: IdP) -> None:
    assert isinstance(build_authenticator(authz_settings({})), AnonymousAuthenticator)
    pipeline = build_authenticator(authz_settings({"sources": [jwt_source(idp)]}))
    assert isinstance(pipeline, IdentityPipeline)


@pytest.mark.parametrize(
    "bad",
    [
        {"upstream_headers": {"x-a": "password"}},
        {"upstream_headers": {":path": "subject"}},
        {"realm": 'a"b'},
        {"sources": [{"name": "a", "type": "nope"}]},
        {"sources": [{"name": "a", "type": "jwt", "issuers": []}]},
        {"sources": [{"name": "a", "type": "jwt", "credential": {"query": "q", "cookie": "c"},
                      "issuers": [{"issuer": "i", "discovery": True}]}]},
    ],
)
def test_bad_identity_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        authz_settings(bad)


def test_duplicate_source_names_rejected(idp: IdP) -> None:
    with pytest.raises(ValueError, match="unique"):
        authz_settings({"sources": [jwt_source(idp), jwt_source(idp)]})


async def test_verification_metrics(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    from prometheus_client import REGISTRY

    def count(source: str, outcome: str, reason: str) -> float:
        labels = {"source": source, "outcome": outcome, "reason": reason}
        return REGISTRY.get_sample_value("sidegate_identity_verifications_total", labels) or 0.0

    before = (
        count("header", "ok", "ok"),
        count("header", "rejected", "malformed"),
        count("-", "missing", "no_credential"),
        count("-", "anonymous", "no_credential"),
    )
    await check(service, headers={"authorization": f"Bearer {rsa_key.sign(idp.claims())}"})
    await check(service, headers={"authorization": "Bearer garbage"})
    await check(service)
    await check(service, "/public/x")
    after = (
        count("header", "ok", "ok"),
        count("header", "rejected", "malformed"),
        count("-", "missing", "no_credential"),
        count("-", "anonymous", "no_credential"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]


async def test_check_metrics_count_every_call(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    """The hot-path metrics keep their labelled children (common/metric_children.py): each
    call still moves exactly its series by one, the first call of a label set and the later."""
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    def counts() -> list[float]:
        return [
            sample("sidegate_authz_checks_total", outcome="allowed"),
            sample("sidegate_authz_checks_total", outcome="unauthenticated"),
            sample("sidegate_authz_check_seconds_count", outcome="allowed"),
            sample("sidegate_authz_check_seconds_count", outcome="unauthenticated"),
            sample("sidegate_policy_decisions_total", result="allow", dry_run="false"),
            sample("sidegate_identity_verifications_total", source="header", outcome="ok",
                   reason="ok"),
            sample("sidegate_identity_cache_lookups_total", cache="header", result="miss"),
            sample("sidegate_identity_cache_lookups_total", cache="header", result="hit"),
        ]

    token = rsa_key.sign(idp.claims())
    for round_ in range(2):
        before = counts()
        for _ in range(3):  # one miss, then hits (the token cache is on by default)
            response = await check(service, headers={"authorization": f"Bearer {token}"})
            assert status_of(response) == 200
        assert status_of(await check(service)) == 401
        delta = [a - b for a, b in zip(counts(), before, strict=True)]
        miss, hit = (1, 2) if round_ == 0 else (0, 3)
        assert delta == [3, 1, 3, 1, 3, 3, miss, hit]
