"""OAuth2 token introspection against Authlib's RFC 7662 endpoint on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY

from sidegate.extauthz.identity.base import AuthnFailure, failure_code
from sidegate.extauthz.identity.breaker import BreakerState
from sidegate.extauthz.identity.introspection import (
    IntrospectionConfigError,
    IntrospectionVerifier,
    endpoint_label,
)
from sidegate.extauthz.identity.introspection_settings import IntrospectionSourceSettings
from tests.identity.introspection_server import CLIENT_ID, CLIENT_SECRET, IntrospectionServer
from tests.identity.test_api_keys import make_view

SECRET_ENV = "SG_TEST_INTROSPECTION_SECRET"


class Clocks:
    """Wall clock (exp/nbf checks) and monotonic clock (cache, breaker) under test control."""

    def __init__(self) -> None:
        self.base = time.time()
        self.offset = 0.0

    def wall(self) -> float:
        return self.base + self.offset

    def mono(self) -> float:
        return 1000.0 + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
async def server() -> AsyncIterator[IntrospectionServer]:
    srv = IntrospectionServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)


def settings(server: IntrospectionServer, **overrides: Any) -> IntrospectionSourceSettings:
    data: dict[str, Any] = {
        "type": "introspection",
        "name": "oauth",
        "endpoint": server.url,
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "timeout": 1.0,
        "audiences": ["orders-api"],
        "issuer": "https://as.example.test",
    }
    data.update(overrides)
    return IntrospectionSourceSettings.model_validate(data)


@pytest.fixture
async def make_verifier(server: IntrospectionServer, clocks: Clocks) -> AsyncIterator[Any]:
    made: list[IntrospectionVerifier] = []

    async def make(**overrides: Any) -> IntrospectionVerifier:
        v = IntrospectionVerifier(
            settings(server, **overrides), clock=clocks.wall, monotonic=clocks.mono
        )
        await v.start()
        made.append(v)
        return v

    yield make
    for v in made:
        await v.close()


VIEW = make_view({"authorization": "Bearer x"})


async def reject(v: IntrospectionVerifier, token: str) -> AuthnFailure:
    with pytest.raises(AuthnFailure) as caught:
        await v.verify(token, VIEW)
    return caught.value


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- answers of a healthy server ----------------------------------------------------------------


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_active_token_becomes_an_identity(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any, auth_method: str
) -> None:
    server.issue(
        "tok-active",
        expires_at=int(clocks.wall()) + 600,
        scope="orders:read orders:write",
        extra={"tier": "premium", "groups": ["admin", "ops"]},
    )
    v = await make_verifier(auth_method=auth_method, tier_claim="tier", roles_claim="groups")
    identity = await v.verify("tok-active", VIEW)
    assert identity.method == "introspection"
    assert identity.source == "oauth"
    assert identity.subject == "user-1"
    assert identity.consumer == "orders-app"  # consumer_claim defaults to client_id
    assert identity.tier == "premium"
    assert identity.roles == ("admin", "ops")
    assert identity.scopes == ("orders:read", "orders:write")
    assert identity.claims["username"] == "alice"
    assert server.auth_methods_seen == [auth_method]
    assert server.forms_seen[0]["token_type_hint"] == "access_token"
    assert ("client_secret" in server.forms_seen[0]) == (auth_method == "client_secret_post")


async def test_subject_falls_back_to_client_id(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-client", sub="", username="")
    v = await make_verifier(default_tier="basic")
    identity = await v.verify("tok-client", VIEW)
    assert (identity.subject, identity.consumer, identity.tier) == (
        "orders-app",
        "orders-app",
        "basic",
    )


async def test_inactive_and_unknown_tokens_are_401(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-revoked", revoked=True)
    v = await make_verifier()
    for token in ("tok-revoked", "tok-never-issued"):
        failure = await reject(v, token)
        assert failure.kind == "unauthenticated"
        assert failure.reason == "token not active"
        assert failure_code(failure) == "inactive"
        assert failure.scheme == "Bearer"


async def test_expired_but_claimed_active_is_rejected(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any
) -> None:
    server.issue("tok-stale", expires_at=int(clocks.wall()) - 120, claims_active=True)
    v = await make_verifier()
    failure = await reject(v, "tok-stale")
    assert failure.kind == "unauthenticated"
    assert "exp in the past" in failure.reason
    # it is not cached as valid either: the next call asks again
    await reject(v, "tok-stale")
    assert server.hits == 2


async def test_leeway_tolerates_small_skew(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any
) -> None:
    server.issue("tok-skew", expires_at=int(clocks.wall()) - 5, claims_active=True)
    v = await make_verifier(leeway=30)
    assert (await v.verify("tok-skew", VIEW)).subject == "user-1"


async def test_not_yet_valid_token_is_rejected(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any
) -> None:
    server.issue("tok-future", nbf=int(clocks.wall()) + 300)
    v = await make_verifier()
    assert "nbf" in (await reject(v, "tok-future")).reason


@pytest.mark.parametrize(
    ("token_fields", "overrides", "reason"),
    [
        ({"aud": "billing-api"}, {}, "audience not accepted"),
        ({"aud": ["billing-api", "x"]}, {}, "audience not accepted"),
        ({"iss": "https://evil.example"}, {}, "issuer not accepted"),
        ({"scope": "orders:read"}, {"required_scopes": ["orders:write"]}, "missing required"),
        ({"token_type": "refresh_token"}, {}, "token_type refresh_token not accepted"),
    ],
)
async def test_own_checks(
    server: IntrospectionServer,
    make_verifier: Any,
    token_fields: dict[str, Any],
    overrides: dict[str, Any],
    reason: str,
) -> None:
    server.issue("tok-check", **token_fields)
    v = await make_verifier(**overrides)
    failure = await reject(v, "tok-check")
    assert failure.kind == "unauthenticated"
    assert reason in failure.reason


async def test_missing_scope_says_insufficient_scope(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-scope", scope="orders:read")
    v = await make_verifier(required_scopes=["orders:read", "orders:admin"])
    failure = await reject(v, "tok-scope")
    assert failure.error == "insufficient_scope"
    assert "orders:admin" in failure.reason
    server.issue("tok-scope-ok", scope="orders:admin orders:read")
    assert (await v.verify("tok-scope-ok", VIEW)).scopes == ("orders:admin", "orders:read")


async def test_audience_list_matching_any_is_accepted(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-aud", aud=["billing-api", "orders-api"])
    v = await make_verifier()
    assert (await v.verify("tok-aud", VIEW)).subject == "user-1"


# --- outages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("error500", "status"),
        ("timeout", "timeout"),
        ("not_json", "not_json"),
        ("no_active", "bad_response"),
        ("huge", "bad_response"),
    ],
)
async def test_server_failures_are_outages_and_never_cached(
    server: IntrospectionServer, make_verifier: Any, mode: str, cause: str
) -> None:
    server.issue("tok-ok")
    server.mode = mode  # type: ignore[assignment]
    server.timeout_sleep = 1.0
    v = await make_verifier(timeout=0.2)
    before = metric(
        "sidegate_identity_introspection_failures_total", endpoint=v.endpoint, cause=cause
    )
    failure = await reject(v, "tok-ok")
    assert failure.kind == "unavailable"
    assert cause in failure.reason
    assert failure_code(failure) == cause
    assert (
        metric("sidegate_identity_introspection_failures_total", endpoint=v.endpoint, cause=cause)
        == before + 1
    )
    server.mode = "ok"
    assert (await v.verify("tok-ok", VIEW)).subject == "user-1"
    assert server.hits == 2


async def test_wrong_client_secret_is_an_outage_not_a_bad_token(
    server: IntrospectionServer, make_verifier: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    server.issue("tok-ok")
    v = await make_verifier()
    failure = await reject(v, "tok-ok")
    assert failure.kind == "unavailable"
    assert "HTTP 401" in failure.reason


async def test_connection_refused_is_an_outage(clocks: Clocks, monkeypatch: Any) -> None:
    from tests.conftest import free_port

    v = IntrospectionVerifier(
        IntrospectionSourceSettings.model_validate(
            {
                "type": "introspection",
                "name": "oauth",
                "endpoint": f"http://127.0.0.1:{free_port()}/introspect",
                "client_id": CLIENT_ID,
                "client_secret_env": SECRET_ENV,
            }
        ),
        clock=clocks.wall,
        monotonic=clocks.mono,
    )
    try:
        failure = await reject(v, "tok")
        assert failure.kind == "unavailable" and "connection" in failure.reason
    finally:
        await v.close()


def test_unset_secret_variable_fails_at_build(
    server: IntrospectionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(IntrospectionConfigError, match=SECRET_ENV):
        IntrospectionVerifier(settings(server))


# --- caching ------------------------------------------------------------------------------------


async def test_concurrent_requests_for_a_new_token_make_one_call(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-burst")
    server.delay = 0.05
    v = await make_verifier()
    results = await asyncio.gather(*(v.verify("tok-burst", VIEW) for _ in range(100)))
    assert {r.subject for r in results} == {"user-1"}
    assert server.hits == 1
    await v.verify("tok-burst", VIEW)
    assert server.hits == 1


async def test_concurrent_failures_are_shared_and_not_cached(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-burst")
    server.mode = "error500"
    server.delay = 0.05
    v = await make_verifier()
    outcomes = await asyncio.gather(
        *(v.verify("tok-burst", VIEW) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(o, AuthnFailure) and o.kind == "unavailable" for o in outcomes)
    assert server.hits == 1


async def test_revoked_token_stops_working_within_positive_ttl(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any
) -> None:
    token = server.issue("tok-revoke")
    v = await make_verifier(cache={"max_ttl": 30, "negative_ttl": 10})
    await v.verify("tok-revoke", VIEW)
    token.revoked = True
    # The positive TTL is jittered down by up to 20 % (no synchronised expiry), never up.
    clocks.advance(23)
    await v.verify("tok-revoke", VIEW)  # still cached: within the staleness bound
    assert server.hits == 1
    clocks.advance(7.5)  # past max_ttl: asked again whatever the jitter
    assert (await reject(v, "tok-revoke")).reason == "token not active"
    assert server.hits == 2
    # the inactive answer is cached for negative_ttl, then asked again
    clocks.advance(9)
    await reject(v, "tok-revoke")
    assert server.hits == 2
    clocks.advance(1.5)
    await reject(v, "tok-revoke")
    assert server.hits == 3


async def test_positive_ttl_never_outlives_exp(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any
) -> None:
    server.issue("tok-short", expires_at=int(clocks.wall()) + 5)
    v = await make_verifier(cache={"max_ttl": 300})
    await v.verify("tok-short", VIEW)
    clocks.advance(4)
    await v.verify("tok-short", VIEW)
    assert server.hits == 1
    clocks.advance(2)  # past exp: the entry is gone and the token itself is now expired
    failure = await reject(v, "tok-short")
    assert server.hits == 2
    assert "exp" in failure.reason or failure.reason == "token not active"


async def test_cache_is_bounded(server: IntrospectionServer, make_verifier: Any) -> None:
    v = await make_verifier(cache={"max_entries": 3})
    for i in range(5):
        server.issue(f"tok-{i}")
        await v.verify(f"tok-{i}", VIEW)
    assert len(v._cache) == 3
    await v.verify("tok-0", VIEW)  # evicted, so asked again
    assert server.hits == 6


# --- circuit breaker ----------------------------------------------------------------------------


async def test_breaker_opens_fails_fast_then_probe_closes_it(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any
) -> None:
    server.issue("tok-a")
    server.mode = "error500"
    v = await make_verifier(breaker={"failure_threshold": 3, "cool_off": 20})
    state = "sidegate_identity_breaker_state"
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            await reject(v, "tok-a")
        assert v.breaker.state is BreakerState.OPEN
        assert metric(state, endpoint=v.endpoint) == 1
        assert server.hits == 3
        # open: fail fast, no call
        failure = await reject(v, "tok-a")
        assert failure.kind == "unavailable" and "circuit open" in failure.reason
        assert failure_code(failure) == "circuit_open"
        assert server.hits == 3
        # after the cool-off one probe goes out; it fails, the breaker opens again
        clocks.advance(20)
        await reject(v, "tok-a")
        assert server.hits == 4
        assert v.breaker.state is BreakerState.OPEN
        await reject(v, "tok-a")
        assert server.hits == 4
        # the next probe succeeds and closes it
        server.mode = "ok"
        clocks.advance(20)
        assert (await v.verify("tok-a", VIEW)).subject == "user-1"
        assert v.breaker.state is BreakerState.CLOSED
        assert metric(state, endpoint=v.endpoint) == 0
    events = [e["event"] for e in logs if e["event"].startswith("circuit breaker")]
    assert events == [
        "circuit breaker open",
        "circuit breaker half-open",
        "circuit breaker open",
        "circuit breaker half-open",
        "circuit breaker closed",
    ]


async def test_half_open_admits_a_single_probe(
    server: IntrospectionServer, clocks: Clocks, make_verifier: Any
) -> None:
    server.mode = "error500"
    v = await make_verifier(breaker={"failure_threshold": 1, "cool_off": 5})
    await reject(v, "tok-x")
    clocks.advance(5)
    server.mode = "ok"
    server.delay = 0.05
    for name in ("tok-p1", "tok-p2", "tok-p3"):
        server.issue(name)
    outcomes = await asyncio.gather(
        *(v.verify(t, VIEW) for t in ("tok-p1", "tok-p2", "tok-p3")), return_exceptions=True
    )
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, AuthnFailure)]
    assert len(admitted) == 1 and len(refused) == 2
    assert all("circuit open" in f.reason for f in refused)
    assert v.breaker.state is BreakerState.CLOSED


# --- secrets stay secret ------------------------------------------------------------------------


async def test_tokens_and_client_secret_never_reach_logs_or_metrics(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-secret-value-123")
    v = await make_verifier(breaker={"failure_threshold": 1, "cool_off": 5})
    with structlog.testing.capture_logs() as logs:
        await v.verify("tok-secret-value-123", VIEW)
        await reject(v, "tok-unknown-value-456")
        server.mode = "error500"
        await reject(v, "tok-failing-value-789")
        await reject(v, "tok-failing-value-789")
    failures: list[str] = []
    for token in ("tok-unknown-value-456", "tok-failing-value-789"):
        failures.append((await reject(v, token)).reason)
    text = repr(logs) + repr(failures)
    from prometheus_client import generate_latest

    text += generate_latest(REGISTRY).decode()
    for secret in ("tok-secret-value-123", "tok-unknown-value-456", "tok-failing", CLIENT_SECRET):
        assert secret not in text
    assert logs, "the failure and the breaker transition were logged"


def test_endpoint_label_drops_userinfo_and_query() -> None:
    assert endpoint_label("https://u:p@as.example:8443/o/introspect") == (
        "https://as.example:8443/o/introspect"
    )


async def test_configured_through_the_identity_pipeline(server: IntrospectionServer) -> None:
    from sidegate.extauthz.identity.pipeline import IdentityPipeline
    from sidegate.extauthz.identity.settings import IdentitySettings

    server.issue("tok-pipe", extra={"plan": "premium"})
    config = {
        "sources": [
            {
                "name": "opaque",
                "type": "introspection",
                "endpoint": server.url,
                "client_id": CLIENT_ID,
                "client_secret_env": SECRET_ENV,
                "auth_method": "client_secret_post",
                "tier_claim": "plan",
            }
        ]
    }
    pipeline = IdentityPipeline(IdentitySettings.model_validate(config))
    await pipeline.start()
    try:
        identity = await pipeline.authenticate(make_view({"authorization": "Bearer tok-pipe"}))
        assert (identity.source, identity.tier, identity.consumer) == (
            "opaque",
            "premium",
            "orders-app",
        )
        with pytest.raises(AuthnFailure) as caught:
            await pipeline.authenticate(make_view({"authorization": "Bearer tok-nope"}))
        assert caught.value.scheme == "Bearer" and caught.value.kind == "unauthenticated"
    finally:
        await pipeline.close()
