"""The bench harness still runs end to end: real Envoy, wrk, null services and sidegate.

Each measurement lasts about a second; nothing here asserts on speed, only that the harness
starts everything, drives load, verifies Envoy's counters and reports (DESIGN.md: timing
belongs in bench/, not in pass/fail tests). A missing wrk or Envoy fails, never skips.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import harness
from bench.envoy_bench import verify_run
from bench.procs import (
    REPO_ROOT,
    Backend,
    BenchError,
    bench_envoy_config,
    null_label,
    supports_loop_choice,
)

pytestmark = pytest.mark.timeout(180)


def _result(results_dir: Path) -> dict:
    files = sorted(results_dir.glob("bench-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


def test_envoy_bench_all_cases_both_kinds_both_models(tmp_path: Path, capsys) -> None:
    code = harness.main([
        "--runs", "1", "--duration", "1", "--warmup", "0", "--connections", "4",
        "--wrk-threads", "1", "--threads", "4", "--cases", "authz,ratelimit,both",
        "--backends", "null/aio,sidegate/threads,null/threads,sidegate/aio", "--skip-grpc",
        "--workloads", "anonymous", "--results-dir", str(tmp_path),
    ])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = _result(tmp_path)["envoy"]
    seen = {(r["case"], r["backend"]) for r in data["runs"]}
    assert seen == {(c, b) for c in ("authz", "ratelimit", "both")
                    for b in ("null/aio", "sidegate/threads", "null/threads", "sidegate/aio")}
    for run in data["runs"]:
        assert run["requests"] > 0
        if run["case"] in ("authz", "both"):
            assert run["counters"]["cluster.upstream.ext_authz.ok"] >= run["requests"]
        if run["case"] in ("ratelimit", "both"):
            assert run["counters"]["cluster.upstream.ratelimit.ok"] >= run["requests"]
    ratios = {(s["case"], s["backend"]): s["vs_null"] for s in data["summary"]}
    assert ratios[("both", "sidegate/aio")]["n"] == 1
    assert "sidegate/null" in out.out and "ext_authz + rate limit" in out.out


def test_realistic_workload_and_fixed_rate_runs_verify(tmp_path: Path, capsys) -> None:
    """Rotating JWTs, the RBAC policy, three Redis buckets; one closed-loop and one paced run
    per backend. Only that they run and verify: a paced run reports latency from the schedule."""
    code = harness.main([
        "--runs", "1", "--duration", "1", "--warmup", "0", "--connections", "4",
        "--wrk-threads", "1", "--cases", "both", "--backends", "null/aio,sidegate/aio",
        "--workloads", "realistic", "--tokens", "20", "--rates", "20", "--skip-grpc",
        "--results-dir", str(tmp_path),
    ])
    out = capsys.readouterr()
    assert code == 0, out.err
    runs = _result(tmp_path)["envoy"]["runs"]
    assert {(r["backend"], r["rate"]) for r in runs} == {
        (b, rate) for b in ("null/aio", "sidegate/aio") for rate in (0.0, 20.0)}
    for run in runs:
        assert run["workload"] == "realistic" and run["requests"] > 0
        assert run["counters"]["cluster.upstream.ext_authz.ok"] >= run["requests"]
        assert run["counters"]["cluster.upstream.ratelimit.ok"] >= run["requests"]
        if run["rate"]:
            assert run["paced_p99_ms"] > 0  # the schedule's latencies were collected
    assert "fixed rate" in out.out and "[realistic]" in out.out


def test_grpc_load_checks_every_answer(tmp_path: Path, capsys) -> None:
    code = harness.main([
        "--runs", "1", "--duration", "1", "--grpc-concurrency", "8", "--threads", "4",
        "--backends", "null/threads,sidegate/aio", "--skip-envoy",
        "--results-dir", str(tmp_path),
    ])
    out = capsys.readouterr()
    assert code == 0, out.err
    runs = _result(tmp_path)["grpc"]["runs"]
    assert {(r["method"], r["backend"]) for r in runs} == {
        (m, b) for m in ("check", "ratelimit") for b in ("null/threads", "sidegate/aio")
    }
    assert all(r["calls"] > 0 for r in runs)


def test_event_loops_side_by_side_each_against_the_null_on_its_loop(
    tmp_path: Path, capsys
) -> None:
    code = harness.main([
        "--runs", "1", "--duration", "1", "--grpc-concurrency", "8",
        "--backends", "null/aio,sidegate/aio", "--null-loop", "asyncio,uvloop",
        "--sidegate-loop", "uvloop", "--skip-envoy", "--results-dir", str(tmp_path),
    ])
    out = capsys.readouterr()
    assert code == 0, out.err
    grpc = _result(tmp_path)["grpc"]
    assert {r["backend"] for r in grpc["runs"]} == {
        "null/aio", "null/aio+uvloop", "sidegate/aio+uvloop"}
    ratios = {(s["method"], s["backend"]): s["vs_null"] for s in grpc["summary"]}
    assert ratios[("check", "sidegate/aio+uvloop")]["n"] == 1


def test_null_baseline_of_a_backend_shares_its_model_and_loop(tmp_path: Path) -> None:
    assert null_label("sidegate/aio") == "null/aio"
    assert null_label("sidegate/aio+2w") == "null/aio"
    assert null_label("sidegate/aio+uvloop") == "null/aio+uvloop"
    assert null_label("sidegate/aio+uvloop+2w@before") == "null/aio+uvloop"
    assert null_label("sidegate/aio@before") == "null/aio"
    assert null_label("sidegate/threads+uvloop") == "null/threads"
    assert supports_loop_choice("null", "aio") and not supports_loop_choice("null", "threads")
    assert supports_loop_choice("sidegate", "threads")
    # a checkout from before server.event_loop runs asyncio only
    assert not supports_loop_choice("sidegate", "aio", tmp_path)
    with pytest.raises(BenchError, match="cannot run on uvloop"):
        Backend("null", "threads", tmp_path, loop="uvloop")


def test_service_micro_runs_and_checks_every_answer() -> None:
    """bench.service_micro on the realistic config: every Check allowed, every
    ShouldRateLimit OK (it stops on any other answer), one line per call kind."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench.service_micro", "--calls", "200", "--rounds", "1",
         "--tokens", "20", "--concurrency", "4"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=150,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "us/call CPU" in line]
    assert [line.split()[0] for line in lines] == ["check", "should_rate_limit"]


def test_missing_wrk_is_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code = harness.main(["--runs", "1", "--duration", "1", "--workloads", "anonymous",
                         "--results-dir", str(tmp_path)])
    assert code == 1
    assert "wrk is not installed" in capsys.readouterr().err
    assert not list(tmp_path.glob("bench-*.json"))


def test_counters_that_disagree_with_wrk_fail_the_run() -> None:
    before = {"http.ingress.downstream_rq_2xx": 10, "cluster.upstream.ext_authz.ok": 10}
    good = {"http.ingress.downstream_rq_2xx": 110, "cluster.upstream.ext_authz.ok": 112}
    checked = verify_run("authz", 100, {"status": 0}, before, good, connections=4)
    assert checked["cluster.upstream.ext_authz.ok"] == 102
    # A call that failed open is allowed by Envoy (200 to wrk) but must not pass as measured.
    failed_open = {**good, "cluster.upstream.ext_authz.ok": 60,
                   "cluster.upstream.ext_authz.failure_mode_allowed": 40}
    with pytest.raises(BenchError, match="failure_mode_allowed = 40"):
        verify_run("authz", 100, {"status": 0}, before, failed_open, connections=4)
    with pytest.raises(BenchError, match="non-2xx"):
        verify_run("authz", 100, {"status": 3}, before, good, connections=4)
    with pytest.raises(BenchError, match=r"ratelimit\.ok = 0"):
        verify_run("both", 100, {"status": 0}, before, good, connections=4)


def test_bench_envoy_config_keeps_only_the_case_filters() -> None:
    ports = {"admin": 1, "ingress": 2, "demo_upstream": 3}
    for case, expected in {
        "none": [],
        "authz": ["envoy.filters.http.ext_authz"],
        "ratelimit": ["envoy.filters.http.ratelimit"],
        "both": ["envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit"],
    }.items():
        cfg = bench_envoy_config(case, ports, backend_port=4, extra_descriptors=True)
        ingress = next(x for x in cfg["static_resources"]["listeners"] if x["name"] == "ingress")
        hcm = ingress["filter_chains"][0]["filters"][0]["typed_config"]
        names = [f["name"] for f in hcm["http_filters"]]
        assert names == [*expected, "envoy.filters.http.router"]
        clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
        port_of = lambda c: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0][  # noqa: E731
            "endpoint"]["address"]["socket_address"]["port_value"]
        routes = ingress["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
            "virtual_hosts"][0]["routes"]
        root = next(r for r in routes if r["match"].get("prefix") == "/")
        assert len(root["route"]["rate_limits"]) == 3  # tier/consumer + the two extra
        assert port_of(clusters["sidegate"]) == 4
        assert port_of(clusters["upstream"]) == 3
    assert (REPO_ROOT / "examples" / "envoy.yaml").exists()
