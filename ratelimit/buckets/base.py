"""The backend interface: take hits from several buckets at once, all or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


class BackendUnavailable(Exception):
    """The store could not answer (down, slow past its timeout, or refused the command)."""


class BucketError(Exception):
    """The store answered, but one request's buckets could not be used (a key holding the
    wrong type or a corrupted value). Only that request fails; the backend is not down.

    ``index`` is the position of the offending bucket in the take, when the store knows it.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class BucketRequest:
    key: str
    algorithm: Literal["token_bucket", "fixed_window"]
    limit: int
    window_ms: int
    burst: int
    hits: int
    # A refusal of an enforcing bucket keeps every other bucket uncharged; shadow-mode and
    # quota-mode buckets do not enforce.
    enforce: bool = True
    # Charged even when refused or when another bucket refuses (envoyproxy/ratelimit counting).
    always_charge: bool = False
    # envoyproxy/ratelimit's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT: when a bucket of the
    # request is over, the first such bucket is charged anyway and these spare all the others.
    stop_increment: bool = False


@dataclass(frozen=True, slots=True)
class BucketResult:
    allowed: bool
    remaining: int
    reset_ms: int
    # When refused: ms until a single hit could pass (-1: never), for the over-limit cache.
    retry_ms: int = 0


class Backend(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def take(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]: ...
