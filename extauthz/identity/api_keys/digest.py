"""How an API key becomes the digest it is stored and looked up by.

Keys are random and high-entropy, so a plain SHA-256 is enough against a stolen store; a pepper
(a secret kept outside the store, e.g. in the environment) turns it into HMAC-SHA256 so a leaked
store cannot even be checked against guessed keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets

from sidegate.extauthz.identity.api_keys.store import KeyStoreError

DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")
KEY_BYTES = 32


class KeyDigester:
    """Maps a cleartext key to its hex digest: SHA-256, or HMAC-SHA256 keyed with a pepper."""

    def __init__(self, pepper: bytes | None = None) -> None:
        self._pepper = pepper or None

    @classmethod
    def from_env(cls, pepper_env: str | None) -> KeyDigester:
        """Read the pepper from the named environment variable (fails if it is unset/empty)."""
        if not pepper_env:
            return cls()
        value = os.environ.get(pepper_env)
        if not value:
            raise KeyStoreError(f"API key pepper variable {pepper_env} is unset or empty")
        return cls(value.encode())

    @property
    def keyed(self) -> bool:
        return self._pepper is not None

    def digest(self, key: str) -> str:
        data = key.encode("utf-8", "surrogateescape")
        if self._pepper is not None:
            return hmac.new(self._pepper, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()


def new_key(prefix: str = "sg_") -> str:
    """A fresh random key (256 bits, URL-safe) with a recognisable prefix for secret scanners."""
    return prefix + secrets.token_urlsafe(KEY_BYTES)


def key_id(digest: str) -> str:
    """A short, non-secret handle for logs and metrics: the digest's first 12 hex digits."""
    return digest[:12]
