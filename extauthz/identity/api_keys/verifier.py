"""Verifies an API key: duplicates, digest lookup, disabled, expiry, allowed services."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

from sidegate.extauthz.identity import metrics
from sidegate.extauthz.identity.api_keys.digest import KeyDigester, key_id
from sidegate.extauthz.identity.api_keys.store import KeyStore, KeyStoreUnavailable
from sidegate.extauthz.identity.base import AuthnFailure, Identity, reject
from sidegate.extauthz.identity.credentials import locate
from sidegate.extauthz.identity.source import CredentialLocation
from sidegate.extauthz.request_view import RequestView, split_path

METHOD = "api_key"
SCHEME = "ApiKey"
DEFAULT_LOCATION = CredentialLocation(header="x-api-key")


def presented_keys(locations: Sequence[CredentialLocation], view: RequestView) -> set[str]:
    """Every distinct key value the request carries in any of the source's locations."""
    found: set[str] = set()
    query: list[tuple[str, str]] | None = None
    for location in locations:
        if location.query:
            if query is None:
                query = parse_qsl(split_path(view.raw_path)[1], keep_blank_values=False)
            # a repeated parameter (?api_key=a&api_key=b) is two keys, not one
            found.update(v.strip() for k, v in query if k == location.query and v.strip())
            continue
        value = locate(location, view)
        if not value:
            continue
        if location.header_name and not location.prefix:
            # Envoy folds repeated headers into one comma-joined value
            found.update(part.strip() for part in value.split(",") if part.strip())
        else:
            found.add(value)
    return found


class ApiKeyVerifier:
    """Looks the key's digest up in the store and turns the record into an Identity."""

    method = METHOD

    def __init__(
        self,
        store: KeyStore,
        *,
        digester: KeyDigester | None = None,
        locations: Sequence[CredentialLocation] = (DEFAULT_LOCATION,),
        source: str = "api_key",
        service_extension: str = "service",
        service_from_authority: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.digester = digester or KeyDigester()
        self.locations = tuple(locations)
        self.source = source
        self.service_extension = service_extension
        self.service_from_authority = service_from_authority
        self._clock = clock

    def debug_state(self) -> dict[str, object]:
        """For /debug/identity: the store and how many keys it holds (never a key or digest)."""
        describe = getattr(self.store, "debug_state", None)
        return {"store": describe() if describe is not None else type(self.store).__name__}

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    def route_service(self, view: RequestView) -> str | None:
        """The service a route belongs to: its context extension; else, only when configured
        (``service_from_authority``), the request's host without port; else None.

        The host is the client's to choose wherever a virtual host matches several names
        (``*``, ``*.example.com``): trusting it would let a key limited to one service open
        another. A key restricted to services is refused on a route that names none.
        """
        service = view.context_extensions.get(self.service_extension)
        if service:
            return service
        if not self.service_from_authority:
            return None
        host = view.host.lower()
        if host.startswith("["):
            return host[: host.find("]") + 1] if "]" in host else host
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    async def verify(self, credential: str, view: RequestView) -> Identity:
        credential = credential.strip()
        if not credential:
            raise self._reject("empty", "empty key", "invalid API key")
        presented = presented_keys(self.locations, view)
        presented.add(credential)
        if len(presented) > 1:
            raise self._reject("duplicate", "several different API keys", "duplicate API key")
        digest = self.digester.digest(credential)
        try:
            record = await self.store.lookup(digest)
        except KeyStoreUnavailable as exc:
            metrics.API_KEY_CHECKS.labels(self.source, "unavailable").inc()
            raise reject(
                "store_unavailable",
                str(exc),
                kind="unavailable",
                public_reason="temporarily unavailable",
                scheme=SCHEME,
                error="temporarily_unavailable",
            ) from None
        kid = key_id(digest)
        if record is None:
            raise self._reject("unknown", "unknown API key", "invalid API key", kid)
        if record.disabled:
            raise self._reject("disabled", "API key disabled", "invalid API key", kid)
        if record.expired(self._clock()):
            raise self._reject("expired", "API key expired", "API key expired", kid)
        service = self.route_service(view)
        if not record.allows_service(service):
            raise self._reject(
                "wrong_service",
                f"API key not valid for service {service!r}"
                if service is not None
                else "API key is limited to services and the route names none",
                "API key not valid for this service",
                kid,
            )
        metrics.API_KEY_CHECKS.labels(self.source, "ok").inc()
        claims: dict[str, object] = {"key_id": kid}
        if record.expires_at is not None:
            claims["exp"] = int(record.expires_at.timestamp())
        if record.services:
            claims["services"] = list(record.services)
        return Identity(
            method=METHOD,
            subject=record.consumer,
            consumer=record.consumer,
            tier=record.tier,
            scopes=record.scopes,
            roles=record.roles,
            claims=claims,
            source=self.source,
        )

    def _reject(self, result: str, reason: str, public: str, kid: str = "") -> AuthnFailure:
        metrics.API_KEY_CHECKS.labels(self.source, result).inc()
        return reject(
            result,
            f"{reason} (key_id={kid})" if kid else reason,
            public_reason=public,
            scheme=SCHEME,
            error="invalid_key",
        )
