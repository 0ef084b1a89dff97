"""Settings of a ``type: introspection`` identity source (OAuth2 token introspection, RFC 7662)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sidegate.extauthz.identity.base import DEFAULT_TIER
from sidegate.extauthz.identity.fetch import check_url
from sidegate.extauthz.identity.source import SourceSettings, _Strict


class IntrospectionCacheSettings(_Strict):
    # positive entries live min(max_ttl, exp - now); 0 disables caching of active tokens
    max_ttl: float = Field(default=60.0, ge=0)
    # inactive tokens are remembered briefly (against brute force and hot loops)
    negative_ttl: float = Field(default=10.0, ge=0)
    max_entries: int = Field(default=10_000, ge=1)


class BreakerSettings(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    cool_off: float = Field(default=30.0, gt=0)


class IntrospectionSourceSettings(SourceSettings):
    type: Literal["introspection"]
    endpoint: str = Field(pattern=r"^https?://[^\s?#]+$")
    client_id: str = Field(min_length=1)
    # name of the environment variable holding the client secret (the secret is never in config)
    client_secret_env: str = Field(min_length=1)
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    token_type_hint: str | None = "access_token"
    timeout: float = Field(default=2.0, gt=0)
    connect_timeout: float = Field(default=1.0, gt=0)
    max_connections: int = Field(default=100, ge=1)
    # introspection calls in flight at once (distinct tokens); beyond it a request gets 503 at
    # once instead of queueing: a flood of random tokens must not build an unbounded backlog
    max_concurrent: int = Field(default=64, ge=1)
    # longer credentials are refused (401) without a call, as for JWTs
    max_token_bytes: int = Field(default=8192, gt=0)
    cache: IntrospectionCacheSettings = Field(default_factory=IntrospectionCacheSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    # checks sidegate makes itself on an active token
    leeway: float = Field(default=0.0, ge=0, le=300)
    issuer: str | None = None
    audiences: list[str] = Field(default_factory=list)  # the token's aud must contain one
    required_scopes: list[str] = Field(default_factory=list)  # all must be granted
    reject_token_types: list[str] = Field(default_factory=lambda: ["refresh_token"])
    # identity mapping from the introspection response
    subject_claims: list[str] = Field(default_factory=lambda: ["sub", "client_id", "username"])
    consumer_claim: str = "client_id"
    tier_claim: str | None = None
    default_tier: str = DEFAULT_TIER
    roles_claim: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        # the client secret and every token go to it: https, or http only to loopback
        check_url(value)
        return value

    @field_validator("subject_claims")
    @classmethod
    def _some_subject(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("subject_claims needs at least one claim name")
        return value
