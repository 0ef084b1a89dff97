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
    # Introspection answers kept (bounded LRU, keyed by a hash of the token).
    max_entries: int = Field(default=10_000, ge=1)


class BreakerSettings(_Strict):
    # Consecutive outages (5xx, timeouts, connection errors) that open the breaker.
    failure_threshold: int = Field(default=5, ge=1)
    # Seconds the breaker stays open before one trial call.
    cool_off: float = Field(default=30.0, gt=0)


class IntrospectionSourceSettings(SourceSettings):
    # Opaque tokens checked at an OAuth2 token introspection endpoint (RFC 7662).
    type: Literal["introspection"]
    # The introspection endpoint (https, except on loopback).
    endpoint: str = Field(pattern=r"^https?://[^\s?#]+$")
    # The client sidegate authenticates as at the endpoint.
    client_id: str = Field(min_length=1)
    # name of the environment variable holding the client secret (the secret is never in config)
    client_secret_env: str = Field(min_length=1)
    # How the client authenticates: HTTP Basic or form fields (RFC 6749 section 2.3.1).
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    # Sent as token_type_hint with each request (RFC 7662 section 2.1).
    token_type_hint: str | None = "access_token"
    # Seconds one introspection call may take (also cut to the call's deadline); then 503.
    timeout: float = Field(default=2.0, gt=0)
    # Seconds to connect to the endpoint.
    connect_timeout: float = Field(default=1.0, gt=0)
    # Pooled connections to the endpoint.
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
    # When set, an active token's iss must equal it.
    issuer: str | None = None
    audiences: list[str] = Field(default_factory=list)  # the token's aud must contain one
    required_scopes: list[str] = Field(default_factory=list)  # all must be granted
    # token_type values refused even when active (refresh tokens are not access tokens).
    reject_token_types: list[str] = Field(default_factory=lambda: ["refresh_token"])
    # identity mapping from the introspection response
    subject_claims: list[str] = Field(default_factory=lambda: ["sub", "client_id", "username"])
    # Claims of the introspection answer tried in order for the consumer.
    consumer_claim: str = "client_id"
    # The claim holding the caller's tier (rate-limit quotas).
    tier_claim: str | None = None
    # The tier when the answer has no tier claim.
    default_tier: str = DEFAULT_TIER
    # The claim holding roles (a list or a space-separated string).
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
