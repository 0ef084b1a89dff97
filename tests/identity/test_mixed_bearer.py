"""JWT and opaque access tokens on one ``Authorization: Bearer`` header, one route.

Real servers on loopback: the JWKS/discovery IdP from ``conftest.py`` and Authlib's RFC 7662
endpoint (``introspection_server.py``), whose ``hits`` count the introspection calls.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from sidegate.common.cache import TTL_JITTER
from sidegate.extauthz.identity import token_shape
from sidegate.extauthz.identity.introspection import IntrospectionVerifier
from sidegate.extauthz.identity.pipeline import IdentityPipeline
from sidegate.extauthz.identity.reachability import unreachable_sources
from sidegate.extauthz.identity.token_shape import MAX_SHAPE_HEADER_CHARS, is_jwt_shaped
from sidegate.extauthz.service import AuthzService
from tests.conftest import REPO_ROOT
from tests.identity.conftest import IdP, SigningKey, check_request
from tests.identity.introspection_server import CLIENT_ID, CLIENT_SECRET, IntrospectionServer
from tests.identity.jwt_helpers import (
    authz_settings,
    b64url,
    denied_header,
    status_of,
    upstream_headers,
)

SECRET_ENV = "SG_TEST_MIXED_INTROSPECTION_SECRET"
MAX_TTL = 30.0


class Clocks:
    """Wall clock (exp checks) and monotonic clock (introspection cache) moved by hand."""

    def __init__(self) -> None:
        import time

        self.base = time.time()
        self.offset = 0.0

    def wall(self) -> float:
        return self.base + self.offset

    def mono(self) -> float:
        return 5000.0 + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def jwt_source(idp: IdP, **extra: Any) -> dict[str, Any]:
    return {
        "name": "corp-jwt",
        "type": "jwt",
        "issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri, "audiences": ["api"]}],
        **extra,
    }


def opaque_source(server: IntrospectionServer, **extra: Any) -> dict[str, Any]:
    return {
        "name": "corp-opaque",
        "type": "introspection",
        "endpoint": server.url,
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "audiences": ["orders-api"],
        "cache": {"max_ttl": MAX_TTL, "negative_ttl": 5},
        **extra,
    }


def identity_config(sources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sources": sources,
        "upstream_headers": {"x-auth-source": "source", "x-user-id": "subject"},
    }


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)


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


async def start(sources: list[dict[str, Any]], clocks: Clocks) -> AuthzService:
    """An AuthzService (shipped policy) whose introspection verifiers run on ``clocks``."""
    from sidegate.extauthz.factory import build_engine

    settings = authz_settings(identity_config(sources))
    verifiers = {
        s.name: IntrospectionVerifier(s, clock=clocks.wall, monotonic=clocks.mono)
        for s in settings.identity.sources
        if s.type == "introspection"
    }
    pipeline = IdentityPipeline(settings.identity, verifiers)
    service = AuthzService(settings, build_engine(settings.policy), pipeline)
    await service.start()
    return service


@pytest.fixture
async def service(
    idp: IdP, server: IntrospectionServer, clocks: Clocks
) -> AsyncIterator[AuthzService]:
    svc = await start([jwt_source(idp), opaque_source(server)], clocks)
    try:
        yield svc
    finally:
        await svc.close()


async def bearer(service: AuthzService, token: str) -> Any:
    return await service.check(check_request(headers={"authorization": f"Bearer {token}"}))


def source_of(response: Any) -> str:
    assert status_of(response) == 200, response
    return upstream_headers(response)["x-auth-source"][0]


async def rejection(service: AuthzService, token: str) -> tuple[str, str]:
    """(source, code) of the single ``identity_rejected`` event of a 401."""
    with structlog.testing.capture_logs() as logs:
        response = await bearer(service, token)
    assert status_of(response) == 401, response
    assert denied_header(response, "www-authenticate").startswith("Bearer ")
    assert token not in str(logs)
    events = [e for e in logs if e["event"] == "identity_rejected"]
    assert len(events) == 1, logs
    return events[0]["source"], events[0]["code"]


# --- the four cases of the issue -----------------------------------------------------------------


async def test_valid_jwt_goes_to_the_jwt_source(
    service: AuthzService, idp: IdP, rsa_key: SigningKey, server: IntrospectionServer
) -> None:
    assert source_of(await bearer(service, rsa_key.sign(idp.claims()))) == "corp-jwt"
    assert server.hits == 0


async def test_valid_opaque_token_goes_to_introspection(
    service: AuthzService, server: IntrospectionServer
) -> None:
    server.issue("opaque-0123456789")
    response = await bearer(service, "opaque-0123456789")
    assert source_of(response) == "corp-opaque"
    assert upstream_headers(response)["x-user-id"][0] == "user-1"
    assert server.hits == 1
    assert server.forms_seen[0]["token"] == "opaque-0123456789"


async def test_revoked_opaque_token_is_refused_within_the_cache_bound(
    service: AuthzService, server: IntrospectionServer, clocks: Clocks
) -> None:
    token = server.issue("opaque-to-revoke")
    assert source_of(await bearer(service, "opaque-to-revoke")) == "corp-opaque"
    token.revoked = True
    # still cached as active (the documented bound is max_ttl, shortened by up to TTL_JITTER so
    # that entries do not expire together); no new call meanwhile
    clocks.advance(MAX_TTL * (1 - TTL_JITTER) - 1)
    assert source_of(await bearer(service, "opaque-to-revoke")) == "corp-opaque"
    assert server.hits == 1
    clocks.advance(MAX_TTL * TTL_JITTER + 1.5)
    assert await rejection(service, "opaque-to-revoke") == ("corp-opaque", "inactive")
    assert server.hits == 2


async def test_tampered_jwt_is_401_without_an_introspection_call(
    service: AuthzService, idp: IdP, rsa_key: SigningKey, server: IntrospectionServer
) -> None:
    header, _, signature = rsa_key.sign(idp.claims()).split(".")
    forged = b64url(json.dumps(idp.claims(sub="admin", roles=["admin"])).encode())
    assert await rejection(service, f"{header}.{forged}.{signature}") == (
        "corp-jwt",
        "bad_signature",
    )
    expired = rsa_key.sign(idp.claims(exp=1, iat=0))
    assert await rejection(service, expired) == ("corp-jwt", "expired")
    alg_none = b64url(b'{"alg":"none"}') + "." + b64url(json.dumps(idp.claims()).encode()) + "."
    assert (await rejection(service, alg_none))[0] == "corp-jwt"
    assert server.hits == 0


# --- more of the claim rules ---------------------------------------------------------------------


async def test_unknown_opaque_token_is_asked_and_refused(
    service: AuthzService, server: IntrospectionServer
) -> None:
    assert await rejection(service, "never-issued") == ("corp-opaque", "inactive")
    # JWE (five segments) and dotted garbage are not JWT-shaped: introspection decides
    assert await rejection(service, "a.b.c.d.e") == ("corp-opaque", "inactive")
    assert server.hits == 2


async def test_jwt_source_alone_still_rejects_non_jwt_tokens(idp: IdP, clocks: Clocks) -> None:
    """No source claims the token: a 401 (malformed) from the JWT source, not 'no credential'."""
    svc = await start([jwt_source(idp)], clocks)
    try:
        assert await rejection(svc, "opaque-abc") == ("corp-jwt", "malformed")
        # and not the anonymous identity on a route that allows anonymous callers
        settings = authz_settings({**identity_config([jwt_source(idp)]), "anonymous": [{}]})
        pipeline = IdentityPipeline(settings.identity)
        from sidegate.extauthz.identity.base import AuthnFailure
        from sidegate.extauthz.request_view import RequestView

        view = RequestView.from_check_request(
            check_request(headers={"authorization": "Bearer opaque-abc"})
        )
        with pytest.raises(AuthnFailure):
            await pipeline.authenticate(view)
    finally:
        await svc.close()


async def test_order_does_not_matter_with_an_opaque_only_introspection_source(
    idp: IdP, rsa_key: SigningKey, server: IntrospectionServer, clocks: Clocks
) -> None:
    svc = await start([opaque_source(server, shape="opaque"), jwt_source(idp)], clocks)
    try:
        server.issue("opaque-first")
        assert source_of(await bearer(svc, "opaque-first")) == "corp-opaque"
        assert source_of(await bearer(svc, rsa_key.sign(idp.claims()))) == "corp-jwt"
        assert server.hits == 1
    finally:
        await svc.close()


async def test_introspection_of_jwts_when_asked_first(
    idp: IdP, rsa_key: SigningKey, server: IntrospectionServer, clocks: Clocks
) -> None:
    """An introspection source with shape any listed first takes every token, JWTs too."""
    svc = await start([opaque_source(server), jwt_source(idp)], clocks)
    try:
        token = rsa_key.sign(idp.claims())
        assert await rejection(svc, token) == ("corp-opaque", "inactive")
        assert server.hits == 1
    finally:
        await svc.close()


async def test_an_unclaimed_token_is_not_rescued_by_another_location(
    idp: IdP, rsa_key: SigningKey, clocks: Clocks
) -> None:
    cookie_source = {**jwt_source(idp), "name": "cookie-jwt", "credential": {"cookie": "s"}}
    svc = await start([jwt_source(idp), cookie_source], clocks)
    try:
        good = rsa_key.sign(idp.claims())
        headers = {"authorization": "Bearer not-a-jwt", "cookie": f"s={good}"}
        request = check_request(headers=headers)
        assert status_of(await svc.check(request)) == 401
        only_cookie = check_request(headers={"cookie": f"s={good}"})
        assert status_of(await svc.check(only_cookie)) == 200
    finally:
        await svc.close()


# --- check-config lint ---------------------------------------------------------------------------


def test_unreachable_sources_are_reported(idp: IdP, server: IntrospectionServer) -> None:
    def warnings(sources: list[dict[str, Any]]) -> list[str]:
        return unreachable_sources(authz_settings(identity_config(sources)).identity)

    assert warnings([jwt_source(idp), opaque_source(server)]) == []
    assert warnings([opaque_source(server, shape="opaque"), jwt_source(idp)]) == []
    dead = warnings([opaque_source(server), jwt_source(idp)])
    assert len(dead) == 1
    assert "sources[1] ('corp-jwt') can never receive a credential" in dead[0]
    assert "'corp-opaque'" in dead[0]
    # two JWT sources on the same header: the second is dead too
    second = {**jwt_source(idp), "name": "jwt-2"}
    assert len(warnings([jwt_source(idp), second])) == 1
    # ... unless route limits or the location tell them apart
    routed = {**second, "routes": {"path_prefixes": ["/v2/"]}}
    assert warnings([{**jwt_source(idp), "routes": {"path_prefixes": ["/v1/"]}}, routed]) == []
    cookie = {**second, "credential": {"cookie": "session"}}
    assert warnings([opaque_source(server), cookie]) == []
    # a bare header location finds every scheme: it shadows a prefixed one on that header
    bare = {**opaque_source(server), "credential": {"header": "Authorization"}}
    assert len(warnings([bare, jwt_source(idp)])) == 1


def test_check_config_prints_the_warning(
    tmp_path: Any, idp: IdP, server: IntrospectionServer, capsys: Any
) -> None:
    import yaml

    from sidegate.cli import main

    config = {
        "authz": {
            "identity": {"sources": [opaque_source(server), jwt_source(idp)]},
            "policy": {"directory": str(REPO_ROOT / "policies")},
        },
        "ratelimit": {"rules_dir": str(REPO_ROOT / "examples" / "ratelimit")},
    }
    path = tmp_path / "sidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check-config", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert "warning" in err and "'corp-jwt') can never receive a credential" in err


# --- the shape test on hostile input -------------------------------------------------------------


def hostile_tokens() -> list[str]:
    return [
        "",
        "opaque",
        "a.b.c",  # header not base64url JSON
        b64url(b'{"typ":"JWT"}') + ".e30.sig",  # no alg
        b64url(b'{"alg":5}') + ".e30.sig",  # alg not a string
        b64url(b'["alg"]') + ".e30.sig",  # not an object
        b64url(b'{"alg":"RS256"}') + "..sig",  # empty payload
        b64url(b'{"alg":"RS256"}') + ".",  # no payload at all
        "." + b64url(b'{"alg":"RS256"}') + ".e30",  # empty header
        "e30+." + "e30.sig",  # header not base64url
        b64url(b'{"alg":"RS256"}') + ".e30.sig.x.y",  # JWE-like
        b64url(b"[" * 3000 + b"]" * 3000) + ".e30.sig",  # deep nesting, over the cap
        b64url(b"[" * 1000 + b"]" * 1000) + ".e30.sig",  # deep nesting, under the cap
        b64url(b'{"alg":"RS256","pad":"' + b"x" * MAX_SHAPE_HEADER_CHARS + b'"}') + ".e30.s",
    ]


def test_shape_of_real_and_odd_tokens(idp: IdP, rsa_key: SigningKey) -> None:
    assert is_jwt_shaped(rsa_key.sign(idp.claims()))
    assert is_jwt_shaped(b64url(b'{"alg":"none"}') + "." + b64url(b"{}") + ".")
    # past a JOSE header it is a JWT: the JWT source judges the rest (never introspection)
    assert is_jwt_shaped(b64url(b'{"alg":"RS256"}') + ".e30.s+g")
    assert is_jwt_shaped(b64url(b'{"alg":"RS256"}') + ".%%%.\u00e9")
    for token in hostile_tokens():
        assert not is_jwt_shaped(token), token


def test_remembered_headers_change_no_answer() -> None:
    """The memo of JOSE headers (token_shape._jose_headers) refuses every hostile token with
    the memo empty, warm, and holding the very header the token carries; it keeps no first
    segment of a token that is not JWT-shaped (it may be part of an opaque secret)."""
    token_shape._jose_headers.clear()
    for _ in range(2):
        for token in hostile_tokens():
            assert not is_jwt_shaped(token), token
    assert token_shape._jose_headers == set()
    good = b64url(b'{"alg":"RS256"}')
    assert is_jwt_shaped(good + ".e30.sig")
    assert token_shape._jose_headers == {good}
    for token in [*hostile_tokens(), good + "..sig", good + ".e30", good + ".e30.sig.", "." + good]:
        assert not is_jwt_shaped(token), token
    for opaque in ["sk.live.0123456789", "c2VjcmV0.c2VjcmV0.c2VjcmV0", "opaque-0123456789"]:
        assert not is_jwt_shaped(opaque)
    assert token_shape._jose_headers == {good}


def test_remembered_headers_fuzz_match_a_cold_memo() -> None:
    """Seeded: mutated tokens answer the same with the memo warm (every header already seen)
    as with it empty; the memo never outgrows its bound."""
    rng = random.Random(4242)
    bases = [
        b64url(header) + "." + b64url(b'{"sub":"x"}') + ".c2ln"
        for header in (b'{"alg":"RS256","kid":"k"}', b'{"alg":"ES256"}', b'{"alg":"none"}')
    ]
    alphabet = "ABCxyz019-_.=+/ {}\"\x00\u00ff"
    candidates = []
    for _ in range(2000):
        chars = list(rng.choice(bases))
        for _ in range(rng.randint(0, 4)):
            position = rng.randrange(len(chars))
            if rng.random() < 0.5:
                chars[position] = rng.choice(alphabet)
            else:
                chars.insert(position, rng.choice(alphabet))
        candidates.append("".join(chars))
    cold = []
    for candidate in candidates:
        token_shape._jose_headers.clear()
        cold.append(is_jwt_shaped(candidate))
    for candidate in candidates:
        is_jwt_shaped(candidate)  # warm: every JWT-shaped header is remembered
    warm = [is_jwt_shaped(candidate) for candidate in candidates]
    assert warm == cold
    assert any(cold) and not all(cold)
    assert len(token_shape._jose_headers) <= token_shape.MAX_REMEMBERED_HEADERS


def test_remembered_headers_are_bounded() -> None:
    token_shape._jose_headers.clear()
    for i in range(3 * token_shape.MAX_REMEMBERED_HEADERS):
        header = b64url(json.dumps({"alg": "RS256", "kid": f"k{i}"}).encode())
        assert is_jwt_shaped(header + ".e30.sig")
        assert len(token_shape._jose_headers) <= token_shape.MAX_REMEMBERED_HEADERS
        assert header in token_shape._jose_headers


def test_shape_fuzz_never_raises() -> None:
    """Seeded, bounded fuzzing: mutations of a JWT-like string and random byte soup."""
    rng = random.Random(1309)
    base = b64url(b'{"alg":"RS256","kid":"k"}') + "." + b64url(b'{"sub":"x"}') + ".c2ln"
    alphabet = "ABCxyz019-_.=+/ {}\"\x00\u00ff\u2028"
    for _ in range(3000):
        chars = list(base)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.4:
                chars[position] = rng.choice(alphabet)
            elif action < 0.7:
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        candidate = "".join(chars)
        result = is_jwt_shaped(candidate)
        assert isinstance(result, bool)
        if result:
            assert candidate.count(".") == 2
    for _ in range(500):
        soup = "".join(chr(rng.randrange(0x20, 0x250)) for _ in range(rng.randint(0, 200)))
        assert isinstance(is_jwt_shaped(soup), bool)
    # a megabyte token with two dots is refused by the header cap without decoding it
    assert not is_jwt_shaped("A" * 1_000_000 + ".e30.sig")
    assert is_jwt_shaped(b64url(b'{"alg":"RS256"}') + "." + "A" * 1_000_000 + ".sig")
