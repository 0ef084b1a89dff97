"""End to end through a real Envoy: per-tier quotas from sidegate's dynamic metadata, 429 with
x-ratelimit-* headers (Envoy's DRAFT_VERSION_03), a rule file reloaded without restart, and a
Redis outage answered by the domain's failure mode."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, RedisServer
from tests.harness import Stack

# The demo keys documented in examples/api-keys.yaml (published examples, not secrets).
FREE_KEY = "sg_demo_free_0123456789abcdef"
PREMIUM_KEY = "sg_demo_premium_0123456789abcdef"


def _config(rules_dir: Path, keys: Path | None = None, **ratelimit: Any) -> dict[str, Any]:
    store = {"type": "file", "path": str(keys or REPO_ROOT / "examples" / "api-keys.yaml")}
    return {
        "authz": {
            "policy": {"directory": str(REPO_ROOT / "policies")},
            "identity": {"sources": [{"name": "keys", "type": "api_key", "store": store}]},
        },
        "ratelimit": {
            "rules_dir": str(rules_dir),
            "reload": {"interval_seconds": 0.2},
            "response_headers": {"enabled": True},
            **ratelimit,
        },
    }


def _rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(REPO_ROOT / "examples" / "ratelimit", rules)
    return rules


def _wait_for_log(stack: Stack, event: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sum(r.get("event") == event for r in stack.sidegate.logs()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {event!r} log line after 20 s:\n{stack.sidegate.output()[-3000:]}")


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_tier_quotas_headers_and_reload(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    rules = _rules(tmp_path)
    extra: dict[str, Any] = {"backend": backend}
    if backend == "redis":
        extra["redis"] = {"url": request.getfixturevalue("redis_url"),
                          "key_prefix": f"e2e-{tmp_path.name}:", "timeout_seconds": 2.0}
    with Stack.start(tmp_path, _config(rules, **extra)) as stack:
        free = [stack.request("GET", "/hello", {"x-api-key": FREE_KEY}) for _ in range(6)]
        assert [s for s, _, _ in free] == [200] * 5 + [429]
        headers = free[-1][1]
        # Envoy's own headers, built from the statuses[] the service filled.
        assert headers["x-ratelimit-limit"] == "5, 5;w=60"
        assert headers["x-ratelimit-remaining"] == "0"
        assert 0 < int(headers["x-ratelimit-reset"]) <= 60
        assert headers["x-envoy-ratelimited"] == "true"
        # sidegate's optional RateLimit-* headers ride along on the refusal.
        assert headers["ratelimit-limit"] == "5"
        assert headers["ratelimit-remaining"] == "0"
        ok_headers = free[0][1]
        assert ok_headers["x-ratelimit-remaining"] == "4"

        premium = [stack.request("GET", "/hello", {"x-api-key": PREMIUM_KEY})[0]
                   for _ in range(21)]
        assert premium == [200] * 20 + [429]

        limited = [stack.request("GET", "/limited", {"x-api-key": FREE_KEY})[0]
                   for _ in range(4)]
        assert limited == [200, 200, 200, 429]

        # Raise /limited from 3 to 5 a minute: the watcher reloads, the counter survives
        # (3 used), so exactly 2 more pass.
        loads = sum(r.get("event") == "ratelimit_rules_loaded" for r in stack.sidegate.logs())
        text = (rules / "sidegate.yaml").read_text()
        staged = rules / ".sidegate.yaml.tmp"
        staged.write_text(text.replace("requests_per_unit: 3", "requests_per_unit: 5", 1))
        staged.replace(rules / "sidegate.yaml")
        _wait_for_log(stack, "ratelimit_rules_loaded", loads + 1)
        after = [stack.request("GET", "/limited", {"x-api-key": FREE_KEY}) for _ in range(3)]
        assert [s for s, _, _ in after] == [200, 200, 429]
        assert after[-1][1]["x-ratelimit-limit"] == "5, 5;w=60"

        # A broken edit is refused and the running rules stay.
        (rules / "broken.yaml").write_text("domain: sidegate\n")
        _wait_for_log(stack, "ratelimit_reload_failed", 1)
        assert stack.request("GET", "/limited", {"x-api-key": PREMIUM_KEY})[0] == 429
        assert stack.request("GET", "/hello", {"x-api-key": PREMIUM_KEY})[0] == 429

        stats = stack.envoy.stats()
        assert stats["cluster.upstream.ratelimit.over_limit"] == 6
        metrics = stack.sidegate.metrics()
        assert 'sidegate_ratelimit_config_loads_total{result="error"} 1.0' in metrics
        assert ('sidegate_ratelimit_rule_hits_total{domain="sidegate",'
                'kind="over_limit",rule="sidegate.tier_free.consumer"} 1.0') in metrics
        calls = [r for r in stack.sidegate.logs() if r.get("event") == "should_rate_limit"]
        assert calls and all(FREE_KEY not in str(r) for r in calls)
        assert {"domain", "code", "descriptors", "duration_ms"} <= calls[0].keys()


def test_redis_outage_through_envoy(tmp_path: Path, redis_server: RedisServer) -> None:
    """Redis stops mid-run: domain `sidegate` degrades to local buckets (quotas still hold),
    and once Redis is back the shared counters answer again."""
    rules = _rules(tmp_path)
    config = _config(
        rules,
        backend="redis",
        redis={"url": redis_server.url, "retry_interval_seconds": 0},
        failure_mode="error",
        failure_mode_by_domain={"sidegate": "local"},
    )
    with Stack.start(tmp_path, config) as stack:
        assert stack.request("GET", "/limited", {"x-api-key": FREE_KEY})[0] == 200
        redis_server.stop()
        # In-process buckets with the same limits: 3 a minute, counted afresh.
        during = [stack.request("GET", "/limited", {"x-api-key": FREE_KEY})[0] for _ in range(4)]
        assert during == [200, 200, 200, 429]
        redis_server.start()
        # Back on the (restarted, empty) Redis: 3 more.
        after = [stack.request("GET", "/limited", {"x-api-key": FREE_KEY})[0] for _ in range(4)]
        assert after == [200, 200, 200, 429]
        events = [r.get("event") for r in stack.sidegate.logs()]
        assert "ratelimit_backend_down" in events and "ratelimit_backend_up" in events
        assert stack.envoy.stats().get("cluster.upstream.ratelimit.error", 0) == 0


def test_tiers_behind_a_generic_key_prefix(tmp_path: Path) -> None:
    """examples/envoy.yaml's /api/ route sends [generic_key=api, tier, consumer] to domain
    sidegate_tiers (a per-route domain override), whose tiers block sits under
    `generic_key: api` (examples/ratelimit/tiers.yaml, as shipped, default algorithm)."""
    bronze = "sg_test_bronze_0123456789abcdef"
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        (REPO_ROOT / "examples" / "api-keys.yaml").read_text()
        + f"  - digest: {hashlib.sha256(bronze.encode()).hexdigest()}\n"
        "    consumer: test-bronze\n    tier: bronze\n    scopes: [hello:read]\n"
    )
    config = _config(_rules(tmp_path), keys)
    config["ratelimit"]["default_algorithm"] = "auto"  # as shipped (the harness pins tokens)
    with Stack.start(tmp_path, config) as stack:
        def statuses(key: str, n: int) -> list[int]:
            return [stack.request("GET", "/api/hello", {"x-api-key": key})[0] for _ in range(n)]

        free = [stack.request("GET", "/api/hello", {"x-api-key": FREE_KEY}) for _ in range(6)]
        assert [s for s, _, _ in free] == [200] * 5 + [429]
        assert free[-1][1]["x-ratelimit-limit"] == "5, 5;w=60"
        assert statuses(PREMIUM_KEY, 21) == [200] * 20 + [429]
        # An unknown tier gets the default tier's quota (10 a minute), not "no limit".
        assert statuses(bronze, 11) == [200] * 10 + [429]
        # The route's quotas are the prefixed ones: "/" still has its own (free: 5).
        assert stack.request("GET", "/hello", {"x-api-key": FREE_KEY})[0] == 200
        metrics = stack.sidegate.metrics()
        assert ('sidegate_ratelimit_rule_hits_total{domain="sidegate_tiers",kind="over_limit",'
                'rule="sidegate_tiers.generic_key_api.tier_default.consumer"} 1.0') in metrics
