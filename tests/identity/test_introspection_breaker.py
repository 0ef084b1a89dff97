"""The circuit breaker's state machine on its own, with a hand-moved clock."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from sidegate.extauthz.identity.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state_metric(endpoint: str) -> float | None:
    return REGISTRY.get_sample_value("sidegate_identity_breaker_state", {"endpoint": endpoint})


def test_consecutive_failures_open_and_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker("unit://a", failure_threshold=3, cool_off=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow()
    breaker.record_success()  # not consecutive any more
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert state_metric("unit://a") == 1
    assert not breaker.allow()
    assert breaker.retry_after == pytest.approx(10)
    clock.now += 9.9
    assert not breaker.allow()


def test_half_open_lets_one_probe_and_its_verdict_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker("unit://b", failure_threshold=1, cool_off=5, clock=clock)
    breaker.allow()
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert state_metric("unit://b") == 2
    assert not breaker.allow()  # nobody else meanwhile
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert state_metric("unit://b") == 0
    assert breaker.allow() and breaker.allow()


def test_an_abandoned_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker("unit://c", failure_threshold=1, cool_off=5, clock=clock)
    breaker.allow()
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.abandon()  # e.g. the request was cancelled mid-call
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("unit://d", failure_threshold=0)
