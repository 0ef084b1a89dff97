"""Verification keys per issuer: static keys from config, or JWKS fetched and kept fresh.

Remote keys (OIDC discovery or a JWKS URL) are fetched in the background at start-up, refreshed
after a TTL while the old keys keep serving, and refetched on an unknown ``kid`` at most once
per cooldown, single-flight. Unknown kids are negatively cached until the next allowed refetch.
A failed refresh keeps the last good keys; with no keys at all, lookups raise KeysUnavailable
(the caller answers 503, not 401). An unknown kid is UnknownKid (401) only when the JWKS was
fetched successfully and lacks it; while the endpoint fails (or the wait for it ran out of the
call's time) it is KeysUnavailable too: the token may carry a new key we cannot see yet.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from sidegate.common import deadline
from sidegate.common.cache import TTLCache
from sidegate.extauthz.errors import AuthzConfigError
from sidegate.extauthz.identity import metrics
from sidegate.extauthz.identity.cache import SingleFlight
from sidegate.extauthz.identity.fetch import FetchError, JsonFetcher, check_url
from sidegate.extauthz.identity.jwt_settings import MIN_HMAC_SECRET_BYTES, IssuerSettings, StaticKey

log = structlog.get_logger("sidegate.identity")

DISCOVERY_PATH = "/.well-known/openid-configuration"
MIN_RSA_BITS = 2048
# a waiter's own bound sits this much past the fetch's timeouts, so the fetch reports first
WAIT_GRACE_S = 0.5
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_KID_SAFE = re.compile(r"^[\x21-\x7e]*$")


class KeysUnavailable(Exception):
    """The keys needed cannot be obtained now (IdP down, slow, or never reached): a 503."""


class UnknownKid(Exception):
    """A successfully fetched key set has no key with the token's kid: a 401."""


class KeyConfigError(AuthzConfigError, ValueError):
    """A key in config or in a JWKS document is unusable (the message names which)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key (or an HMAC secret) and the algorithms it may verify."""

    kid: str | None
    key: Any
    # the JWK's own "alg" when it names one: then only that algorithm may use the key
    alg: str | None = None

    def allows(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        key = self.key
        if alg.startswith(("RS", "PS")):
            return isinstance(key, rsa.RSAPublicKey)
        if alg in _EC_CURVES:
            return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _EC_CURVES[alg]
        if alg == "EdDSA":
            return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        if alg.startswith("HS"):
            return isinstance(key, bytes)
        return False


def _check_public(key: Any, where: str) -> Any:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyConfigError(f"{where}: RSA key of {key.key_size} bits (< {MIN_RSA_BITS})")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key
    raise KeyConfigError(f"{where}: not a supported public key ({type(key).__name__})")


def key_from_jwk(jwk: Any, where: str = "jwk") -> VerificationKey:
    """A public verification key from one JWK; private, symmetric and non-signing keys fail."""
    if not isinstance(jwk, dict):
        raise KeyConfigError(f"{where}: not a JSON object")
    kty = jwk.get("kty")
    if "d" in jwk:
        raise KeyConfigError(f"{where}: contains private key material")
    if jwk.get("use", "sig") != "sig":
        raise KeyConfigError(f"{where}: use is not sig")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise KeyConfigError(f"{where}: kid is not a string")
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise KeyConfigError(f"{where}: alg is not a string")
    parsers: dict[str, Callable[[Any], Any]] = {
        "RSA": RSAAlgorithm.from_jwk,
        "EC": ECAlgorithm.from_jwk,
        "OKP": OKPAlgorithm.from_jwk,
    }
    parser = parsers.get(kty) if isinstance(kty, str) else None
    if parser is None:
        # "oct" included: a shared secret never comes from a JWKS document
        raise KeyConfigError(f"{where}: unsupported kty {kty!r}")
    try:
        key = parser(jwk)
    except Exception as exc:
        raise KeyConfigError(f"{where}: invalid {kty} key ({type(exc).__name__})") from exc
    return VerificationKey(kid=kid, key=_check_public(key, where), alg=alg)


def key_from_pem(pem: bytes, kid: str | None, where: str = "pem") -> VerificationKey:
    try:
        key = load_pem_public_key(pem)
    except Exception as exc:
        raise KeyConfigError(f"{where}: not a PEM public key ({type(exc).__name__})") from exc
    return VerificationKey(kid=kid, key=_check_public(key, where))


def static_key(spec: StaticKey, where: str) -> VerificationKey:
    try:
        return _static_key(spec, where)
    except OSError as exc:
        problem = f"cannot read key file {exc.filename} ({exc.strerror})"
        raise KeyConfigError(f"{where}: {problem}") from exc


def _static_key(spec: StaticKey, where: str) -> VerificationKey:
    if spec.secret is not None or spec.secret_file is not None:
        secret = (
            spec.secret.encode() if spec.secret is not None
            else spec.secret_file.read_bytes().strip()  # type: ignore[union-attr]
        )  # fmt: skip
        if len(secret) < MIN_HMAC_SECRET_BYTES:
            raise KeyConfigError(f"{where}: HMAC secret shorter than {MIN_HMAC_SECRET_BYTES} bytes")
        return VerificationKey(kid=spec.kid, key=secret)
    if spec.jwk is not None:
        key = key_from_jwk(spec.jwk, where)
        return VerificationKey(kid=spec.kid or key.kid, key=key.key, alg=key.alg)
    pem = spec.pem.encode() if spec.pem is not None else spec.pem_file.read_bytes()  # type: ignore[union-attr]
    return key_from_pem(pem, spec.kid, where)


class KeySet(Protocol):
    async def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """Keys that may verify a token with this kid and alg (raises when there are none)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _select(keys: Iterable[VerificationKey], kid: str | None, alg: str) -> list[VerificationKey]:
    # a token without kid may be checked against every key of the right type (a small set)
    return [k for k in keys if (kid is None or k.kid == kid) and k.allows(alg)]


class StaticKeySet:
    """Keys from config: loaded once, never refreshed."""

    def __init__(self, issuer: IssuerSettings) -> None:
        self.keys = [
            static_key(spec, f"issuer {issuer.issuer!r} keys[{i}]")
            for i, spec in enumerate(issuer.keys)
        ]

    async def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        found = _select(self.keys, kid, alg)
        if not found:
            raise UnknownKid(f"no configured key with kid {kid!r} for {alg}")
        return found

    def debug_state(self) -> dict[str, object]:
        return {"keys_from": "config", "loaded": True, "kids": [k.kid for k in self.keys]}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RemoteKeySet:
    """An issuer's JWKS, from discovery or a configured URL, cached and rotated."""

    def __init__(
        self,
        issuer: IssuerSettings,
        fetcher: JsonFetcher,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.issuer
        self.settings = issuer.jwks
        self._discovery_url = (
            issuer.issuer.rstrip("/") + DISCOVERY_PATH if issuer.discovery else None
        )
        self._jwks_uri = issuer.jwks_uri
        for url in (self._discovery_url, self._jwks_uri):
            if url is not None:
                check_url(url)
        self._fetcher = fetcher
        self._clock = clock
        self._keys: list[VerificationKey] = []
        self._loaded = False
        self._last_attempt: float | None = None
        self._last_success: float | None = None
        self._last_failed = False
        self._unknown: TTLCache[str, bool] = TTLCache(self.settings.max_unknown_kids, clock=clock)
        self._flight: SingleFlight[str, bool] = SingleFlight()
        self._background: set[asyncio.Task[bool]] = set()

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def kids(self) -> list[str | None]:
        return [k.kid for k in self._keys]

    def debug_state(self) -> dict[str, object]:
        """For /debug/identity: where the keys come from, which kids, how fresh (no key data)."""
        now = self._clock()
        return {
            "keys_from": self._jwks_uri or self._discovery_url,
            "loaded": self._loaded,
            "kids": self.kids,
            "age_s": None if self._last_success is None else round(now - self._last_success, 3),
            "last_refresh_failed": self._last_failed,
        }

    async def start(self) -> None:
        """Fetch in the background: an IdP that is down must not stop sidegate starting."""
        self._spawn("startup")

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._flight.cancel_all()

    async def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        now = self._clock()
        if not self._loaded:
            if self._flight.in_flight("jwks") or self._may_fetch(now, unknown_kid=False):
                await self._wait_for_refresh("startup")
            if not self._loaded:
                raise KeysUnavailable(f"no keys for issuer {self.issuer!r} yet")
        elif self._due_for_ttl(now):
            self._spawn("ttl")
        found = _select(self._keys, kid, alg)
        if found:
            return found
        neg_key = kid or ""
        if not self._last_failed and self._unknown.get(neg_key):
            raise UnknownKid(f"kid {kid!r} unknown (negatively cached)")
        if self._flight.in_flight("jwks") or self._may_fetch(now, unknown_kid=True):
            await self._wait_for_refresh("unknown_kid")
            found = _select(self._keys, kid, alg)
            if found:
                return found
        if self._last_failed:
            # the kid may be a new key of an IdP we cannot reach: an outage, not a bad token
            raise KeysUnavailable(
                f"kid {kid!r} not in the cached JWKS of {self.issuer!r} and the last fetch failed"
            )
        self._remember_unknown(neg_key)
        raise UnknownKid(f"kid {kid!r} not in the JWKS of {self.issuer!r}")

    async def refresh(self, trigger: str) -> bool:
        """Fetch now (joining a fetch already in flight); True when keys were installed."""
        return await self._flight.run("jwks", lambda: self._fetch(trigger))

    async def _wait_for_refresh(self, trigger: str) -> None:
        """Refresh on the request path: this caller waits only its own remaining time.

        The shared fetch keeps its own timeout (other callers, later ones, may still use it);
        ``SingleFlight`` shields it, so giving up here does not cancel it.
        """
        fetches = 2 if self._discovery_url is not None else 1
        try:
            # outside a deadline the fetch's own timeouts end the wait (and say why)
            timeout = deadline.bound(self.settings.timeout_seconds * fetches + WAIT_GRACE_S)
            await asyncio.wait_for(self.refresh(trigger), timeout)
        except (TimeoutError, deadline.DeadlineExceeded) as exc:
            metrics.JWKS_WAITS_ABANDONED.inc()
            raise KeysUnavailable(
                f"JWKS of {self.issuer!r} not fetched within the call's time"
            ) from exc

    def _spawn(self, trigger: str) -> None:
        if self._flight.in_flight("jwks"):
            return
        task = asyncio.ensure_future(self.refresh(trigger))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _may_fetch(self, now: float, *, unknown_kid: bool) -> bool:
        if self._last_attempt is None:
            return True
        wait = self.settings.retry_seconds if self._last_failed else 0.0
        if unknown_kid:
            wait = max(wait, self.settings.cooldown_seconds)
        return now - self._last_attempt >= wait

    def _due_for_ttl(self, now: float) -> bool:
        assert self._last_success is not None
        if now - self._last_success < self.settings.ttl_seconds:
            return False
        return self._may_fetch(now, unknown_kid=False)

    def _remember_unknown(self, kid: str) -> None:
        # until the next refetch an unknown kid could trigger
        last = self._last_attempt if self._last_attempt is not None else self._clock()
        ttl = last + self.settings.cooldown_seconds - self._clock()
        self._unknown.set(kid, True, ttl)

    async def _fetch(self, trigger: str) -> bool:
        self._last_attempt = self._clock()
        try:
            keys = await self._download()
        except Exception as exc:
            # whatever went wrong, the last good keys keep serving; the error is logged
            self._last_failed = True
            metrics.JWKS_FETCHES.labels("error", trigger).inc()
            if self._loaded:
                metrics.JWKS_STALE_SERVED.inc()
            log.warning(
                "jwks_fetch_failed",
                issuer=self.issuer,
                trigger=trigger,
                error=str(exc) if isinstance(exc, FetchError | KeyConfigError) else repr(exc),
                serving_stale=self._loaded,
                keys=len(self._keys),
            )
            return False
        self._keys = keys
        self._loaded = True
        self._last_failed = False
        self._last_success = self._clock()
        self._unknown.clear()
        metrics.JWKS_FETCHES.labels("ok", trigger).inc()
        log.info(
            "jwks_fetched",
            issuer=self.issuer,
            trigger=trigger,
            kids=[k.kid for k in keys],
        )
        return True

    async def _download(self) -> list[VerificationKey]:
        s = self.settings
        jwks_uri = self._jwks_uri
        if self._discovery_url is not None:
            # discovery each time: the IdP may move its jwks_uri
            meta = await self._fetcher.get_json(
                self._discovery_url, timeout_seconds=s.timeout_seconds, max_bytes=s.max_bytes
            )
            if meta.get("issuer") != self.issuer:
                raise FetchError("bad_discovery", "discovery issuer does not match (OIDC §4.3)")
            jwks_uri = meta.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise FetchError("bad_discovery", "discovery document has no jwks_uri")
            try:
                check_url(jwks_uri)
            except ValueError as exc:
                raise FetchError("bad_discovery", str(exc)) from exc
        assert jwks_uri is not None
        document = await self._fetcher.get_json(
            jwks_uri, timeout_seconds=s.timeout_seconds, max_bytes=s.max_bytes
        )
        return self._parse(document, jwks_uri)

    def _parse(self, document: dict[str, Any], url: str) -> list[VerificationKey]:
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise FetchError("bad_jwks", f"{url}: no keys array")
        if len(raw) > self.settings.max_keys:
            raise FetchError("bad_jwks", f"{url}: more than {self.settings.max_keys} keys")
        keys = []
        for i, jwk in enumerate(raw):
            try:
                key = key_from_jwk(jwk, f"{url} keys[{i}]")
            except KeyConfigError as exc:
                # one odd key (an encryption key, a new kty) must not discard the others
                log.info("jwks_key_skipped", issuer=self.issuer, reason=str(exc))
                continue
            if key.kid is not None and not _KID_SAFE.match(key.kid):
                log.info("jwks_key_skipped", issuer=self.issuer, reason="kid not printable")
                continue
            keys.append(key)
        if not keys:
            raise FetchError("bad_jwks", f"{url}: no usable keys")
        return keys
