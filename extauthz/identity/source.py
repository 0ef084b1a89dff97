"""Settings every identity source shares: where its credential is, and which routes it covers.

Each verifier type (jwt, api_key, introspection) subclasses ``SourceSettings`` with a
``type: Literal[...]`` field; ``sidegate.extauthz.identity.settings`` joins them into one union
discriminated on ``type``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from sidegate.extauthz.identity.token_shape import Shape


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths are relative to the config file's directory (loader passes base_dir)."""
    base = (info.context or {}).get("base_dir")
    if value is not None and base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


class CredentialLocation(_Strict):
    """Exactly one of ``header`` (with an optional ``prefix``), ``query`` or ``cookie``."""

    # Read the credential from this request header.
    header: str | None = None
    # e.g. "Bearer ": matched case-insensitively (RFC 7235 schemes); stripped from the value
    prefix: str | None = None
    # Read the credential from this query parameter.
    query: str | None = None
    # Read the credential from this cookie.
    cookie: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialLocation:
        places = [p for p in (self.header, self.query, self.cookie) if p]
        if len(places) != 1:
            raise ValueError("set exactly one of header, query, cookie")
        if self.prefix is not None and not self.header:
            raise ValueError("prefix applies only to a header credential")
        return self

    @property
    def header_name(self) -> str | None:
        return self.header.lower() if self.header else None


def _bearer() -> CredentialLocation:
    return CredentialLocation(header="authorization", prefix="Bearer ")


class RouteLimits(_Strict):
    """Which requests a source (or the anonymous rule) covers; empty lists mean "any".

    Every given criterion must match: all ``context_extensions`` pairs, one of ``hosts``
    (exact, port ignored, case-insensitive; ``*.example.com`` matches subdomains), one of
    ``path_prefixes`` (on the percent-decoded path, at segment boundary when the prefix
    ends without ``/``).
    """

    # Applies when the route's context_extensions hold all of these.
    context_extensions: dict[str, str] = Field(default_factory=dict)
    # Applies to these hosts (a leading *. matches subdomains).
    hosts: list[str] = Field(default_factory=list)
    # Applies to paths under these prefixes (normalised, decoded path).
    path_prefixes: list[str] = Field(default_factory=list)

    @property
    def unrestricted(self) -> bool:
        return not (self.context_extensions or self.hosts or self.path_prefixes)


class SourceSettings(_Strict):
    """The part of an identity source every verifier type has."""

    # The source's name in logs, metrics and check-config messages.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    credential: CredentialLocation = Field(default_factory=_bearer)
    routes: RouteLimits = Field(default_factory=RouteLimits)
    # the auth-scheme of this source's 401 challenge (WWW-Authenticate)
    scheme: str = "Bearer"
    # strip this source's credential before the request goes upstream (as identity-wide
    # ``strip_credential``, for this source only)
    hide_credentials: bool = False
    # which located credentials this source claims: "jwt" (JWT-shaped tokens only, the default
    # of jwt sources), "opaque" (every other credential) or "any" (the default of the others);
    # a credential the source does not claim goes on to the next source
    shape: Shape = "any"

    @property
    def locations(self) -> tuple[CredentialLocation, ...]:
        """Every place this source's credential may be, in lookup order."""
        return (self.credential,)
