"""What the store knows about one key: who it belongs to and what it may do, never the key."""

from __future__ import annotations

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

    @field_validator("digest")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not DIGEST_PATTERN.match(value):
            raise ValueError("digest must be 64 lower-case hex digits (SHA-256 / HMAC-SHA256)")
        return value

    @field_validator("expires_at")
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
