"""OAuth2 token introspection (RFC 7662) as an identity verifier.

The authorization server says whether an opaque token is active; sidegate then checks the
claims itself (exp/nbf, optional iss/aud/scopes, no refresh tokens). Answers are cached by
SHA-256(token) + endpoint: active ones for min(max_ttl, exp - now), inactive ones briefly,
errors never. Concurrent misses for one token share one call, at most ``max_concurrent`` calls
are in flight (beyond: 503 at once, no queue), each caller waits no longer than its Check's
remaining time, and a circuit breaker stops calling an endpoint that keeps failing (5xx,
timeouts, connection errors; not 4xx). Outages are 503s (``kind="unavailable"``), not 401s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

import aiohttp
import structlog

from sidegate.common import deadline
from sidegate.common.cache import TTLCache, jittered_ttl
from sidegate.extauthz.errors import AuthzConfigError
from sidegate.extauthz.identity import metrics
from sidegate.extauthz.identity.base import AuthnFailure, Identity, reject
from sidegate.extauthz.identity.breaker import CircuitBreaker
from sidegate.extauthz.identity.cache import SingleFlight, credential_key
from sidegate.extauthz.identity.introspection_settings import IntrospectionSourceSettings
from sidegate.extauthz.request_view import RequestView

log = structlog.get_logger("sidegate.identity.introspection")

METHOD = "introspection"
MAX_RESPONSE_BYTES = 256 * 1024
_INACTIVE = object()
# a waiter's own bound sits this much past the call's timeout, so the call reports first
WAIT_GRACE_S = 0.5


class IntrospectionConfigError(AuthzConfigError, ValueError):
    """The source cannot start as configured (e.g. the client-secret variable is unset)."""


class IntrospectionOutage(Exception):
    """The server gave no usable answer; ``cause`` is a fixed word for metrics and logs.

    ``counts`` says whether it is evidence the endpoint is down (5xx, timeout, connection
    error) and so feeds the circuit breaker. A 4xx is not: a garbage token or one client's
    odd request must not open the breaker for every caller.
    """

    def __init__(self, cause: str, detail: str, *, counts: bool = True) -> None:
        super().__init__(detail)
        self.cause = cause
        self.counts = counts


class TokenRefused(Exception):
    """The server answered 400 to this token (instead of ``active: false``): a bad token."""


def endpoint_label(url: str) -> str:
    """The endpoint without userinfo or query: safe for logs and metric labels."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _words(value: Any) -> tuple[str, ...]:
    """A space-separated string or a list of strings, as a tuple."""
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    return ()


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    """The body, refusing more than MAX_RESPONSE_BYTES: a confused server must not fill memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise IntrospectionOutage("bad_response", f"response over {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class IntrospectionVerifier:
    method = METHOD

    def __init__(
        self,
        settings: IntrospectionSourceSettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint_label(settings.endpoint)
        secret = os.environ.get(settings.client_secret_env)
        if not secret:
            raise IntrospectionConfigError(
                f"identity source {settings.name!r}: environment variable "
                f"{settings.client_secret_env} (client secret) is unset or empty"
            )
        self._secret = secret
        self._basic_auth: str | None = None
        self._headers: dict[str, str] = {}
        if settings.auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: form-urlencode id and secret before the Basic encoding
            pair = f"{quote_plus(settings.client_id)}:{quote_plus(secret)}"
            self._basic_auth = "Basic " + base64.b64encode(pair.encode()).decode()
            self._headers = {"authorization": self._basic_auth}
        self._clock = clock
        self._cache: TTLCache[str, object] = TTLCache(settings.cache.max_entries, clock=monotonic)
        self._flight: SingleFlight[str, object] = SingleFlight()
        self.breaker = CircuitBreaker(
            self.endpoint,
            failure_threshold=settings.breaker.failure_threshold,
            cool_off=settings.breaker.cool_off,
            clock=monotonic,
        )
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections, keepalive_timeout=30, ttl_dns_cache=300
        )
        timeout = aiohttp.ClientTimeout(
            total=self.settings.timeout, connect=self.settings.connect_timeout
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            raise_for_status=False,
            headers={"accept": "application/json", "user-agent": "sidegate"},
        )

    def debug_state(self) -> dict[str, object]:
        return {"endpoint": self.endpoint}

    async def start(self) -> None:
        if self._session is None:
            self._session = self._open_session()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- verification -------------------------------------------------------------------------

    async def verify(self, credential: str, view: RequestView) -> Identity:
        token = credential.strip()
        if not token:
            raise self._invalid("empty", "empty token")
        if len(token) > self.settings.max_token_bytes:
            raise self._invalid(
                "too_large", f"token of {len(token)} bytes > {self.settings.max_token_bytes}"
            )
        key = credential_key(token, namespace=self.endpoint)
        answer = self._cache.get(key)
        if answer is None:
            metrics.INTROSPECTION_CACHE.labels(self.endpoint, "miss").inc()
            answer = await self._await_answer(token, key)
        else:
            result = "negative_hit" if answer is _INACTIVE else "hit"
            metrics.INTROSPECTION_CACHE.labels(self.endpoint, result).inc()
        if answer is _INACTIVE:
            raise self._invalid("inactive", "token not active")
        assert isinstance(answer, dict)
        return self._identity(answer)

    async def _await_answer(self, token: str, key: str) -> object:
        """The shared call's answer, waited for no longer than this Check may still wait.

        The call itself keeps its own timeout (other callers of the same token share it);
        ``SingleFlight`` shields it, so giving up here does not cancel it.
        """
        try:
            # outside a deadline, the call's own timeout ends the wait (its cause is then known)
            timeout = deadline.bound(self.settings.timeout + WAIT_GRACE_S)
            return await asyncio.wait_for(
                self._flight.run(key, lambda: self._introspect(token, key)), timeout
            )
        except (TimeoutError, deadline.DeadlineExceeded):
            metrics.INTROSPECTION_FAILURES.labels(self.endpoint, "deadline").inc()
            raise self._unavailable(
                "deadline", "introspection did not answer within the call's remaining time"
            ) from None

    async def _introspect(self, token: str, key: str) -> object:
        # beyond the pool's connections aiohttp would queue the call: cap there as well
        limit = min(self.settings.max_concurrent, self.settings.max_connections)
        if self._in_flight >= limit:
            metrics.INTROSPECTION_FAILURES.labels(self.endpoint, "overloaded").inc()
            raise self._unavailable(
                "overloaded", f"{self._in_flight} introspection calls in flight (limit {limit})"
            )
        if not self.breaker.allow():
            metrics.INTROSPECTION_FAILURES.labels(self.endpoint, "circuit_open").inc()
            raise self._unavailable(
                "circuit_open",
                f"introspection circuit open for {self.endpoint} "
                f"(retry in {self.breaker.retry_after:.1f}s)",
            )
        started = time.perf_counter()
        self._in_flight += 1
        try:
            claims = await self._call(token)
        except TokenRefused:
            # the server is up and answered: that is no failure of the endpoint
            self.breaker.record_success()
            metrics.INTROSPECTION_REQUESTS.labels(self.endpoint, "refused").inc()
            raise self._invalid(
                "refused", "introspection endpoint refused the token (400)"
            ) from None
        except IntrospectionOutage as outage:
            if outage.counts:
                self.breaker.record_failure()
            else:
                self.breaker.abandon()
            metrics.INTROSPECTION_REQUESTS.labels(self.endpoint, "error").inc()
            metrics.INTROSPECTION_FAILURES.labels(self.endpoint, outage.cause).inc()
            log.warning(
                "introspection failed",
                endpoint=self.endpoint,
                cause=outage.cause,
                detail=str(outage),
                breaker_counted=outage.counts,
            )
            raise self._unavailable(
                outage.cause, f"introspection {outage.cause}: {outage}"
            ) from None
        except BaseException:
            self.breaker.abandon()
            raise
        finally:
            self._in_flight -= 1
            metrics.INTROSPECTION_SECONDS.labels(self.endpoint).observe(
                time.perf_counter() - started
            )
        self.breaker.record_success()
        if not claims["active"]:
            metrics.INTROSPECTION_REQUESTS.labels(self.endpoint, "inactive").inc()
            self._cache.set(key, _INACTIVE, self.settings.cache.negative_ttl)
            return _INACTIVE
        metrics.INTROSPECTION_REQUESTS.labels(self.endpoint, "active").inc()
        self._cache.set(key, claims, self._positive_ttl(claims))
        return claims

    def _positive_ttl(self, claims: Mapping[str, Any]) -> float:
        # Jittered (never longer): answers cached in one burst do not all expire together.
        ttl = jittered_ttl(self.settings.cache.max_ttl)
        exp = _number(claims.get("exp"))
        if exp is not None:
            ttl = min(ttl, exp - self._clock())
        return ttl

    async def _call(self, token: str) -> dict[str, Any]:
        form = {"token": token}
        if self.settings.token_type_hint:
            form["token_type_hint"] = self.settings.token_type_hint
        if self._basic_auth is None:
            form["client_id"] = self.settings.client_id
            form["client_secret"] = self._secret
        if self._session is None:
            self._session = self._open_session()
        try:
            async with self._session.post(
                self.settings.endpoint,
                data=form,
                headers=self._headers,
                # the form carries the token (and maybe the secret): never resend it elsewhere
                allow_redirects=False,
            ) as resp:
                status = resp.status
                body = await _read_bounded(resp) if status == 200 else b""
        except TimeoutError:
            raise IntrospectionOutage(
                "timeout", f"no answer within {self.settings.timeout}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise IntrospectionOutage("connection", type(exc).__name__) from None
        if status == 400:
            raise TokenRefused()
        if 400 < status < 500:
            # 401/403/404/429...: our client credentials, endpoint or rate; no sign the server
            # is down, so a 503 for this request but nothing toward the breaker
            raise IntrospectionOutage("status_4xx", f"HTTP {status}", counts=False)
        if status != 200:
            raise IntrospectionOutage("status", f"HTTP {status}")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise IntrospectionOutage("not_json", "response is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("active"), bool):
            raise IntrospectionOutage("bad_response", "response has no boolean 'active'")
        return document

    # --- checks sidegate makes itself ---------------------------------------------------------

    def _identity(self, claims: dict[str, Any]) -> Identity:
        s = self.settings
        now = self._clock()
        token_type = claims.get("token_type")
        if isinstance(token_type, str) and token_type.lower() in {
            t.lower() for t in s.reject_token_types
        }:
            raise self._invalid("token_type", f"token_type {token_type} not accepted")
        if "exp" in claims:
            exp = _number(claims["exp"])
            if exp is None:
                raise self._invalid("malformed_claims", "exp is not a number")
            if exp <= now - s.leeway:
                raise self._invalid(
                    "expired", "token expired (exp in the past)", public="token expired"
                )
        if "nbf" in claims:
            nbf = _number(claims["nbf"])
            if nbf is None:
                raise self._invalid("malformed_claims", "nbf is not a number")
            if nbf > now + s.leeway:
                raise self._invalid("not_yet_valid", "token not yet valid (nbf)")
        if s.issuer is not None and claims.get("iss") != s.issuer:
            raise self._invalid("issuer", "issuer not accepted")
        if s.audiences:
            aud = claims.get("aud")
            granted = {aud} if isinstance(aud, str) else set(_words(aud))
            if not granted & set(s.audiences):
                raise self._invalid("audience", "audience not accepted")
        scopes = _words(claims.get("scope"))
        missing = [scope for scope in s.required_scopes if scope not in scopes]
        if missing:
            raise reject(
                "insufficient_scope",
                f"missing required scopes: {' '.join(missing)}",
                public_reason="insufficient scope",
                scheme=s.scheme,
                error="insufficient_scope",
            )
        subject = next(
            (
                str(claims[c])
                for c in s.subject_claims
                if isinstance(claims.get(c), str | int) and str(claims[c])
            ),
            "",
        )
        if not subject:
            raise self._invalid("no_subject", "no subject in introspection response")
        consumer = claims.get(s.consumer_claim)
        tier = claims.get(s.tier_claim) if s.tier_claim else None
        return Identity(
            method=METHOD,
            subject=subject,
            consumer=str(consumer) if isinstance(consumer, str | int) and consumer else subject,
            tier=tier if isinstance(tier, str) and tier else s.default_tier,
            scopes=scopes,
            roles=_words(claims.get(s.roles_claim)) if s.roles_claim else (),
            claims=claims,
            source=s.name,
        )

    def _invalid(self, code: str, reason: str, *, public: str = "invalid token") -> AuthnFailure:
        return reject(code, reason, public_reason=public, scheme=self.settings.scheme)

    def _unavailable(self, code: str, reason: str) -> AuthnFailure:
        return reject(
            code,
            reason,
            kind="unavailable",
            public_reason="temporarily unavailable",
            scheme=self.settings.scheme,
            error="temporarily_unavailable",
        )


__all__ = [
    "IntrospectionConfigError",
    "IntrospectionVerifier",
    "endpoint_label",
]
