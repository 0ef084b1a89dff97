"""common/metric_children.py: a kept child counts exactly as ``labels()`` would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from sidegate.common.metric_children import LabelledChildren


def test_children_are_the_ones_labels_returns() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_calls_total", "calls", ["outcome", "kind"], registry=registry)
    children = LabelledChildren(counter)
    assert children("ok", "a") is counter.labels("ok", "a")
    assert children("ok", "a") is children("ok", "a")
    assert children("ok", "b") is not children("ok", "a")


def test_counts_match_labels_calls() -> None:
    registry = CollectorRegistry()
    kept = Counter("t_kept_total", "via children", ["outcome"], registry=registry)
    plain = Counter("t_plain_total", "via labels()", ["outcome"], registry=registry)
    seconds = Histogram("t_seconds", "latency", ["outcome"], registry=registry)
    children = LabelledChildren(kept)
    histograms = LabelledChildren(seconds)
    outcomes = ["allowed", "denied", "allowed", "error", "allowed", "denied"] * 50
    for outcome in outcomes:
        children(outcome).inc()
        plain.labels(outcome).inc()
        histograms(outcome).observe(0.001)
    for outcome in set(outcomes):
        expected = outcomes.count(outcome)
        assert registry.get_sample_value("t_kept_total", {"outcome": outcome}) == expected
        assert registry.get_sample_value("t_plain_total", {"outcome": outcome}) == expected
        assert registry.get_sample_value("t_seconds_count", {"outcome": outcome}) == expected
    # one entry per distinct label tuple, as in the metric itself
    assert len(children) == len(set(outcomes)) == 3


def test_no_series_before_first_use() -> None:
    """Lazy, as labels(): a series appears in the exposition only once it was asked for."""
    registry = CollectorRegistry()
    counter = Counter("t_lazy_total", "lazy", ["outcome"], registry=registry)
    children = LabelledChildren(counter)
    assert registry.get_sample_value("t_lazy_total", {"outcome": "ok"}) is None
    children("ok")
    assert registry.get_sample_value("t_lazy_total", {"outcome": "ok"}) == 0.0
