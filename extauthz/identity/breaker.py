"""A circuit breaker per upstream endpoint: stop calling a failing dependency for a while.

closed → (``failure_threshold`` consecutive failures) → open: calls fail fast for ``cool_off``
seconds → half-open: exactly one probe call goes through; its success closes the breaker, its
failure opens it again for another cool-off. Every transition is logged and counted, and the
state is a gauge (0 closed, 1 open, 2 half-open).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

import structlog

from sidegate.extauthz.identity import metrics

log = structlog.get_logger("sidegate.identity.breaker")


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        endpoint: str,
        *,
        failure_threshold: int = 5,
        cool_off: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.endpoint = endpoint
        self.failure_threshold = failure_threshold
        self.cool_off = cool_off
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        metrics.BREAKER_STATE.labels(endpoint).set(BreakerState.CLOSED)

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cool_off - self._clock())

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the single probe may."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self._clock() < self._opened_at + self.cool_off:
                return False
            self._transition(BreakerState.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._transition(BreakerState.OPEN)

    def abandon(self) -> None:
        """A call ended with neither verdict (cancelled): free the probe slot."""
        self._probing = False

    def _transition(self, to: BreakerState) -> None:
        previous = self._state
        self._state = to
        metrics.BREAKER_STATE.labels(self.endpoint).set(to)
        metrics.BREAKER_TRANSITIONS.labels(self.endpoint, to.name.lower()).inc()
        log.warning(
            "circuit breaker " + to.name.lower().replace("_", "-"),
            endpoint=self.endpoint,
            previous=previous.name.lower(),
            consecutive_failures=self._failures,
            cool_off_s=self.cool_off,
        )
