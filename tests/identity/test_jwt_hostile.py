"""Hostile JWTs (issue 9): whatever a token makes the parser do is a 401 with a reason.

Deeply nested JSON once raised RecursionError out of the verifier (answered 503 and counted as an
IdP outage); NaN/Infinity/huge numbers in time claims once passed or crashed the checks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
import structlog

from sidegate.extauthz.identity import jwt as jwt_module
from sidegate.extauthz.identity.base import AuthnFailure, failure_code
from sidegate.extauthz.identity.jwt import JwtVerifier
from sidegate.extauthz.identity.jwt_settings import JwtSourceSettings
from tests.identity.conftest import check_request
from tests.identity.jwt_helpers import (
    b64url,
    denied_header,
    start_service,
    status_of,
)

ISSUER = "https://issuer.example.test"
SECRET = "s" * 48
SOURCE: dict[str, Any] = {
    "name": "hs",
    "type": "jwt",
    "token_cache": False,
    "issuers": [
        {
            "issuer": ISSUER,
            "algorithms": ["HS256"],
            "audiences": ["api"],
            "keys": [{"secret": SECRET}],
        }
    ],
}
NOW = 1_900_000_000.0


def verifier(**overrides: Any) -> JwtVerifier:
    source = JwtSourceSettings.model_validate({**SOURCE, **overrides})
    return JwtVerifier(source, clock=lambda: NOW)


def claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "aud": "api", "sub": "u1", "exp": NOW + 300, **extra}


def signed(payload: str | dict[str, Any], header: str | dict[str, Any] | None = None) -> str:
    """HS256 over raw JSON text (json.dumps writes NaN/Infinity, which is what we want)."""
    head = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    head_b64 = b64url((head if isinstance(head, str) else json.dumps(head)).encode())
    body_b64 = b64url((payload if isinstance(payload, str) else json.dumps(payload)).encode())
    signing_input = f"{head_b64}.{body_b64}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


async def rejected(token: str, **overrides: Any) -> AuthnFailure:
    with pytest.raises(AuthnFailure) as info:
        await verifier(**overrides).verify(token, None)  # type: ignore[arg-type]
    return info.value


def nested(depth: int, leaf: Any = 1) -> str:
    return "[" * depth + json.dumps(leaf) + "]" * depth


async def test_a_valid_token_still_verifies() -> None:
    identity = await verifier().verify(signed(claims()), None)  # type: ignore[arg-type]
    assert identity.subject == "u1"


@pytest.mark.parametrize("depth", [1_000, 2_500, 200_000])
async def test_deeply_nested_payload_is_malformed_401(depth: int) -> None:
    payload = f'{{"iss": "{ISSUER}", "sub": "u1", "x": {nested(depth)}}}'
    # even with the size cap raised far beyond any real token, nesting is bounded
    failure = await rejected(signed(payload), max_token_bytes=1_000_000)
    assert failure.kind == "unauthenticated"
    assert failure_code(failure) == "malformed"
    assert "nest" in failure.reason


async def test_deeply_nested_header_is_malformed_401() -> None:
    header = f'{{"alg": "HS256", "x": {nested(300)}}}'
    failure = await rejected(signed(claims(), header), max_header_bytes=4096)
    assert (failure.kind, failure_code(failure)) == ("unauthenticated", "malformed")


async def test_nesting_just_within_the_limit_is_accepted() -> None:
    limit = jwt_module.MAX_JSON_DEPTH
    deep = json.loads(nested(limit - 1))
    identity = await verifier().verify(signed(claims(x=deep)), None)  # type: ignore[arg-type]
    assert identity.claims["x"] == deep
    failure = await rejected(signed(claims(x=json.loads(nested(limit)))))
    assert failure_code(failure) == "malformed"


@pytest.mark.parametrize(
    "exp",
    ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400, "-" + "9" * 400],
)
async def test_non_finite_or_absurd_time_claims_are_refused(exp: str) -> None:
    payload = f'{{"iss": "{ISSUER}", "aud": "api", "sub": "u1", "exp": {exp}}}'
    failure = await rejected(signed(payload))
    assert failure.kind == "unauthenticated"
    assert failure_code(failure) in {"malformed", "invalid_claim"}


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe{}",  # not UTF-8
        '{"iss": "x"}'.encode("utf-16"),  # JSON, but not in UTF-8 (RFC 7519 §7.2)
        b'{"iss": "\\ud800"}',  # a lone surrogate escape
        b"1" * 5000,  # an integer with too many digits for int()
    ],
)
async def test_odd_payload_bytes_are_401(payload: bytes) -> None:
    head = b64url(b'{"alg":"HS256"}')
    failure = await rejected(f"{head}.{b64url(payload)}.{b64url(b'sig')}")
    assert failure.kind == "unauthenticated"


async def test_unexpected_parser_errors_are_401_not_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception while parsing a token is that token's fault: 401, never the 503 path."""

    def boom(*_: Any, **__: Any) -> Any:
        raise MemoryError("simulated")

    monkeypatch.setattr(jwt_module.json, "loads", boom)
    failure = await rejected(signed(claims()))
    assert (failure.kind, failure_code(failure)) == ("unauthenticated", "malformed")
    assert "MemoryError" in failure.reason


async def test_deep_token_through_the_service_is_401_with_a_reason() -> None:
    service = await start_service({"sources": [SOURCE]})
    try:
        payload = f'{{"iss": "{ISSUER}", "sub": "u1", "x": {nested(2_000)}}}'
        token = signed(payload)
        with structlog.testing.capture_logs() as logs:
            response = await service.check(
                check_request(headers={"authorization": f"Bearer {token}"})
            )
        assert status_of(response) == 401
        assert 'error="invalid_token"' in (denied_header(response, "www-authenticate") or "")
        rejections = [e for e in logs if e["event"] == "identity_rejected"]
        assert rejections and rejections[0]["code"] == "malformed"
        assert not [e for e in logs if e.get("log_level") in {"error", "critical"}]
    finally:
        await service.close()
