"""The key-store contract: look a record up by digest; the CLI also lists, adds, updates
and revokes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sidegate.extauthz.errors import AuthzConfigError

if TYPE_CHECKING:
    from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord


class KeyStoreError(AuthzConfigError, ValueError):
    """A key store cannot be used as configured (bad file, missing pepper); names the problem."""


class KeyStoreUnavailable(Exception):
    """The store could not answer (Redis down); the request is an outage (503), not a 401."""


class KeyStore(Protocol):
    kind: str

    async def lookup(self, digest: str) -> ApiKeyRecord | None: ...

    async def add(self, record: ApiKeyRecord) -> None: ...

    async def revoke(self, digest: str) -> bool: ...

    async def update(self, record: ApiKeyRecord) -> None: ...

    async def list_records(self) -> list[ApiKeyRecord]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
