"""The identity stage: pick the source whose credential a request carries, verify it.

Sources are tried in config order. A source applies when its route limits match, its
credential is present and of a shape the source claims (``shape``: a JWT source takes only
JWT-shaped tokens by default); the first such source decides: a credential that fails verification
is a 401 (or 503 for an outage), never a fall-through to a later, maybe weaker, source. No
credential at all is a 401 unless an ``anonymous`` rule covers the route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from sidegate.common.metric_children import LabelledChildren
from sidegate.extauthz.identity import metrics
from sidegate.extauthz.identity.base import (
    ANONYMOUS_IDENTITY,
    AuthnFailure,
    Identity,
    UpstreamMutations,
    Verifier,
    failure_code,
    reject,
)
from sidegate.extauthz.identity.credentials import cookie_without, locate
from sidegate.extauthz.identity.registry import build_verifier
from sidegate.extauthz.identity.token_shape import claims

if TYPE_CHECKING:
    from sidegate.extauthz.identity.settings import IdentitySettings
    from sidegate.extauthz.identity.source import RouteLimits, SourceSettings
    from sidegate.extauthz.request_view import RequestView

log = structlog.get_logger("sidegate.identity")

NO_SOURCE = "-"

# The "ok" count of every verified request: children looked up once per configured source
# name (bounded), see common/metric_children.py.
_VERIFIED = LabelledChildren(metrics.VERIFICATIONS)


def normalized_path(view: RequestView) -> str:
    """The decoded path with empty, ``.`` and ``..`` segments resolved, for prefix rules.

    Without this, ``/public/../admin`` would match an anonymous ``/public/`` prefix.
    """
    parts: list[str] = []
    for segment in view.decoded_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    trailing = "/" if view.decoded_path.endswith("/") and parts else ""
    return "/" + "/".join(parts) + trailing


def _host_without_port(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _host_matches(pattern: str, host: str) -> bool:
    pattern = pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _prefix_matches(prefix: str, path: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def route_matches(limits: RouteLimits, view: RequestView) -> bool:
    for key, value in limits.context_extensions.items():
        if view.context_extensions.get(key) != value:
            return False
    if limits.hosts:
        host = _host_without_port(view.host)
        if not any(_host_matches(p, host) for p in limits.hosts):
            return False
    if limits.path_prefixes:
        path = normalized_path(view)
        if not any(_prefix_matches(p, path) for p in limits.path_prefixes):
            return False
    return True


def _header_safe(value: str) -> bool:
    return all(ch == "\t" or " " <= ch <= "~" for ch in value)


def identity_field(identity: Identity, field: str) -> str:
    """An identity field rendered as one header value ("" when absent)."""
    value: Any
    if field.startswith("claim:"):
        value = identity.claims.get(field[6:])
    else:
        value = getattr(identity, field)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value if isinstance(v, str | int | float))
    return ""


def _located(source: SourceSettings, view: RequestView) -> str | None:
    """The credential from the first of the source's locations that has one."""
    for location in source.locations:
        credential = locate(location, view)
        if credential is not None:
            return credential
    return None


class IdentityPipeline:
    """The Authenticator used when identity sources are configured."""

    def __init__(
        self,
        settings: IdentitySettings,
        verifiers: Mapping[str, Verifier] | None = None,
    ) -> None:
        self.settings = settings
        given = dict(verifiers or {})
        self.sources: list[tuple[SourceSettings, Verifier]] = [
            (source, given.get(source.name) or build_verifier(source))
            for source in settings.sources
        ]
        self._by_name = {source.name: source for source, _ in self.sources}

    async def start(self) -> None:
        for _, verifier in self.sources:
            await verifier.start()

    async def close(self) -> None:
        for _, verifier in self.sources:
            await verifier.close()

    def reload(self) -> bool:
        """SIGHUP: each verifier re-reads its files; one that fails keeps its old state."""
        ok = True
        for source, verifier in self.sources:
            reload = getattr(verifier, "reload", None)
            if reload is None:
                continue
            try:
                ok = bool(reload()) and ok
            except Exception:
                log.exception("identity_reload_failed", source=source.name)
                ok = False
        return ok

    def select(
        self, view: RequestView
    ) -> tuple[tuple[SourceSettings, Verifier, str] | None, SourceSettings | None]:
        """Which source takes this request's credential: ``((source, verifier, credential),
        None)``; else ``(None, source)`` when a credential was found that no source claims (the
        first source that found it); else ``(None, None)``: no credential at all."""
        unclaimed: SourceSettings | None = None
        pending: str | None = None
        for source, verifier in self.sources:
            if not route_matches(source.routes, view):
                continue
            credential = _located(source, view)
            if credential is None:
                continue
            if unclaimed is not None and credential != pending:
                # only the credential left unclaimed may still be taken: a second one found
                # elsewhere in the request must not rescue it (no fall-through)
                continue
            if not claims(source.shape, credential):
                # e.g. an opaque token at a JWT source: a later source may claim it
                if unclaimed is None:
                    unclaimed, pending = source, credential
                continue
            return (source, verifier, credential), None
        return None, unclaimed

    async def authenticate(self, view: RequestView) -> Identity:
        taken, unclaimed = self.select(view)
        if taken is not None:
            source, verifier, credential = taken
            return await self._verify(source, verifier, credential, view)
        if unclaimed is not None:
            # A credential was sent but no source takes it: a bad credential, never anonymous.
            raise self._unclaimed(unclaimed, view)
        if any(route_matches(rule, view) for rule in self.settings.anonymous):
            metrics.VERIFICATIONS.labels(NO_SOURCE, "anonymous", "no_credential").inc()
            return ANONYMOUS_IDENTITY
        metrics.VERIFICATIONS.labels(NO_SOURCE, "missing", "no_credential").inc()
        # RFC 6750 §3.1: no error code when the request carried no credential at all
        raise reject(
            "no_credential",
            "no credential found for this route",
            public_reason="authentication required",
            scheme=self._challenge_scheme(view),
            error="",
        )

    async def _verify(
        self, source: SourceSettings, verifier: Verifier, credential: str, view: RequestView
    ) -> Identity:
        try:
            identity = await verifier.verify(credential, view)
        except AuthnFailure as failure:
            code = failure_code(failure)
            outcome = "unavailable" if failure.kind == "unavailable" else "rejected"
            metrics.VERIFICATIONS.labels(source.name, outcome, code).inc()
            failure.scheme = source.scheme
            log.info(
                "identity_rejected",
                source=source.name,
                code=code,
                reason=failure.reason,
                request_id=view.request_id,
            )
            raise
        except Exception as exc:
            # a verifier bug must not take the request down with an unhandled error
            metrics.VERIFICATIONS.labels(source.name, "unavailable", "internal_error").inc()
            log.exception("identity_verifier_error", source=source.name)
            raise reject(
                "internal_error",
                f"verifier {source.name!r} failed: {type(exc).__name__}",
                kind="unavailable",
                public_reason="temporarily unavailable",
            ) from exc
        _VERIFIED(source.name, "ok", "ok").inc()
        if identity.source != source.name:
            identity = Identity(
                method=identity.method,
                subject=identity.subject,
                consumer=identity.consumer,
                tier=identity.tier,
                scopes=identity.scopes,
                roles=identity.roles,
                claims=identity.claims,
                source=source.name,
            )
        return identity

    def _unclaimed(self, source: SourceSettings, view: RequestView) -> AuthnFailure:
        metrics.VERIFICATIONS.labels(source.name, "rejected", "malformed").inc()
        reason = f"credential shape is not one this route's sources claim ({source.shape})"
        log.info(
            "identity_rejected",
            source=source.name,
            code="malformed",
            reason=reason,
            request_id=view.request_id,
        )
        return reject("malformed", reason, public_reason="invalid token", scheme=source.scheme)

    def _challenge_scheme(self, view: RequestView) -> str:
        for source, _ in self.sources:
            if route_matches(source.routes, view):
                return source.scheme
        return "Bearer"

    def upstream_mutations(self, identity: Identity, view: RequestView) -> UpstreamMutations:
        """Identity headers (overwriting), and removal of every configured one left unset.

        Envoy applies ``headers`` before ``headers_to_remove``: a header we set is never also
        removed (that would delete our own value); overwriting (append=false) already drops
        every client-sent copy of it.
        """
        mutations = UpstreamMutations()
        for name, field in self.settings.upstream_headers.items():
            value = identity_field(identity, field)
            if value and _header_safe(value):
                mutations.headers.append((name, value))
            else:
                mutations.headers_to_remove.append(name)
        source = self._by_name.get(identity.source)
        if source is not None and (self.settings.strip_credential or source.hide_credentials):
            self._strip(source, view, mutations)
        return mutations

    def _strip(
        self, source: SourceSettings, view: RequestView, mutations: UpstreamMutations
    ) -> None:
        set_names = {name for name, _ in mutations.headers}
        for location in source.locations:
            if location.header_name:
                if location.header_name not in set_names:
                    mutations.headers_to_remove.append(location.header_name)
            elif location.cookie:
                remaining = cookie_without(view, location.cookie)
                if remaining == "":
                    mutations.headers_to_remove.append("cookie")
                elif remaining is not None:
                    mutations.headers.append(("cookie", remaining))
            elif location.query:
                mutations.query_parameters_to_remove.append(location.query)
