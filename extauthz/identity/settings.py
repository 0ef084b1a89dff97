"""The ``authz.identity`` config section: ordered identity sources plus pipeline options.

Adding a verifier type: define its ``SourceSettings`` subclass (with ``type: Literal["x"]``)
in its own module, add it to ``IdentitySource`` below, and register its verifier factory in
``sidegate.extauthz.identity.registry``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from sidegate.extauthz.identity.api_keys.settings import ApiKeySourceSettings
from sidegate.extauthz.identity.introspection_settings import IntrospectionSourceSettings
from sidegate.extauthz.identity.jwt_settings import JwtSourceSettings
from sidegate.extauthz.identity.source import RouteLimits, SourceSettings, _Strict

IdentitySource = Annotated[
    JwtSourceSettings | ApiKeySourceSettings | IntrospectionSourceSettings,
    Field(discriminator="type"),
]

# RFC 9110 token characters; pseudo-headers (":path") and Host are not ext_authz's to set
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")

# Identity fields an upstream header can carry (see ``IdentitySettings.upstream_headers``).
IDENTITY_FIELDS = ("subject", "consumer", "tier", "roles", "scopes", "method", "source")


class IdentitySettings(_Strict):
    sources: list[IdentitySource] = Field(default_factory=list)
    # requests without a credential on these routes become the anonymous identity; e.g.
    # [{context_extensions: {auth: anonymous}}, {path_prefixes: [/public/]}]
    anonymous: list[RouteLimits] = Field(default_factory=list)
    # upstream header name -> identity field (subject, consumer, tier, roles, scopes, method,
    # source, or "claim:<name>"); client-sent copies of these headers never reach upstream
    upstream_headers: dict[str, str] = Field(default_factory=dict)
    # remove the credential (header / cookie) before the request goes upstream
    strip_credential: bool = False
    # The realm of WWW-Authenticate challenges on 401s.
    realm: str = Field(default="sidegate", pattern=r'^[^"\\\r\n]*$')

    @field_validator("upstream_headers")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for header, fld in value.items():
            if fld not in IDENTITY_FIELDS and not (fld.startswith("claim:") and len(fld) > 6):
                raise ValueError(
                    f"upstream header {header!r}: unknown identity field {fld!r} "
                    f"(one of {', '.join(IDENTITY_FIELDS)} or claim:<name>)"
                )
            name = header.lower()
            if not _HEADER_NAME.match(name) or name == "host":
                raise ValueError(f"upstream header {header!r} cannot be set by ext_authz")
            out[name] = fld
        return out

    @model_validator(mode="after")
    def _unique_names(self) -> IdentitySettings:
        names = [s.name for s in self.sources]
        if len(names) != len(set(names)):
            raise ValueError("identity source names must be unique")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.sources)

    def credential_headers(self) -> list[str]:
        """Every header a source reads a credential from (``cookie`` for cookie credentials):
        the decision log masks these on top of its own list."""
        names: dict[str, None] = {}
        for source in self.sources:
            for location in source.locations:
                if location.header_name:
                    names[location.header_name] = None
                elif location.cookie:
                    names["cookie"] = None
        return list(names)

    def credential_query_params(self) -> list[str]:
        """Every query parameter a source reads a credential from (masked in the decision log)."""
        return list(
            dict.fromkeys(
                location.query
                for source in self.sources
                for location in source.locations
                if location.query
            )
        )


__all__ = ["IdentitySettings", "IdentitySource", "RouteLimits", "SourceSettings"]
