"""Settings of a ``type: api_key`` identity source: where keys are read, and the key store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from sidegate.extauthz.identity.api_keys.redis_store import DEFAULT_PREFIX
from sidegate.extauthz.identity.source import (
    CredentialLocation,
    SourceSettings,
    _Strict,
    resolve_path,
)


class FileStoreSettings(_Strict):
    # A YAML key file (`sidegate keys add` writes it); reloaded when it changes.
    type: Literal["file"]
    # The key file, relative to the config file.
    path: Path
    # seconds between checks of the file for changes; 0 reads it once at start
    reload_interval: float = Field(default=2.0, ge=0)

    _resolve_path = field_validator("path")(resolve_path)


class RedisStoreSettings(_Strict):
    # Keys in Redis, shared by every sidegate instance (one hash per digest).
    type: Literal["redis"]
    # redis://, rediss:// or unix:// URL of the key store (a password in it is never logged).
    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    # Prefix of the key records' Redis keys.
    prefix: str = DEFAULT_PREFIX
    # local cache of lookups: a new or revoked key is seen by every instance within these
    cache_ttl: float = Field(default=5.0, ge=0)
    # Seconds an unknown key is remembered as unknown (spares Redis a flood of bad keys).
    negative_cache_ttl: float = Field(default=1.0, ge=0)
    # Key records kept in the local cache (bounded LRU).
    cache_size: int = Field(default=10_000, ge=1)
    # Seconds a lookup may wait for Redis (also cut to the call's deadline); then 503.
    timeout: float = Field(default=0.5, gt=0)


KeyStoreSettings = Annotated[FileStoreSettings | RedisStoreSettings, Field(discriminator="type")]


def _api_key_header() -> CredentialLocation:
    return CredentialLocation(header="x-api-key")


class ApiKeySourceSettings(SourceSettings):
    # API keys looked up by digest in a key store (file or Redis).
    type: Literal["api_key"]
    credential: CredentialLocation = Field(default_factory=_api_key_header)
    # more places a key may come from, e.g. [{header: authorization, prefix: "ApiKey "},
    # {query: api_key}]; two different keys across all of them are a 401
    also_accept: list[CredentialLocation] = Field(default_factory=list)
    scheme: str = "ApiKey"
    store: KeyStoreSettings
    # environment variable holding a pepper: digests become HMAC-SHA256(pepper, key)
    pepper_env: str | None = None
    # the context extension naming the route's service (the route's, not the client's choice)
    service_extension: str = "service"
    # without that extension, take the service from the request's :authority (Host). Off by
    # default: behind a wildcard virtual host the client picks the Host, and so the service
    service_from_authority: bool = False

    @property
    def locations(self) -> tuple[CredentialLocation, ...]:
        return (self.credential, *self.also_accept)
