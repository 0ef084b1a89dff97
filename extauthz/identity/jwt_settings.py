"""Settings of a ``type: jwt`` identity source: issuers, their keys, checks and claim mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sidegate.extauthz.identity.fetch import check_url
from sidegate.extauthz.identity.source import SourceSettings, _Strict, resolve_path
from sidegate.extauthz.identity.token_shape import Shape

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256", "RS384", "RS512",
        "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512",
        "EdDSA",
    }
)  # fmt: skip
Algorithm = Literal[
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA",
    "HS256", "HS384", "HS512",
]  # fmt: skip

# RFC 8725 §3.5 / RFC 7518 §3.2: an HMAC key at least as long as the hash output
MIN_HMAC_SECRET_BYTES = 32


class StaticKey(_Strict):
    """One key given in config: a public key (PEM text or file, or a JWK) or an HMAC secret."""

    # The key id tokens name in their kid header (optional with one key).
    kid: str | None = None
    # A public key in PEM, inline.
    pem: str | None = None
    # A PEM file with a public key, relative to the config file.
    pem_file: Path | None = None
    # A public key as a JWK object.
    jwk: dict[str, Any] | None = None
    # An HMAC secret (at least 32 bytes), inline; masked by config show.
    secret: str | None = None
    # A file holding an HMAC secret.
    secret_file: Path | None = None

    _resolve_pem_file = field_validator("pem_file")(resolve_path)
    _resolve_secret_file = field_validator("secret_file")(resolve_path)

    @model_validator(mode="after")
    def _exactly_one(self) -> StaticKey:
        given = [v for v in (self.pem, self.pem_file, self.jwk, self.secret, self.secret_file)]
        if sum(v is not None for v in given) != 1:
            raise ValueError("set exactly one of pem, pem_file, jwk, secret, secret_file")
        if self.jwk is not None and (self.jwk.get("kty") == "oct" or "d" in self.jwk):
            raise ValueError("jwk must be a public key (HMAC secrets go in secret/secret_file)")
        if self.secret is not None and len(self.secret.encode()) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(f"HMAC secret shorter than {MIN_HMAC_SECRET_BYTES} bytes")
        return self

    @property
    def is_secret(self) -> bool:
        return self.secret is not None or self.secret_file is not None


class JwksSettings(_Strict):
    """How remote keys (discovery / jwks_uri) are fetched and cached."""

    # Seconds fetched keys are used before a refresh.
    ttl_seconds: float = Field(default=600.0, gt=0)
    # an unknown kid may trigger at most one refetch per cooldown
    cooldown_seconds: float = Field(default=30.0, ge=0)
    # after a failed fetch, wait this long before trying again
    retry_seconds: float = Field(default=5.0, ge=0)
    # Seconds one discovery or JWKS fetch may take (a request waits at most its deadline).
    timeout_seconds: float = Field(default=5.0, gt=0)
    # Largest JWKS or discovery document accepted.
    max_bytes: int = Field(default=256 * 1024, gt=0)
    # Most keys a JWKS may hold.
    max_keys: int = Field(default=64, gt=0)
    # Unknown kids remembered (so a burst of random kids makes at most one refetch).
    max_unknown_kids: int = Field(default=1024, gt=0)


class ClaimMapping(_Strict):
    """Which claims become Identity fields; each list is tried in order, first present wins.

    Names may be dotted paths into nested objects (``realm_access.roles``).
    """

    # The claim that becomes identity.subject.
    subject: list[str] = Field(default_factory=lambda: ["sub"])
    # RFC 9068 §2.2: client_id is the client; azp (OIDC) for IdPs that do not send it
    consumer: list[str] = Field(default_factory=lambda: ["client_id", "azp", "sub"])
    # The claim holding the caller's tier (rate-limit quotas).
    tier: list[str] = Field(default_factory=lambda: ["tier"])
    # The tier when the token has no tier claim.
    default_tier: str = "default"
    # The claim holding roles (a list or a space-separated string).
    roles: list[str] = Field(default_factory=lambda: ["roles"])
    # a space-separated string (``scope``) or an array (``scp``)
    scopes: list[str] = Field(default_factory=lambda: ["scope", "scp"])


class IssuerSettings(_Strict):
    """One trusted issuer, bound to its own keys."""

    # The iss value tokens must carry exactly; with discovery, also where keys are found.
    issuer: str = Field(min_length=1)
    # keys from exactly one of: OIDC discovery on ``issuer``, a JWKS URL, static keys
    discovery: bool = False
    # A JWKS URL (https, except on loopback) instead of discovery.
    jwks_uri: str | None = None
    keys: list[StaticKey] = Field(default_factory=list)
    # Signature algorithms accepted; the token's alg header never chooses.
    algorithms: list[Algorithm] = Field(default_factory=lambda: ["RS256"], min_length=1)
    # A token's aud must contain one of these (none: aud not checked, with a warning: RFC 8725).
    audiences: list[str] = Field(default_factory=list)
    # e.g. "at+jwt" (RFC 9068); compared case-insensitively, "application/" prefix optional
    typ: str | None = None
    # Clock skew allowed on exp, nbf and iat (Envoy's jwt_authn uses 60, PyJWT 0).
    leeway_seconds: float = Field(default=30.0, ge=0)
    # When set, tokens whose exp is further than this after iat are refused.
    max_lifetime_seconds: float | None = Field(default=None, gt=0)
    # Claims every token must carry.
    required_claims: list[str] = Field(default_factory=list)
    claims: ClaimMapping = Field(default_factory=ClaimMapping)
    jwks: JwksSettings = Field(default_factory=JwksSettings)

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerSettings:
        sources = [self.discovery, self.jwks_uri is not None, bool(self.keys)]
        if sum(sources) != 1:
            raise ValueError(
                f"issuer {self.issuer!r}: set exactly one of discovery, jwks_uri, keys"
            )
        for url in (self.jwks_uri, self.issuer if self.discovery else None):
            if url is not None:
                check_url(url)
        hmac = set(self.algorithms) & HMAC_ALGORITHMS
        asym = set(self.algorithms) & ASYMMETRIC_ALGORITHMS
        secrets = [k for k in self.keys if k.is_secret]
        if hmac and asym:
            raise ValueError(
                f"issuer {self.issuer!r}: HMAC and asymmetric algorithms cannot be mixed"
            )
        if hmac and (not self.keys or len(secrets) != len(self.keys)):
            raise ValueError(
                f"issuer {self.issuer!r}: HMAC algorithms need static secret keys and only those"
            )
        if secrets and not hmac:
            raise ValueError(f"issuer {self.issuer!r}: secret keys need HMAC algorithms")
        return self


class JwtSourceSettings(SourceSettings):
    # JSON Web Tokens verified with each issuer's keys (JWKS, discovery or static keys).
    type: Literal["jwt"]
    # claim only JWT-shaped bearer tokens, so an introspection source may take the opaque ones
    shape: Shape = "jwt"
    issuers: list[IssuerSettings] = Field(min_length=1)
    # Longer tokens are refused (401) before any decoding.
    max_token_bytes: int = Field(default=8192, gt=0)
    # Longest JOSE header accepted.
    max_header_bytes: int = Field(default=1024, gt=0)
    # Longest kid accepted.
    max_kid_length: int = Field(default=128, gt=0)
    # verified-token cache: SHA-256(token) -> Identity, never past the token's exp
    token_cache: bool = True
    # Verified tokens remembered (bounded LRU keyed by SHA-256 of the token).
    token_cache_entries: int = Field(default=10_000, gt=0)
    # Longest a verified token is remembered (never past its exp).
    token_cache_max_ttl_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _unique_issuers(self) -> JwtSourceSettings:
        names = [i.issuer for i in self.issuers]
        if len(names) != len(set(names)):
            raise ValueError("each issuer may appear once per source")
        return self
