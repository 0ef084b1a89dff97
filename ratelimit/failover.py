"""The shared backend guarded by a failure mode: error, allow, or local in-process buckets.

After a failure the backend is not tried for ``retry_interval`` (calls take the failure mode at
once instead of each waiting for a timeout); then one call probes it, and success switches every
call back. Each transition is logged and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from sidegate.ratelimit import metrics
from sidegate.ratelimit.buckets.base import Backend, BackendUnavailable, BucketRequest, BucketResult
from sidegate.ratelimit.buckets.memory import MemoryBackend
from sidegate.ratelimit.settings import FailureMode

log = structlog.get_logger("sidegate.ratelimit")


class FailoverBackend:
    def __init__(
        self,
        primary: Backend,
        *,
        retry_interval: float,
        local: MemoryBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.name = primary.name
        self.local = local or MemoryBackend()
        self.retry_interval = retry_interval
        self.clock = clock
        self.up = True
        self._retry_at = 0.0
        metrics.BACKEND_UP.labels(self.name).set(1)
        self._take_seconds = metrics.BACKEND_SECONDS.labels(self.name)

    async def start(self) -> None:
        try:
            await self.primary.start()
        except BackendUnavailable as exc:
            # Starting without Redis is allowed: calls follow the failure mode until it answers.
            self._mark_down(str(exc))

    async def close(self) -> None:
        await self.primary.close()
        await self.local.close()

    async def take(
        self, buckets: Sequence[BucketRequest], mode: FailureMode
    ) -> tuple[list[BucketResult] | None, str | None]:
        """Results and the failure mode used (None when the backend answered).

        Results are None for ``allow``; ``error`` raises BackendUnavailable.
        """
        now = self.clock()
        if not self.up and now < self._retry_at:
            return self._fallback(buckets, mode, "backend down")
        if not self.up:
            self._retry_at = now + self.retry_interval  # one probe at a time
        started = time.perf_counter()
        try:
            results = await self.primary.take(buckets)
        except BackendUnavailable as exc:
            metrics.BACKEND_ERRORS.labels(self.name).inc()
            if not getattr(exc, "backend_healthy", False):
                self._mark_down(str(exc))
            return self._fallback(buckets, mode, str(exc))
        self._take_seconds.observe(time.perf_counter() - started)
        if not self.up:
            self._mark_up()
        return results, None

    def fallback(
        self, buckets: Sequence[BucketRequest], mode: FailureMode, reason: str
    ) -> tuple[list[BucketResult] | None, str | None]:
        """The failure mode for one request whose buckets the backend could not use, while
        the backend itself answers (a corrupted key): nothing is marked down."""
        return self._fallback(buckets, mode, reason)

    def _fallback(
        self, buckets: Sequence[BucketRequest], mode: FailureMode, reason: str
    ) -> tuple[list[BucketResult] | None, str | None]:
        metrics.FAILURE_MODE_CALLS.labels(mode).inc()
        if mode == "error":
            raise BackendUnavailable(reason)
        if mode == "allow":
            return None, mode
        return self.local.take_now(buckets), mode

    def _mark_down(self, reason: str) -> None:
        self._retry_at = self.clock() + self.retry_interval
        if self.up:
            self.up = False
            metrics.BACKEND_UP.labels(self.name).set(0)
            metrics.BACKEND_TRANSITIONS.labels(self.name, "down").inc()
            log.warning("ratelimit_backend_down", backend=self.name, reason=reason)

    def _mark_up(self) -> None:
        self.up = True
        metrics.BACKEND_UP.labels(self.name).set(1)
        metrics.BACKEND_TRANSITIONS.labels(self.name, "up").inc()
        log.info("ratelimit_backend_up", backend=self.name)
