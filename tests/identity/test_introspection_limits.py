"""Introspection under attack (issue 9): token size cap, 4xx kept out of the breaker, a cap on
concurrent calls, https only (loopback excepted), and the call's deadline on every wait.

Against the Authlib RFC 7662 endpoint of ``test_introspection`` (same fixtures).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest

from sidegate.common import deadline
from sidegate.extauthz.identity.base import failure_code
from sidegate.extauthz.identity.breaker import BreakerState
from sidegate.extauthz.identity.introspection_settings import IntrospectionSourceSettings
from tests.identity import test_introspection as base
from tests.identity.introspection_server import IntrospectionServer

# the Authlib endpoint and verifier factory of test_introspection, as fixtures here too
server = base.server
clocks = base.clocks
make_verifier = base.make_verifier
_secret = base._secret
VIEW, metric, reject = base.VIEW, base.metric, base.reject

GUARD_S = 20.0


async def test_oversized_token_is_401_without_a_call(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    v = await make_verifier(max_token_bytes=512)
    failure = await reject(v, "t" * 513)
    assert (failure.kind, failure_code(failure)) == ("unauthenticated", "too_large")
    # the default cap applies as well: a megabyte token never leaves sidegate
    v = await make_verifier()
    failure = await reject(v, "t" * 1_000_000)
    assert failure_code(failure) == "too_large"
    assert server.hits == 0


async def test_garbage_tokens_answered_400_are_401_and_never_open_the_breaker(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.mode = "error400"
    v = await make_verifier(breaker={"failure_threshold": 2, "cool_off": 30})
    for i in range(6):
        failure = await reject(v, f"garbage-{i}")
        assert (failure.kind, failure_code(failure)) == ("unauthenticated", "refused")
    assert v.breaker.state is BreakerState.CLOSED
    # a real token still gets through to the server
    server.mode = "ok"
    server.issue("tok-ok")
    assert (await v.verify("tok-ok", VIEW)).subject == "user-1"


async def test_other_4xx_is_503_but_not_counted_by_the_breaker(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.mode = "error401"
    v = await make_verifier(breaker={"failure_threshold": 2, "cool_off": 30})
    for i in range(5):
        failure = await reject(v, f"tok-{i}")
        assert (failure.kind, failure_code(failure)) == ("unavailable", "status_4xx")
    assert v.breaker.state is BreakerState.CLOSED
    assert server.hits == 5


async def test_5xx_still_opens_the_breaker(server: IntrospectionServer, make_verifier: Any) -> None:
    server.mode = "error500"
    v = await make_verifier(breaker={"failure_threshold": 2, "cool_off": 30})
    for i in range(2):
        await reject(v, f"tok-{i}")
    assert v.breaker.state is BreakerState.OPEN


async def test_concurrent_calls_are_capped_and_the_excess_is_503_at_once(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    for i in range(5):
        server.issue(f"tok-{i}")
    server.delay = 0.3  # holds answers so the first calls are still in flight
    v = await make_verifier(max_concurrent=2)
    before = metric(
        "sidegate_identity_introspection_failures_total", endpoint=v.endpoint, cause="overloaded"
    )
    results = await asyncio.gather(
        *(v.verify(f"tok-{i}", VIEW) for i in range(5)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) == 2
    assert [(r.kind, failure_code(r)) for r in refused] == [("unavailable", "overloaded")] * 3  # type: ignore[attr-defined]
    assert server.hits == 2
    after = metric(
        "sidegate_identity_introspection_failures_total", endpoint=v.endpoint, cause="overloaded"
    )
    assert after == before + 3
    # the cap is on calls in flight, not a quota: once they ended, calls go out again
    assert (await v.verify("tok-4", VIEW)).subject == "user-1"


@pytest.mark.parametrize(
    "endpoint",
    ["http://idp.example.com/introspect", "http://10.0.0.5/introspect", "ftp://x/introspect"],
)
def test_endpoint_must_be_https_except_loopback(endpoint: str) -> None:
    base = {
        "type": "introspection",
        "name": "oauth",
        "client_id": "c",
        "client_secret_env": "X",
    }
    with pytest.raises(pydantic.ValidationError):
        IntrospectionSourceSettings.model_validate({**base, "endpoint": endpoint})
    for fine in ("https://idp.example.com/introspect", "http://127.0.0.1:9/introspect"):
        IntrospectionSourceSettings.model_validate({**base, "endpoint": fine})


async def test_a_hanging_server_is_503_at_the_calls_deadline(
    server: IntrospectionServer, make_verifier: Any
) -> None:
    server.issue("tok-slow")
    server.mode = "timeout"
    server.timeout_sleep = 3.0
    # the call's own timeout is longer than the Check's time: only the gRPC deadline can end
    # the wait in time (before, it waited the full 2.5 s and reported "timeout")
    v = await make_verifier(timeout=2.5)
    with deadline.within_call(0.2), pytest.raises(Exception) as info:
        await asyncio.wait_for(v.verify("tok-slow", VIEW), GUARD_S)
    failure = info.value
    assert (failure.kind, failure_code(failure)) == ("unavailable", "deadline")  # type: ignore[attr-defined]
    # a waiter giving up is no verdict on the endpoint
    assert v.breaker.state is BreakerState.CLOSED
