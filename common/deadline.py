"""The gRPC call's deadline, visible to every outbound wait on the request path.

Envoy gives each Check and ShouldRateLimit a timeout (ext_authz defaults to 200 ms, the rate-limit
filter to 20 ms). A wait that outlives it is worse than useless: Envoy has already answered with
its failure mode. So the servicer records the call's deadline once (``start_call``) and every
outbound wait (JWKS refetch, introspection, remote OPA, Redis) asks ``bound(own_timeout)`` for the
time it may still take, so that sidegate answers first, with its own deliberate outcome.

A ``ContextVar`` carries it because each gRPC call runs in its own asyncio task: tasks created
while handling the call inherit the value, other calls never see it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

# Answer this much before the caller's deadline (a share of the call's budget, within bounds):
# room to build and send the deny after a dependency wait gave up.
MARGIN_SHARE = 0.1
MIN_MARGIN_S = 0.001
MAX_MARGIN_S = 0.05

Clock = Callable[[], float]

_deadline: ContextVar[float | None] = ContextVar("sidegate_call_deadline", default=None)


class DeadlineExceeded(Exception):
    """The call's remaining time is used up: give up the wait, answer per the failure mode."""


def start_call(time_remaining: float | None, clock: Clock = time.monotonic) -> Token[float | None]:
    """Record the call's deadline from gRPC's ``context.time_remaining()`` (None: no deadline)."""
    if time_remaining is None:
        return _deadline.set(None)
    margin = min(max(time_remaining * MARGIN_SHARE, MIN_MARGIN_S), MAX_MARGIN_S)
    return _deadline.set(clock() + max(time_remaining - margin, 0.0))


def end_call(token: Token[float | None]) -> None:
    _deadline.reset(token)


@contextmanager
def within_call(time_remaining: float | None, clock: Clock = time.monotonic) -> Iterator[None]:
    """``start_call`` on entry, ``end_call`` on exit: the block runs as inside a gRPC call with
    ``time_remaining`` seconds left."""
    token = start_call(time_remaining, clock)
    try:
        yield
    finally:
        end_call(token)


def remaining(clock: Clock = time.monotonic) -> float | None:
    """Seconds left before this call must answer, or None outside a call / without a deadline."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - clock()


def bound(timeout: float, clock: Clock = time.monotonic) -> float:
    """``timeout`` cut to the call's remaining time; raises ``DeadlineExceeded`` when none is left.

    Use it for every outbound wait: ``await asyncio.wait_for(op, deadline.bound(cfg.timeout))``.
    """
    left = remaining(clock)
    if left is None:
        return timeout
    if left <= 0:
        raise DeadlineExceeded("the call's deadline has passed")
    return min(timeout, left)
