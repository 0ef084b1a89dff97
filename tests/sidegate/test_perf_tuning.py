"""Request-path tuning that must not change behaviour: log sampling, TTL jitter, GC set-up."""

from __future__ import annotations

import gc
import io
import json
import sys

import pytest
import structlog

from sidegate import gc_tuning
from sidegate.common.cache import jittered_ttl
from sidegate.logging_setup import AllowedLineSampler, configure_logging


def test_sampler_drops_only_allowed_decision_lines() -> None:
    draws = iter([0.9, 0.05] * 10)
    sampler = AllowedLineSampler(0.1, draw=lambda: next(draws))
    with pytest.raises(structlog.DropEvent):
        sampler(None, "info", {"event": "check", "decision": "allowed"})
    kept = sampler(None, "info", {"event": "check", "decision": "allowed"})
    assert kept["sample_rate"] == 0.1
    # denials, over-limit answers, errors and other events are never sampled away
    for event in ({"event": "check", "decision": "denied"},
                  {"event": "check", "decision": "unavailable"},
                  {"event": "should_rate_limit", "code": "over_limit"},
                  {"event": "should_rate_limit", "code": "unavailable"},
                  {"event": "serving"}):
        assert sampler(None, "info", dict(event)) == event


def test_configured_sampling_zero_keeps_denials(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, write_through=True))
    try:
        configure_logging("info", allowed_sample_rate=0.0)
        log = structlog.get_logger("t")
        log.info("check", decision="allowed", subject="u")
        log.info("check", decision="denied", subject="u", big=2**80)
        log.info("should_rate_limit", code="ok")
        log.info("should_rate_limit", code="over_limit")
        lines = [json.loads(line) for line in out.getvalue().decode().splitlines()]
    finally:
        structlog.reset_defaults()
    assert [(r["event"], r.get("decision") or r.get("code")) for r in lines] == [
        ("check", "denied"), ("should_rate_limit", "over_limit")]
    assert lines[0]["big"] == 2**80  # orjson refuses it; the line still renders


def test_jittered_ttl_only_shortens_and_spreads() -> None:
    values = {jittered_ttl(5.0) for _ in range(200)}
    assert all(4.0 <= v <= 5.0 for v in values)
    assert len(values) > 100


def test_gc_tuning_freezes_start_up_objects_and_observes_pauses() -> None:
    before = gc.get_threshold()
    try:
        gc_tuning.tune_after_startup()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == gc_tuning.THRESHOLDS
        assert gc_tuning._observe in gc.callbacks
        gc.collect()
        from prometheus_client import REGISTRY
        count = REGISTRY.get_sample_value("sidegate_gc_pause_seconds_count",
                                          {"generation": "2"})
        assert count and count >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        if gc_tuning._observe in gc.callbacks:
            gc.callbacks.remove(gc_tuning._observe)


def test_gc_pause_observer_survives_collections_at_the_recursion_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile body of thousands of "[" makes json.loads recurse to the interpreter's limit;
    a young collection that starts down there runs the observer with almost no stack left.
    Its sample is dropped, not printed as an "Exception ignored" traceback."""
    import random

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    before = gc.get_threshold()
    rng = random.Random(1)
    keep: list[list[list[int]]] = []
    try:
        gc.set_threshold(*gc_tuning.THRESHOLDS)
        gc.callbacks.append(gc_tuning._observe)
        for _ in range(5000):
            # a varying number of live objects: collections start at varying depths
            keep = [*keep[-50:], [[] for _ in range(rng.randint(0, 700))]]
            with pytest.raises(RecursionError):
                json.loads(b"[" * rng.randint(1000, 3000))
    finally:
        gc.callbacks.remove(gc_tuning._observe)
        gc.set_threshold(*before)
    assert not unraisable
