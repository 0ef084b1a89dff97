"""The call deadline: recorded once per call, cut from every outbound wait, never leaked."""

from __future__ import annotations

import asyncio

import pytest

from sidegate.common import deadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outside_a_call_the_own_timeout_applies() -> None:
    assert deadline.remaining() is None
    assert deadline.bound(2.5) == 2.5


def test_bound_is_the_smaller_of_timeout_and_remaining_minus_margin() -> None:
    clock = FakeClock()
    token = deadline.start_call(0.2, clock)
    try:
        # 10 % of a 200 ms budget is kept as the margin.
        assert deadline.bound(5.0, clock) == pytest.approx(0.18)
        assert deadline.bound(0.05, clock) == pytest.approx(0.05)
        clock.now += 0.17
        assert deadline.bound(5.0, clock) == pytest.approx(0.01)
        clock.now += 0.02
        with pytest.raises(deadline.DeadlineExceeded):
            deadline.bound(5.0, clock)
    finally:
        deadline.end_call(token)
    assert deadline.remaining() is None


def test_margin_is_bounded_both_ways() -> None:
    clock = FakeClock()
    token = deadline.start_call(10.0, clock)
    try:
        assert deadline.remaining(clock) == pytest.approx(10.0 - deadline.MAX_MARGIN_S)
    finally:
        deadline.end_call(token)
    token = deadline.start_call(0.005, clock)
    try:
        assert deadline.remaining(clock) == pytest.approx(0.005 - deadline.MIN_MARGIN_S)
    finally:
        deadline.end_call(token)


def test_no_deadline_means_no_bound() -> None:
    token = deadline.start_call(None)
    try:
        assert deadline.bound(1.0) == 1.0
    finally:
        deadline.end_call(token)


async def test_each_task_sees_only_its_own_call() -> None:
    clock = FakeClock()
    seen: dict[str, float | None] = {}

    async def call(name: str, budget: float) -> None:
        token = deadline.start_call(budget, clock)
        try:
            await asyncio.sleep(0)
            seen[name] = deadline.remaining(clock)
        finally:
            deadline.end_call(token)

    await asyncio.gather(call("short", 0.02), call("long", 1.0))
    assert seen["short"] == pytest.approx(0.018)
    assert seen["long"] == pytest.approx(0.95)
    assert deadline.remaining() is None



def test_within_call_sets_the_deadline_for_the_block_only() -> None:
    clock = FakeClock()
    with deadline.within_call(0.2, clock):
        assert deadline.remaining(clock) == pytest.approx(0.18)  # less the 10 % margin
    assert deadline.remaining(clock) is None
    with pytest.raises(ValueError), deadline.within_call(0.2, clock):
        raise ValueError("the block failed")
    assert deadline.remaining(clock) is None
