"""Envoy → sidegate over TCP loopback vs a Unix domain socket, both filters, in one run.

    .venv/bin/python -m bench.uds_vs_tcp --runs 3 --duration 10 --connections 32

Two ``sidegate serve`` processes (same config, ``grpc.aio``, the shipped policy embedded,
in-memory buckets) run side by side: one on 127.0.0.1:PORT, one on unix:///…/grpc.sock. Each
round starts a fresh Envoy (the bench variant of examples/envoy.yaml, ext_authz + rate limit)
in front of each in turn, alternating which goes first, and drives it with wrk. Every run is
verified like the main bench (every response 2xx, Envoy's ext_authz.ok and ratelimit.ok equal
to wrk's count). Reported: req/s, p50/p99, CPU per request of sidegate and of Envoy, and the
UDS/TCP ratios paired per round (same round, same machine load).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.envoy_bench import EnvoyBenchOptions, EnvoyRun, verify_run
from bench.procs import Backend, BenchError, Envoy
from bench.stats import paired_ratios, spread, table
from bench.wrk import run_wrk

CASE = "both"


class _Backend(Backend):
    def __init__(self, transport: str, workdir: Path, socket: Path | None, log_level: str) -> None:
        self.transport = transport
        self.socket = socket
        super().__init__("sidegate", "aio", workdir, log_level=log_level)
        self.child.name = self.child.name + f"[{transport}]"

    def _argv(self) -> list[str]:
        argv = super()._argv()
        # Distinct config files (the base class names them by model only).
        path = Path(argv[-1])
        own = path.with_name(f"sidegate-{self.transport}.yaml")
        path.rename(own)
        return [*argv[:-1], str(own)]

    def sidegate_config(self) -> dict[str, Any]:
        config = super().sidegate_config()
        if self.socket is not None:
            config["server"]["grpc_address"] = f"unix://{self.socket}"
        return config


def _envoy(workdir: Path, backend: _Backend, concurrency: int) -> Envoy:
    envoy = Envoy(workdir, CASE, backend.grpc_port, concurrency)
    if backend.socket is not None:
        # The same config with the sidegate cluster's endpoint on the socket.
        argv = envoy.child.argv
        path = Path(argv[argv.index("-c") + 1])
        cfg = yaml.safe_load(path.read_text())
        cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "sidegate")
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"] = {"pipe": {"path": str(backend.socket)}}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return envoy


def run_one(
    workdir: Path, backend: _Backend, opts: EnvoyBenchOptions, round_index: int
) -> EnvoyRun:
    envoy = _envoy(workdir, backend, opts.envoy_concurrency)
    envoy.start()
    try:
        url = f"http://127.0.0.1:{envoy.port}{opts.path}"
        common = {"connections": opts.connections, "threads": opts.wrk_threads, "workdir": workdir}
        if opts.warmup_s > 0:
            run_wrk(url, duration_s=opts.warmup_s, **common)  # type: ignore[arg-type]
        before = envoy.settled_counters()
        cpu_before = envoy.child.cpu_seconds(), backend.child.cpu_seconds()
        result = run_wrk(url, duration_s=opts.duration_s, **common)  # type: ignore[arg-type]
        cpu_after = envoy.child.cpu_seconds(), backend.child.cpu_seconds()
        after = envoy.settled_counters()
        backend.child.check_alive()
        problem = ""
        try:
            verify_run(CASE, result.requests, result.errors, before, after, opts.connections)
        except BenchError as exc:
            problem = str(exc)
    finally:
        envoy.stop()
    per_request = 1e6 / result.requests if result.requests else 0.0
    return EnvoyRun(
        round=round_index, case=CASE, backend=backend.transport, rps=result.rps,
        requests=result.requests, p50_ms=result.p50_ms, p90_ms=result.p90_ms,
        p99_ms=result.p99_ms, max_ms=result.max_ms, problem=problem,
        backend_cpu_us_per_req=(cpu_after[1] - cpu_before[1]) * per_request,
        envoy_cpu_us_per_req=(cpu_after[0] - cpu_before[0]) * per_request,
    )


def report(runs: list[EnvoyRun]) -> tuple[str, dict[str, Any]]:
    valid = [r for r in runs if r.valid]
    rows, summary = [], {}
    for transport in ("tcp", "uds"):
        mine = [r for r in valid if r.backend == transport]
        cells = {
            "rps": spread([r.rps for r in mine]), "p50_ms": spread([r.p50_ms for r in mine]),
            "p99_ms": spread([r.p99_ms for r in mine]),
            "sidegate_cpu_us": spread([r.backend_cpu_us_per_req for r in mine]),
            "envoy_cpu_us": spread([r.envoy_cpu_us_per_req for r in mine]),
        }
        summary[transport] = {k: v.as_dict() for k, v in cells.items()}
        rows.append([transport, cells["rps"].fmt(), cells["p50_ms"].fmt(2),
                     cells["p99_ms"].fmt(2), cells["sidegate_cpu_us"].fmt(),
                     cells["envoy_cpu_us"].fmt()])
    lines = [table(["transport", "req/s", "p50 ms", "p99 ms", "sidegate CPU us/req",
                    "envoy CPU us/req"], rows), ""]
    for metric, label in (("rps", "req/s"), ("backend_cpu_us_per_req", "sidegate CPU/req"),
                          ("envoy_cpu_us_per_req", "Envoy CPU/req")):
        def by_round(transport: str, metric: str = metric) -> dict[int, float]:
            return {r.round: getattr(r, metric) for r in valid if r.backend == transport}

        ratio = paired_ratios(by_round("uds"), by_round("tcp"))
        summary[f"uds_over_tcp_{metric}"] = ratio.as_dict()
        lines.append(f"UDS/TCP {label}: {ratio.fmt(3)} (paired per round, n={ratio.n})")
    lines += [f"REJECTED round {r.round} {r.backend}: {r.problem}" for r in runs if not r.valid]
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.uds_vs_tcp", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--envoy-concurrency", type=int, default=1)
    parser.add_argument("--sidegate-log-level", default="info")
    parser.add_argument("--json", type=Path, help="also write the runs and summary here")
    args = parser.parse_args(argv)
    opts = EnvoyBenchOptions(runs=args.runs, duration_s=args.duration, warmup_s=args.warmup,
                             connections=args.connections,
                             envoy_concurrency=args.envoy_concurrency, cases=(CASE,))
    workdir = Path(tempfile.mkdtemp(prefix="sg-uds-bench-"))  # short: socket paths ≤ 107 bytes
    backends = [
        _Backend("tcp", workdir, None, args.sidegate_log_level),
        _Backend("uds", workdir, workdir / "grpc.sock", args.sidegate_log_level),
    ]
    runs: list[EnvoyRun] = []
    try:
        for backend in backends:
            backend.start()
        for round_index in range(1, opts.runs + 1):
            # Alternate the order so neither transport always runs on a warmer machine.
            ordered = backends if round_index % 2 else backends[::-1]
            for backend in ordered:
                run = run_one(workdir, backend, opts, round_index)
                runs.append(run)
                print(f"  round {round_index} {run.backend}: {run.rps:,.0f} req/s  "
                      f"p50 {run.p50_ms:.2f} ms  sidegate {run.backend_cpu_us_per_req:.0f} "
                      f"us/req  envoy {run.envoy_cpu_us_per_req:.0f} us/req"
                      + (f"  REJECTED: {run.problem}" if run.problem else ""), flush=True)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        for backend in backends:
            backend.stop()
    text, summary = report(runs)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(
            {"runs": [vars(r) for r in runs], "summary": summary, "args": vars(args)},
            indent=2, default=str,
        ))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(not r.valid for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
