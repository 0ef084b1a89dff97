"""Builds an API-key verifier (and its store) from a ``type: api_key`` source's settings."""

from __future__ import annotations

from sidegate.extauthz.identity.api_keys.digest import KeyDigester
from sidegate.extauthz.identity.api_keys.file_store import FileKeyStore
from sidegate.extauthz.identity.api_keys.redis_store import RedisKeyStore
from sidegate.extauthz.identity.api_keys.settings import ApiKeySourceSettings, FileStoreSettings
from sidegate.extauthz.identity.api_keys.store import KeyStore
from sidegate.extauthz.identity.api_keys.verifier import ApiKeyVerifier


def build_store(settings: ApiKeySourceSettings) -> KeyStore:
    store = settings.store
    if isinstance(store, FileStoreSettings):
        file_store = FileKeyStore(store.path, reload_interval=store.reload_interval)
        # read now, so a missing or bad key file fails check-config and startup by name
        file_store.load()
        return file_store
    return RedisKeyStore(
        store.url,
        prefix=store.prefix,
        cache_ttl=store.cache_ttl,
        negative_cache_ttl=store.negative_cache_ttl,
        cache_size=store.cache_size,
        timeout=store.timeout,
    )


def build_api_key_verifier(settings: ApiKeySourceSettings) -> ApiKeyVerifier:
    """Reads a key file now (no network); Redis is pinged in ``start()``."""
    return ApiKeyVerifier(
        build_store(settings),
        digester=KeyDigester.from_env(settings.pepper_env),
        locations=settings.locations,
        source=settings.name,
        service_extension=settings.service_extension,
        service_from_authority=settings.service_from_authority,
    )
