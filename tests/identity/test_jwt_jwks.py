"""JWKS caching against a real IdP on loopback: rotation, unknown-kid cooldown and
single-flight (counted on the IdP), TTL refresh, stale keys while the IdP is down, 503 when
no keys were ever obtained. The key-set clock is a FakeClock: no sleeping, no timing asserts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web

from sidegate.extauthz.identity import metrics
from sidegate.extauthz.identity.base import AuthnFailure
from sidegate.extauthz.identity.jwt import JwtVerifier
from sidegate.extauthz.identity.jwt_settings import JwtSourceSettings
from sidegate.extauthz.service import AuthzService
from tests.conftest import free_port
from tests.identity.conftest import FakeClock, IdP, SigningKey, check_request, new_key
from tests.identity.jwt_helpers import start_service, status_of


def source(idp: IdP, **jwks: Any) -> JwtSourceSettings:
    return JwtSourceSettings.model_validate(
        {
            "name": "idp",
            "type": "jwt",
            "token_cache": False,
            "issuers": [
                {
                    "issuer": idp.issuer,
                    "discovery": True,
                    "audiences": ["api"],
                    "jwks": {"cooldown_seconds": 30, "ttl_seconds": 600, **jwks},
                }
            ],
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
async def verifier(idp: IdP, clock: FakeClock) -> AsyncIterator[JwtVerifier]:
    v = JwtVerifier(source(idp), monotonic=clock)
    await v.start()
    try:
        yield v
    finally:
        await v.close()


async def verify(verifier: JwtVerifier, token: str) -> Any:
    return await verifier.verify(token, None)  # type: ignore[arg-type]


async def rejection(verifier: JwtVerifier, token: str) -> AuthnFailure:
    with pytest.raises(AuthnFailure) as info:
        await verify(verifier, token)
    return info.value


def keyset(verifier: JwtVerifier) -> Any:
    (issuer,) = verifier.issuers.values()
    return issuer.keys


async def test_startup_fetch_uses_discovery(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey
) -> None:
    assert (await verify(verifier, rsa_key.sign(idp.claims()))).subject == "user-1"
    assert idp.hits == {"discovery": 1, "jwks": 1}
    for _ in range(5):
        await verify(verifier, rsa_key.sign(idp.claims()))
    assert idp.hits == {"discovery": 1, "jwks": 1}


async def test_rotation_new_key_verifies_after_one_refetch(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey, rsa_key_2: SigningKey, clock: FakeClock
) -> None:
    await verify(verifier, rsa_key.sign(idp.claims()))
    assert idp.hits["jwks"] == 1
    idp.keys = [rsa_key_2]
    clock.advance(31)
    assert (await verify(verifier, rsa_key_2.sign(idp.claims()))).subject == "user-1"
    assert idp.hits["jwks"] == 2
    for _ in range(3):
        await verify(verifier, rsa_key_2.sign(idp.claims()))
    assert idp.hits["jwks"] == 2
    # the retired key is gone after the refetch
    assert (await rejection(verifier, rsa_key.sign(idp.claims()))).code == "unknown_kid"  # type: ignore[attr-defined]


async def test_new_kid_within_cooldown_waits_for_next_allowed_refetch(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey, rsa_key_2: SigningKey, clock: FakeClock
) -> None:
    await verify(verifier, rsa_key.sign(idp.claims()))
    idp.keys = [rsa_key, rsa_key_2]
    clock.advance(5)
    token = rsa_key_2.sign(idp.claims())
    assert (await rejection(verifier, token)).code == "unknown_kid"  # type: ignore[attr-defined]
    assert idp.hits["jwks"] == 1
    clock.advance(26)
    await verify(verifier, token)
    assert idp.hits["jwks"] == 2


async def test_random_kid_burst_fetches_at_most_once_per_cooldown(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey, clock: FakeClock
) -> None:
    await verify(verifier, rsa_key.sign(idp.claims()))
    assert idp.hits["jwks"] == 1
    stranger = new_key("RS256")

    async def burst(n: int) -> list[Any]:
        tokens = [stranger.sign(idp.claims(), kid=uuid.uuid4().hex) for _ in range(n)]
        return await asyncio.gather(*(verify(verifier, t) for t in tokens), return_exceptions=True)

    for _round in range(3):
        clock.advance(31)
        results = await burst(40)
        assert all(isinstance(r, AuthnFailure) and r.code == "unknown_kid" for r in results)  # type: ignore[attr-defined]
        # more within the same cooldown: no fetch at all
        results = await burst(20)
        assert all(isinstance(r, AuthnFailure) for r in results)
        clock.advance(10)
        await burst(10)
        assert idp.hits["jwks"] == 2 + _round
    # the good key kept working throughout
    await verify(verifier, rsa_key.sign(idp.claims()))


async def test_unknown_kid_negatively_cached(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey, clock: FakeClock
) -> None:
    await verify(verifier, rsa_key.sign(idp.claims()))
    clock.advance(31)
    stranger = new_key("RS256", "ghost")
    for _ in range(5):
        await rejection(verifier, stranger.sign(idp.claims()))
    assert idp.hits["jwks"] == 2
    ks = keyset(verifier)
    assert ks._unknown.get("ghost") is True
    clock.advance(31)
    assert ks._unknown.get("ghost") is None


async def test_ttl_refresh_in_background_keeps_serving(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey, rsa_key_2: SigningKey, clock: FakeClock
) -> None:
    await verify(verifier, rsa_key.sign(idp.claims()))
    idp.keys = [rsa_key, rsa_key_2]
    clock.advance(601)
    # served from the current keys; the refresh runs beside the request
    await verify(verifier, rsa_key.sign(idp.claims()))
    await asyncio.gather(*keyset(verifier)._background)
    assert idp.hits["jwks"] == 2
    assert rsa_key_2.kid in keyset(verifier).kids


async def test_idp_down_cached_keys_keep_working(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey, clock: FakeClock
) -> None:
    await verify(verifier, rsa_key.sign(idp.claims()))
    await idp.stop()
    stale_before = metrics.JWKS_STALE_SERVED._value.get()
    errors_before = metrics.JWKS_FETCHES.labels("error", "ttl")._value.get()
    clock.advance(601)
    with structlog.testing.capture_logs() as logs:
        await verify(verifier, rsa_key.sign(idp.claims()))
        await asyncio.gather(*keyset(verifier)._background)
    assert [e for e in logs if e["event"] == "jwks_fetch_failed" and e["serving_stale"]]
    assert metrics.JWKS_STALE_SERVED._value.get() == stale_before + 1
    assert metrics.JWKS_FETCHES.labels("error", "ttl")._value.get() == errors_before + 1
    for _ in range(3):
        await verify(verifier, rsa_key.sign(idp.claims()))


async def test_idp_error_status_keeps_stale_keys(
    verifier: JwtVerifier, idp: IdP, rsa_key: SigningKey, rsa_key_2: SigningKey, clock: FakeClock
) -> None:
    await verify(verifier, rsa_key.sign(idp.claims()))
    idp.fail_status = 500
    clock.advance(31)
    # a kid we cannot look up while the IdP fails is an outage (503), not a bad token (401)
    failure = await rejection(verifier, rsa_key_2.sign(idp.claims()))
    assert (failure.code, failure.kind) == ("keys_unavailable", "unavailable")  # type: ignore[attr-defined]
    await verify(verifier, rsa_key.sign(idp.claims()))


async def test_idp_down_at_startup_is_503_until_keys_arrive(
    rsa_key: SigningKey, clock: FakeClock
) -> None:
    idp = IdP(port=free_port(), keys=[rsa_key])  # not started: connection refused
    v = JwtVerifier(source(idp, retry_seconds=5), monotonic=clock)
    await v.start()  # must not raise
    try:
        failure = await rejection(v, rsa_key.sign(idp.claims()))
        assert failure.kind == "unavailable"
        assert failure.code == "keys_unavailable"  # type: ignore[attr-defined]
        await idp.start()
        # within the retry delay no new attempt is made: still unavailable
        assert (await rejection(v, rsa_key.sign(idp.claims()))).kind == "unavailable"
        assert idp.hits["jwks"] == 0
        clock.advance(5)
        await verify(v, rsa_key.sign(idp.claims()))
        assert idp.hits == {"discovery": 1, "jwks": 1}
    finally:
        await v.close()
        await idp.stop()


async def test_idp_down_at_startup_through_the_service(rsa_key: SigningKey) -> None:
    idp = IdP(port=free_port(), keys=[rsa_key])
    service: AuthzService = await start_service(
        {
            "sources": [
                {
                    "name": "idp",
                    "type": "jwt",
                    "issuers": [{"issuer": idp.issuer, "discovery": True, "audiences": ["api"]}],
                }
            ]
        }
    )
    try:
        request = check_request(headers={"authorization": f"Bearer {rsa_key.sign(idp.claims())}"})
        response = await service.check(request)
        assert status_of(response) == 503
        assert not any(
            h.header.key == "www-authenticate" for h in response.denied_response.headers
        )
    finally:
        await service.close()


async def test_discovery_issuer_mismatch_is_refused(rsa_key: SigningKey, clock: FakeClock) -> None:
    port = free_port()

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(
            {"issuer": "https://someone-else", "jwks_uri": f"http://127.0.0.1:{port}/jwks"}
        )

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    idp = IdP(port=port)
    v = JwtVerifier(source(idp), monotonic=clock)
    try:
        assert (await rejection(v, rsa_key.sign(idp.claims()))).kind == "unavailable"
    finally:
        await v.close()
        await runner.cleanup()


async def test_oversized_and_slow_jwks_are_fetch_failures(
    idp: IdP, rsa_key: SigningKey, clock: FakeClock
) -> None:
    idp.keys = [new_key("RS256") for _ in range(4)] + [rsa_key]
    small = JwtVerifier(source(idp, max_bytes=1000), monotonic=clock)
    try:
        with structlog.testing.capture_logs() as logs:
            assert (await rejection(small, rsa_key.sign(idp.claims()))).kind == "unavailable"
        assert any("too_large" in e.get("error", "") for e in logs)
    finally:
        await small.close()

    port = free_port()
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/jwks", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    slow_source = JwtSourceSettings.model_validate(
        {
            "name": "slow",
            "type": "jwt",
            "issuers": [
                {
                    "issuer": "https://slow.example.com",
                    "jwks_uri": f"http://127.0.0.1:{port}/jwks",
                    "jwks": {"timeout_seconds": 0.2},
                }
            ],
        }
    )
    slow = JwtVerifier(slow_source, monotonic=clock)
    try:
        claims = idp.claims(iss="https://slow.example.com", aud=None)
        with structlog.testing.capture_logs() as logs:
            assert (await rejection(slow, rsa_key.sign(claims))).kind == "unavailable"
        assert any("timeout" in e.get("error", "") for e in logs)
    finally:
        release.set()
        await slow.close()
        await runner.cleanup()


async def test_jwks_skips_unusable_keys(idp: IdP, rsa_key: SigningKey, clock: FakeClock) -> None:
    """An encryption key, a symmetric key and a private key in the JWKS are ignored."""
    extra = [
        {**new_key("RS256", "enc").jwk(), "use": "enc"},
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
        {"kty": "RSA", "kid": "priv", "n": "AQAB", "e": "AQAB", "d": "AQAB"},
    ]

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [*extra, rsa_key.jwk()]})

    port = free_port()
    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    src = JwtSourceSettings.model_validate(
        {
            "name": "x",
            "type": "jwt",
            "issuers": [
                {
                    "issuer": idp.issuer,
                    "jwks_uri": f"http://127.0.0.1:{port}/jwks",
                    "algorithms": ["RS256", "HS256"][:1],
                }
            ],
        }
    )
    v = JwtVerifier(src, monotonic=clock)
    try:
        await verify(v, rsa_key.sign(idp.claims(aud=None)))
        assert keyset(v).kids == [rsa_key.kid]
    finally:
        await v.close()
        await runner.cleanup()


async def test_concurrent_first_requests_share_the_startup_fetch(
    idp: IdP, rsa_key: SigningKey, clock: FakeClock
) -> None:
    v = JwtVerifier(source(idp), monotonic=clock)
    await v.start()
    try:
        tokens = [rsa_key.sign(idp.claims(jti=str(i))) for i in range(20)]
        identities = await asyncio.gather(*(verify(v, t) for t in tokens))
        assert {i.subject for i in identities} == {"user-1"}
        assert idp.hits == {"discovery": 1, "jwks": 1}
    finally:
        await v.close()
