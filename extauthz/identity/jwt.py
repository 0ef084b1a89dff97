"""Verifying a bearer JWT against the source's trusted issuers (RFC 7519, RFC 8725 checks).

Order of checks, cheapest first: size caps, structure (three canonical base64url segments,
UTF-8 JSON objects nested at most MAX_JSON_DEPTH deep, no NaN/Infinity), issuer (selects the
key set: each issuer is bound to its own keys), algorithm on that issuer's allow-list (the
token's ``alg`` only selects among allowed ones), no ``crit`` (no extension is supported), no
unencoded payload (``b64``), optional ``typ``, ``kid`` shape; then the signature with a key of
that issuer whose type fits the algorithm, then ``iss``, ``aud``, required and typed claims,
then time claims against our (injectable) clock with leeway. ``jku``/``x5u``/``jwk``/``x5c``
headers are never read: keys come from configuration only. Whatever a token makes this code
do (any exception while parsing or checking it) is a 401 for that token; only the key lookup
may answer 503 (the IdP is down or slow).

PyJWT supplies the signature algorithms (constant-time HMAC compare, ECDSA raw-to-DER, key
preparation that refuses PEM/SSH text as an HMAC secret). Parsing and claim checks are done
here, once: PyJWT's ``decode`` re-parses the token and validates base64 one character at a
time in Python, which profiled at several times the cost of the RSA verification itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jwt as pyjwt
import structlog

from sidegate.extauthz.identity.base import AuthnFailure, Identity, reject
from sidegate.extauthz.identity.fetch import JsonFetcher
from sidegate.extauthz.identity.jwks import (
    KeyConfigError,
    KeySet,
    KeysUnavailable,
    RemoteKeySet,
    StaticKeySet,
    UnknownKid,
    VerificationKey,
)
from sidegate.extauthz.identity.jwt_settings import ClaimMapping, IssuerSettings, JwtSourceSettings
from sidegate.extauthz.identity.token_cache import VerifiedTokenCache

if TYPE_CHECKING:
    from sidegate.extauthz.request_view import RequestView

log = structlog.get_logger("sidegate.identity")

# a token without kid is tried against at most this many of its issuer's keys
MAX_KIDLESS_CANDIDATES = 4
# JSON nesting a header or payload may have: real claims nest a few levels (``realm_access``);
# a deeper document would only burden the policy input, the logs and the stack (RecursionError)
MAX_JSON_DEPTH = 32
# time claims beyond this are not times (year ~292 billion); larger values are refused
MAX_TIME_VALUE = 2**53
_ALGORITHMS = pyjwt.algorithms.get_default_algorithms()
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_KID = re.compile(r"^[\x21-\x7e]+$")
_PUBLIC = {
    "expired": "token expired",
    "not_yet_valid": "token not yet valid",
    "wrong_audience": "invalid audience",
}


def _fail(code: str, reason: str) -> AuthnFailure:
    return reject(code, reason, public_reason=_PUBLIC.get(code, "invalid token"))


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259 §6): an ``exp`` of NaN would never expire
    raise ValueError(f"{name} is not JSON")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit``; iterative, so no stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _b64decode(segment: str, what: str) -> bytes:
    """Strict base64url (RFC 7515 §2): URL alphabet, no padding, canonical trailing bits.

    Canonical, because otherwise one signature has several spellings (a malleable token that
    a replay cache or a deny list keyed on the token would miss).
    """
    if not _B64URL.match(segment):
        raise _fail("malformed", f"{what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise _fail("malformed", f"{what} is not base64url") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise _fail("malformed", f"{what} is not canonical base64url")
    return raw


def _b64_json(segment: str, what: str) -> dict[str, Any]:
    raw = _b64decode(segment, what)
    try:
        # RFC 7519 §7.2: the JOSE header and claims are UTF-8 JSON (no UTF-16/32 sniffing)
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError as exc:
        # the C decoder gives up near the interpreter's recursion limit: a hostile token
        raise _fail("malformed", f"{what} nests JSON too deeply") from exc
    except ValueError as exc:
        # ValueError covers invalid UTF-8 and integers with too many digits as well
        raise _fail("malformed", f"{what} is not base64url-encoded JSON") from exc
    if not isinstance(value, dict):
        raise _fail("malformed", f"{what} is not a JSON object")
    if _too_deep(value, MAX_JSON_DEPTH):
        raise _fail("malformed", f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")
    return value


def _is_number(value: Any) -> bool:
    # finite and of sane size: 1e999 parses as inf (an ``exp`` that never passes), and an int
    # of hundreds of digits overflows every float comparison and TTL computed from it
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < MAX_TIME_VALUE and (isinstance(value, int) or math.isfinite(value))


def _lookup(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _first_string(claims: dict[str, Any], paths: list[str]) -> str | None:
    for path in paths:
        value = _lookup(claims, path)
        if isinstance(value, str) and value:
            return value
    return None


def _string_list(claims: dict[str, Any], paths: list[str]) -> tuple[str, ...]:
    """The first present claim as strings: an array, or a space-separated string."""
    for path in paths:
        value = _lookup(claims, path)
        if isinstance(value, str):
            return tuple(value.split())
        if isinstance(value, list):
            return tuple(v for v in value if isinstance(v, str))
    return ()


def map_claims(
    claims: dict[str, Any], mapping: ClaimMapping, *, source: str, method: str = "jwt"
) -> Identity:
    subject = _first_string(claims, mapping.subject)
    if subject is None:
        raise _fail("missing_claim", f"no subject claim ({', '.join(mapping.subject)})")
    return Identity(
        method=method,
        subject=subject,
        consumer=_first_string(claims, mapping.consumer) or subject,
        tier=_first_string(claims, mapping.tier) or mapping.default_tier,
        scopes=_string_list(claims, mapping.scopes),
        roles=_string_list(claims, mapping.roles),
        claims=claims,
        source=source,
    )


class _Issuer:
    def __init__(self, settings: IssuerSettings, keys: KeySet) -> None:
        self.settings = settings
        self.keys = keys
        self.algorithms = frozenset(settings.algorithms)
        typ = settings.typ
        self.typ = typ.lower().removeprefix("application/") if typ else None


class JwtVerifier:
    """A ``type: jwt`` source: several issuers, each with its own keys and checks."""

    method = "jwt"

    def __init__(
        self,
        source: JwtSourceSettings,
        *,
        fetcher: JsonFetcher | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._clock = clock
        self._fetcher = fetcher or JsonFetcher()
        self.issuers: dict[str, _Issuer] = {}
        for issuer in source.issuers:
            if not issuer.audiences:
                # RFC 8725 §3.9: without an audience check, a token the same IdP issued for
                # any other service is accepted here as well
                log.warning(
                    "jwt_issuer_without_audiences",
                    source=source.name,
                    issuer=issuer.issuer,
                    hint="set audiences: tokens issued for other services are accepted",
                )
            keys: KeySet = (
                StaticKeySet(issuer)
                if issuer.keys
                else RemoteKeySet(issuer, self._fetcher, clock=monotonic)
            )
            self.issuers[issuer.issuer] = _Issuer(issuer, keys)
        self.cache = (
            VerifiedTokenCache(
                source.name,
                max_entries=source.token_cache_entries,
                max_ttl_seconds=source.token_cache_max_ttl_seconds,
                clock=clock,
            )
            if source.token_cache
            else None
        )

    def debug_state(self) -> dict[str, object]:
        """For /debug/identity: each issuer's key state."""
        issuers = {}
        for name, issuer in self.issuers.items():
            describe = getattr(issuer.keys, "debug_state", None)
            issuers[name] = describe() if describe is not None else {}
        return {"issuers": issuers}

    async def start(self) -> None:
        for issuer in self.issuers.values():
            await issuer.keys.start()

    async def close(self) -> None:
        for issuer in self.issuers.values():
            await issuer.keys.close()
        await self._fetcher.close()

    def reload(self) -> bool:
        """Re-read static key files (PEM, secrets); on any error keep the current keys."""
        try:
            fresh = {
                name: StaticKeySet(issuer.settings)
                for name, issuer in self.issuers.items()
                if isinstance(issuer.keys, StaticKeySet)
            }
        except KeyConfigError as exc:
            log.error("jwt_keys_reload_failed", source=self.source.name, error=str(exc))
            return False
        for name, keys in fresh.items():
            self.issuers[name].keys = keys
        if fresh and self.cache is not None:
            # a key may have been withdrawn: tokens it signed must not outlive it in the cache
            self.cache.clear()
        return True

    async def verify(self, credential: str, view: RequestView) -> Identity:
        source = self.source
        if len(credential) > source.max_token_bytes:
            raise _fail("too_large", f"token of {len(credential)} bytes > {source.max_token_bytes}")
        cache_key = None
        if self.cache is not None:
            cache_key = self.cache.key(credential)
            cached = self.cache.get(cache_key)
            if cached is not None:
                return cached
        claims = await self._verify(credential)
        identity = map_claims(claims, self._issuer_of(claims).settings.claims, source=source.name)
        if self.cache is not None and cache_key is not None:
            self.cache.put(cache_key, identity, float(claims["exp"]))
        return identity

    def _issuer_of(self, claims: dict[str, Any]) -> _Issuer:
        return self.issuers[claims["iss"]]

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            unverified, issuer, alg, kid = self._parse(token)
        except AuthnFailure:
            raise
        except Exception as exc:
            # whatever a hostile token makes the parser do, it is that token's fault: 401
            raise _fail("malformed", f"token does not parse ({type(exc).__name__})") from exc
        keys = await self._keys(issuer, kid, alg)
        try:
            if kid is None:
                # without a kid every key of the right type is a candidate: bound the work
                keys = keys[:MAX_KIDLESS_CANDIDATES]
            self._check_signature(token, keys, alg)
            claims = unverified  # verified from here on
            self._check_claims(claims, issuer.settings)
            self._check_times(claims, issuer.settings)
        except AuthnFailure:
            raise
        except Exception as exc:
            raise _fail("malformed", f"token checks failed ({type(exc).__name__})") from exc
        return claims

    async def _keys(self, issuer: _Issuer, kid: str | None, alg: str) -> list[VerificationKey]:
        try:
            return await issuer.keys.candidates(kid, alg)
        except KeysUnavailable as exc:
            # the IdP is down or slow: the caller may be valid, so 503 and no challenge
            raise reject(
                "keys_unavailable",
                str(exc),
                kind="unavailable",
                public_reason="identity provider unavailable",
            ) from exc
        except UnknownKid as exc:
            raise _fail("unknown_kid", str(exc)) from exc

    def _parse(self, token: str) -> tuple[dict[str, Any], _Issuer, str, str | None]:
        source = self.source
        if not token:
            raise _fail("malformed", "empty token")
        segments = token.split(".")
        if len(segments) != 3:
            # five segments would be a JWE; more is a parser DoS attempt
            raise _fail("malformed", f"token has {len(segments)} segments, not 3")
        header_b64, payload_b64, _ = segments
        if len(header_b64) > source.max_header_bytes * 4 // 3 + 4:
            raise _fail("too_large", f"JOSE header > {source.max_header_bytes} bytes")
        header = _b64_json(header_b64, "JOSE header")
        unverified = _b64_json(payload_b64, "payload")

        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise _fail("unknown_issuer", f"issuer {str(iss)[:100]!r} is not trusted")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise _fail("alg_not_allowed", f"alg {str(alg)[:20]!r} not allowed for {iss!r}")
        if "crit" in header:
            raise _fail("crit_unsupported", "token has critical header extensions")
        if header.get("b64", True) is not True:
            # RFC 7797 unencoded payload: the signer meant other bytes than the ones we check
            raise _fail("malformed", "unencoded payload (b64) is not supported")
        if issuer.typ is not None:
            typ = header.get("typ")
            if not isinstance(typ, str) or typ.lower().removeprefix("application/") != issuer.typ:
                raise _fail("bad_typ", f"typ {str(typ)[:40]!r} is not {issuer.settings.typ!r}")
        kid = header.get("kid")
        # present means a string: ``"kid": null`` is not "no kid" (try every key) but malformed
        if "kid" in header and (
            not isinstance(kid, str) or len(kid) > source.max_kid_length or not _KID.match(kid)
        ):
            raise _fail("malformed", "kid is not a short printable string")
        return unverified, issuer, alg, kid

    def _check_signature(self, token: str, keys: list[VerificationKey], alg: str) -> None:
        signing_input, _, signature_b64 = token.rpartition(".")
        signature = _b64decode(signature_b64, "signature")
        algorithm = _ALGORITHMS[alg]
        message = signing_input.encode("ascii")
        for key in keys:
            try:
                if algorithm.verify(message, algorithm.prepare_key(key.key), signature):
                    return
            except Exception:
                # a malformed signature for this key type (e.g. ECDSA of the wrong length)
                continue
        raise _fail("bad_signature", f"signature did not verify with {len(keys)} key(s)")

    def _check_claims(self, claims: dict[str, Any], settings: IssuerSettings) -> None:
        if claims.get("iss") != settings.issuer:
            raise _fail("wrong_issuer", "iss does not match the issuer")
        if settings.audiences:
            aud = claims.get("aud")
            if aud is None:
                raise _fail("wrong_audience", "aud is missing")
            values = [aud] if isinstance(aud, str) else aud
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _fail("invalid_claim", "aud is neither a string nor an array of strings")
            if not set(values) & set(settings.audiences):
                raise _fail("wrong_audience", f"aud {values[:5]!r} has none of the audiences")
        for name in settings.required_claims:
            if name not in claims:
                raise _fail("missing_claim", f"required claim {name!r} missing")
        for name in ("sub", "jti"):
            if name in claims and not isinstance(claims[name], str):
                raise _fail("invalid_claim", f"claim {name!r} is not a string")

    def _check_times(self, claims: dict[str, Any], settings: IssuerSettings) -> None:
        now = self._clock()
        leeway = settings.leeway_seconds
        exp = claims.get("exp")
        if exp is None:
            raise _fail("missing_claim", "required claim 'exp' missing")
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_number(claims[name]):
                raise _fail("invalid_claim", f"claim {name!r} is not a number")
        if exp <= now - leeway:
            raise _fail("expired", f"token expired {now - exp:.0f}s ago (leeway {leeway:g}s)")
        nbf = claims.get("nbf")
        if nbf is not None and nbf > now + leeway:
            raise _fail("not_yet_valid", f"nbf is {nbf - now:.0f}s in the future")
        iat = claims.get("iat")
        if iat is not None and iat > now + leeway:
            raise _fail("not_yet_valid", f"iat is {iat - now:.0f}s in the future")
        if settings.max_lifetime_seconds is not None:
            if iat is None:
                raise _fail("missing_claim", "iat is required to check the token lifetime")
            if exp - iat > settings.max_lifetime_seconds:
                raise _fail(
                    "lifetime_too_long",
                    f"lifetime {exp - iat:.0f}s > {settings.max_lifetime_seconds:g}s",
                )
