"""What the store knows about one key: who it belongs to and what it may do, never the key."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sidegate.extauthz.identity.api_keys.digest import DIGEST_PATTERN
from sidegate.extauthz.identity.base import DEFAULT_TIER


class ApiKeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    digest: str
    consumer: str = Field(min_length=1)
    tier: str = DEFAULT_TIER
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    # Route services (context_extensions "service", else the host) the key is valid for;
    # empty means every service.
    services: tuple[str, ...] = ()
    expires_at: datetime | None = None
    disabled: bool = False
    description: str = ""
    # set by ``sidegate keys add``/``rotate``; absent on keys written by hand
    created_at: datetime | None = None

    @field_validator("digest")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not DIGEST_PATTERN.match(value):
            raise ValueError("digest must be 64 lower-case hex digits (SHA-256 / HMAC-SHA256)")
        return value

    @field_validator("consumer", "tier")
    @classmethod
    def _name(cls, value: str) -> str:
        # they become header values, metadata and rate-limit descriptor values
        if not value.strip():
            raise ValueError("must not be empty or whitespace only")
        return check_printable(value)

    @field_validator("roles", "scopes", "services")
    @classmethod
    def _names(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            check_printable(value)
        return values

    @field_validator("expires_at", "created_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at.timestamp() <= now

    def allows_service(self, service: str | None) -> bool:
        """A key limited to services needs a known service (None: the route names none)."""
        return not self.services or (service is not None and service in self.services)


def check_printable(value: str) -> str:
    """Refuse control and format characters (newlines, NUL, bidi overrides) in a record field."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise ValueError(f"contains the control character U+{ord(char):04X}")
    return value
