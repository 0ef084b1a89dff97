"""IdP outage vs invalid token, and the call's deadline on every JWKS wait (issue 9).

A kid we cannot look up because the JWKS endpoint fails is an outage (503, no challenge): the
caller may be perfectly valid. 401 only when the JWKS was fetched and lacks the kid. A request
waits for a (re)fetch no longer than its own gRPC deadline; the shared fetch goes on for the
others. The IdPs here are real HTTP servers on loopback; key-set clocks are FakeClocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from sidegate.common import deadline
from sidegate.extauthz.identity.base import AuthnFailure, failure_code
from sidegate.extauthz.identity.jwt import JwtVerifier
from sidegate.extauthz.identity.jwt_settings import JwtSourceSettings
from tests.conftest import free_port
from tests.identity.conftest import FakeClock, IdP, SigningKey, check_request
from tests.identity.jwt_helpers import denied_header, start_service, status_of

# generous guard: the code under test answers at its deadline (a fraction of a second); the
# guard only turns a regression (waiting the fetch's own minute) into a failure, not a hang
GUARD_S = 20.0


def source_dict(issuer: str, jwks_uri: str | None = None, **jwks: Any) -> dict[str, Any]:
    where: dict[str, Any] = {"jwks_uri": jwks_uri} if jwks_uri else {"discovery": True}
    return {
        "name": "idp",
        "type": "jwt",
        "token_cache": False,
        "issuers": [
            {
                "issuer": issuer,
                **where,
                "audiences": ["api"],
                "jwks": {"cooldown_seconds": 30, "retry_seconds": 5, **jwks},
            }
        ],
    }


def make_verifier(issuer: str, clock: FakeClock, **kw: Any) -> JwtVerifier:
    settings = JwtSourceSettings.model_validate(source_dict(issuer, **kw))
    return JwtVerifier(settings, monotonic=clock)


async def failure_of(verifier: JwtVerifier, token: str) -> AuthnFailure:
    with pytest.raises(AuthnFailure) as info:
        await asyncio.wait_for(verifier.verify(token, None), GUARD_S)  # type: ignore[arg-type]
    return info.value


# --- outage vs invalid --------------------------------------------------------------------------


async def test_unknown_kid_while_jwks_unreachable_is_an_outage(
    idp: IdP, rsa_key: SigningKey, rsa_key_2: SigningKey
) -> None:
    clock = FakeClock(start=1000.0)
    v = make_verifier(idp.issuer, clock)
    await v.start()
    try:
        await v.verify(rsa_key.sign(idp.claims()), None)  # type: ignore[arg-type]
        await idp.stop()
        clock.advance(31)
        failure = await failure_of(v, rsa_key_2.sign(idp.claims()))
        assert (failure.kind, failure_code(failure)) == ("unavailable", "keys_unavailable")
        # within the retry window (no new fetch allowed) it stays an outage, not a 401
        clock.advance(1)
        failure = await failure_of(v, rsa_key_2.sign(idp.claims()))
        assert failure.kind == "unavailable"
        # the known key keeps working from the stale set
        await v.verify(rsa_key.sign(idp.claims()), None)  # type: ignore[arg-type]
        # the IdP is back and really lacks the kid: now it is an invalid token
        await idp.start()
        clock.advance(31)
        failure = await failure_of(v, new_key_token(idp))
        assert (failure.kind, failure_code(failure)) == ("unauthenticated", "unknown_kid")
    finally:
        await v.close()


def new_key_token(idp: IdP) -> str:
    from tests.identity.conftest import new_key

    return new_key("RS256", "never-published").sign(idp.claims())


async def test_outage_through_the_service_is_503_without_a_challenge(
    idp: IdP, rsa_key: SigningKey, rsa_key_2: SigningKey
) -> None:
    service = await start_service({"sources": [source_dict(idp.issuer)]})
    try:
        good = rsa_key.sign(idp.claims())
        response = await service.check(check_request(headers={"authorization": f"Bearer {good}"}))
        assert status_of(response) == 200
        await idp.stop()
        # the service's key set runs on the real clock: its first refetch is allowed at once
        # (unknown-kid cooldown counts from the startup fetch, which may be < 30 s ago), so
        # force the "last fetch failed" state with a refresh against the stopped IdP
        ((_, verifier),) = service.authenticator.sources  # type: ignore[attr-defined]
        (issuer,) = verifier.issuers.values()
        assert await issuer.keys.refresh("test") is False
        new = rsa_key_2.sign(idp.claims())
        response = await service.check(check_request(headers={"authorization": f"Bearer {new}"}))
        assert status_of(response) == 503
        assert denied_header(response, "www-authenticate") is None
    finally:
        await service.close()


# --- deadlines ----------------------------------------------------------------------------------


class HangingIdP:
    """Serves discovery and JWKS on loopback; ``hang`` holds every JWKS answer until released."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.port = free_port()
        self.keys = keys
        self.release = asyncio.Event()
        self.release.set()
        self.jwks_hits = 0
        self._runner: web.AppRunner | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hang(self) -> None:
        self.release.clear()

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"})

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_hits += 1
        await self.release.wait()
        return web.json_response({"keys": [k.jwk() for k in self.keys]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def hanging(rsa_key: SigningKey) -> AsyncIterator[HangingIdP]:
    server = HangingIdP([rsa_key])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def verify_within(verifier: JwtVerifier, token: str, seconds: float) -> Any:
    """verify() as inside a gRPC call with ``seconds`` remaining."""
    with deadline.within_call(seconds):
        return await asyncio.wait_for(verifier.verify(token, None), GUARD_S)  # type: ignore[arg-type]


async def test_new_kid_refetch_waits_only_the_calls_remaining_time(
    hanging: HangingIdP, rsa_key: SigningKey, rsa_key_2: SigningKey
) -> None:
    clock = FakeClock(start=1000.0)
    # the fetch's own timeout is a minute: only the call's deadline can end the wait in time
    v = make_verifier(hanging.issuer, clock, timeout_seconds=60)
    await v.start()
    try:
        await verify_within(v, rsa_key.sign(claims(hanging)), 5.0)
        hanging.keys = [rsa_key, rsa_key_2]
        hanging.hang()
        clock.advance(31)
        with pytest.raises(AuthnFailure) as info:
            await verify_within(v, rsa_key_2.sign(claims(hanging)), 0.2)
        assert (info.value.kind, failure_code(info.value)) == ("unavailable", "keys_unavailable")
        (issuer,) = v.issuers.values()
        # the shared fetch was not cancelled by the waiter giving up ...
        assert issuer.keys._flight.in_flight("jwks")
        # ... and, once the IdP answers, installs the new key for everyone
        hanging.release.set()
        identity = await verify_within(v, rsa_key_2.sign(claims(hanging)), GUARD_S)
        assert identity.subject == "user-1"
        assert hanging.jwks_hits == 2
    finally:
        await v.close()


async def test_no_time_left_is_an_outage_without_waiting(
    hanging: HangingIdP, rsa_key: SigningKey
) -> None:
    clock = FakeClock(start=1000.0)
    v = make_verifier(hanging.issuer, clock, timeout_seconds=60)
    hanging.hang()
    await v.start()  # the startup fetch hangs in the background
    try:
        with deadline.within_call(0.0), pytest.raises(AuthnFailure) as info:
            await asyncio.wait_for(
                v.verify(rsa_key.sign(claims(hanging)), None),  # type: ignore[arg-type]
                GUARD_S,
            )
        assert info.value.kind == "unavailable"
    finally:
        await v.close()


async def test_concurrent_waiters_each_keep_their_own_deadline(
    hanging: HangingIdP, rsa_key: SigningKey
) -> None:
    """One waiter with a short deadline gives up; one with a long deadline gets the keys."""
    clock = FakeClock(start=1000.0)
    v = make_verifier(hanging.issuer, clock, timeout_seconds=60)
    hanging.hang()
    await v.start()
    try:
        token = rsa_key.sign(claims(hanging))
        short = asyncio.ensure_future(verify_within(v, token, 0.1))
        long = asyncio.ensure_future(verify_within(v, token, GUARD_S))
        with pytest.raises(AuthnFailure):
            await short
        assert not long.done()
        hanging.release.set()
        assert (await long).subject == "user-1"
        assert hanging.jwks_hits == 1
    finally:
        await v.close()


def claims(server: HangingIdP) -> dict[str, Any]:
    import time

    now = int(time.time())
    return {"iss": server.issuer, "sub": "user-1", "aud": "api", "iat": now, "exp": now + 300}
