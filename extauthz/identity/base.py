"""The identity contract every verifier fulfils, and the failures it may raise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from sidegate.extauthz.request_view import RequestView

DEFAULT_TIER = "default"
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller. ``claims`` holds the raw verified claims (never the credential)."""

    method: str
    subject: str
    consumer: str
    tier: str = DEFAULT_TIER
    scopes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def as_input(self) -> dict[str, Any]:
        """The ``input.identity`` document a policy sees."""
        return {
            "method": self.method,
            "source": self.source,
            "subject": self.subject,
            "consumer": self.consumer,
            "tier": self.tier,
            "scopes": list(self.scopes),
            "roles": list(self.roles),
            "claims": self.claims,
            "authenticated": self.method != ANONYMOUS,
        }


ANONYMOUS_IDENTITY = Identity(method=ANONYMOUS, subject="", consumer=ANONYMOUS)

FailureKind = Literal["unauthenticated", "unavailable"]


class AuthnFailure(Exception):
    """A credential could not be accepted.

    ``kind`` tells a bad credential (401) from a dependency outage (503). ``reason`` is precise
    and goes to the log and the metric label; ``public_reason`` is short and safe for the
    client (``WWW-Authenticate`` error_description). Neither may contain the credential.
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: FailureKind = "unauthenticated",
        public_reason: str = "invalid credentials",
        scheme: str = "Bearer",
        error: str = "invalid_token",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.public_reason = public_reason
        self.scheme = scheme
        self.error = error


@dataclass(slots=True)
class UpstreamMutations:
    """Header changes the identity stage asks for on an allowed request."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    headers_to_remove: list[str] = field(default_factory=list)
    # e.g. a credential sent as a query parameter, stripped before the request goes upstream
    query_parameters_to_remove: list[str] = field(default_factory=list)


class Authenticator(Protocol):
    """Turns a request into an Identity, or raises AuthnFailure."""

    async def authenticate(self, view: RequestView) -> Identity: ...

    def upstream_mutations(self, identity: Identity, view: RequestView) -> UpstreamMutations:
        """Identity headers for the upstream, spoofable copies and credentials to strip."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class AnonymousAuthenticator:
    """Used when no identity source is configured: every caller is anonymous; the policy decides.

    The identity headers named in ``upstream_headers`` are still removed from every request: no
    verified identity stands behind them, so a client-sent ``x-user-id`` must not reach the
    upstream as if sidegate had set it.
    """

    # a class default too: subclasses (test doubles) that skip __init__ still strip nothing
    strip_headers: tuple[str, ...] = ()

    def __init__(self, strip_headers: Iterable[str] = ()) -> None:
        self.strip_headers = tuple(dict.fromkeys(name.lower() for name in strip_headers))

    async def authenticate(self, view: RequestView) -> Identity:
        return ANONYMOUS_IDENTITY

    def upstream_mutations(self, identity: Identity, view: RequestView) -> UpstreamMutations:
        return UpstreamMutations(headers_to_remove=list(self.strip_headers))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Verifier(Protocol):
    """Verifies one located credential (a token, a key) for one identity source.

    The identity pipeline finds the credential (header/query/cookie, prefix stripped) and calls
    the source's verifier; the verifier never searches the request for credentials itself.
    """

    method: str

    async def verify(self, credential: str, view: RequestView) -> Identity: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def reject(
    code: str,
    reason: str,
    *,
    public_reason: str = "invalid credentials",
    kind: FailureKind = "unauthenticated",
    scheme: str = "Bearer",
    error: str = "invalid_token",
) -> AuthnFailure:
    """An AuthnFailure carrying ``code``: a short label from a fixed vocabulary.

    The pipeline uses ``code`` as the metric label (bounded) and logs ``reason`` (precise).
    Failures built without it are labelled by their ``kind``.
    """
    failure = AuthnFailure(
        reason, kind=kind, public_reason=public_reason, scheme=scheme, error=error
    )
    failure.code = code  # type: ignore[attr-defined]
    return failure


def failure_code(failure: AuthnFailure) -> str:
    code = getattr(failure, "code", None)
    return code if isinstance(code, str) and code else failure.kind
