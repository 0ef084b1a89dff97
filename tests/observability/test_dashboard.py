"""The Grafana dashboard queries only metrics and labels a running sidegate exports.

``sidegate serve`` behind a real Envoy gets allowed, denied and rate-limited traffic; its
``/metrics`` must then name every metric family the dashboard's queries use, and each family's
label names (from its definition) must include every label a query groups by, filters on or
shows in a legend.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

# Every metrics module, so their definitions are in this process's registry too.
import sidegate.extauthz.identity.metrics
import sidegate.extauthz.metrics
import sidegate.extauthz.policy.metrics
import sidegate.metrics
import sidegate.ratelimit.metrics  # noqa: F401
from tests.conftest import REPO_ROOT
from tests.harness import Stack

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "sidegate.json"
METRIC = re.compile(r"\b(sidegate_[a-z0-9_]+)")
BY = re.compile(r"\bby \(([^)]*)\)")
SELECTOR = re.compile(r"\{([^}]*)\}")
LEGEND = re.compile(r"\{\{\s*([a-zA-Z_]+)\s*\}\}")
# Added by Prometheus at scrape time or by histogram_quantile, not by sidegate.
NOT_OURS = {"job", "instance", "le"}
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_info")


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def queries() -> list[tuple[str, str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def labels_used(expr: str, legend: str) -> set[str]:
    used = {name.strip() for group in BY.findall(expr) for name in group.split(",")}
    for selector in SELECTOR.findall(expr.replace("{{", "").replace("}}", "")):
        used |= {part.split("=")[0].strip(" !~") for part in selector.split(",") if "=" in part}
    used |= set(LEGEND.findall(legend))
    return {name for name in used if name} - NOT_OURS


def defined_labels(name: str) -> set[str]:
    collectors = prometheus_client.REGISTRY._names_to_collectors  # type: ignore[attr-defined]
    collector = collectors.get(name) or collectors.get(family(name))
    assert collector is not None, f"{name} is not defined in sidegate"
    labels = set(getattr(collector, "_labelnames", ()))
    if isinstance(collector, prometheus_client.Info):
        labels |= {"version"}
    return labels


def test_every_query_names_metrics_and_labels_sidegate_exports(tmp_path: Path) -> None:
    with Stack.start(tmp_path, {}) as stack:
        assert stack.request("GET", "/hello")[0] == 200
        assert stack.request("GET", "/deny")[0] == 403
        codes = [stack.request("GET", "/limited")[0] for _ in range(4)]
        assert 429 in codes
        exported = {
            fam.name for fam in text_string_to_metric_families(stack.sidegate.metrics())
        }
    assert queries()
    for title, expr, legend in queries():
        names = set(METRIC.findall(expr))
        assert names, f"{title}: no sidegate metric in {expr}"
        for name in names:
            assert family(name) in exported or name in exported, (
                f"{title}: {name} is not exported by a running sidegate"
            )
        available = set().union(*(defined_labels(name) for name in names))
        missing = labels_used(expr, legend) - available
        assert not missing, f"{title}: labels {missing} not on {sorted(names)}"
