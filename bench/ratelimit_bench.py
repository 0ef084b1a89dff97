"""ShouldRateLimit cost: sidegate on memory and on real Redis next to the `limits` library.

    python -m bench.ratelimit_bench [--runs 3] [--calls 4000] [--concurrency 16] [--redis-url URL]

Drives ``RateLimitService.should_rate_limit`` directly (no gRPC: the service's own cost, with
its JSON log line and metrics) for requests of 1 and 3 descriptors, and does the same checks
with the ``limits`` library's async Redis storage (redis-py implementation), the library a
Python user would otherwise reach for: one ``hit()`` per descriptor, awaited in turn. Every
limit is large enough that every call must be admitted; a refusal fails the run.

Rounds interleave the cases (each round's numbers share the machine's load); reported are
calls/s, p50/p99 latency and this process's CPU time per call as medians of the rounds
(min-max), and each case's throughput relative to sidegate-on-Redis (token bucket) of the same
round. Starts its own redis-server on
a free loopback port unless ``--redis-url`` is given. Client and service share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from limits import RateLimitItemPerHour
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

from bench.procs import free_port
from bench.stats import Spread, paired_ratios, spread, table
from sidegate.ratelimit.buckets.base import BucketRequest
from sidegate.ratelimit.service import RateLimitService
from sidegate.ratelimit.settings import RateLimitSettings

RULES = """
domain: bench
descriptors:
  - key: consumer
    rate_limit: {requests_per_unit: 1000000000, unit: hour, ALGO}
  - key: route
    rate_limit: {requests_per_unit: 1000000000, unit: hour, ALGO}
  - key: remote_address
    rate_limit: {requests_per_unit: 1000000000, unit: hour, ALGO}
"""
KEYS = ("consumer", "route", "remote_address")
CONSUMERS = 1000
BASELINE = "sidegate redis token_bucket"

Call = Callable[[int], Awaitable[bool]]


@dataclass
class Case:
    name: str
    descriptors: int
    call: Call


def _requests(count: int) -> list[rls_pb2.RateLimitRequest]:
    built = []
    for i in range(CONSUMERS):
        values = (f"consumer-{i}", f"/route/{i % 10}", f"10.0.{i % 250}.{i % 200}")
        descriptors = [
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)]
            )
            for key, value in list(zip(KEYS, values, strict=True))[:count]
        ]
        built.append(rls_pb2.RateLimitRequest(domain="bench", descriptors=descriptors))
    return built


async def _service(workdir: Path, backend: str, algorithm: str, redis_url: str,
                   tag: str) -> RateLimitService:
    rules = workdir / f"rules-{tag}"
    rules.mkdir()
    (rules / "bench.yaml").write_text(RULES.replace("ALGO", f"algorithm: {algorithm}"))
    settings = RateLimitSettings(
        rules_dir=rules, backend=backend, reload={"watch": False},  # type: ignore[arg-type]
        redis={"url": redis_url, "key_prefix": f"bench-{tag}:", "timeout_seconds": 2.0},
    )
    service = RateLimitService.from_settings(settings)
    await service.start()
    return service


def _service_call(service: RateLimitService, count: int) -> Call:
    requests = _requests(count)
    ok = rls_pb2.RateLimitResponse.OK

    async def call(i: int) -> bool:
        response = await service.should_rate_limit(requests[i % CONSUMERS])
        return response.overall_code == ok

    return call


def _backend_call(service: RateLimitService, count: int) -> Call:
    """The storage step alone: the one EVALSHA a ShouldRateLimit of `count` descriptors makes."""
    backend = service.backend.primary  # type: ignore[union-attr]
    batches = [
        [
            BucketRequest(key=f"{{bench}}:tb3600000:{key}-{i}", algorithm="token_bucket",
                          limit=1_000_000_000, window_ms=3_600_000, burst=1_000_000_000, hits=1)
            for key in KEYS[:count]
        ]
        for i in range(CONSUMERS)
    ]

    async def call(i: int) -> bool:
        return all(r.allowed for r in await backend.take(batches[i % CONSUMERS]))

    return call


def _limits_call(limiter: FixedWindowRateLimiter | SlidingWindowCounterRateLimiter,
                 count: int) -> Call:
    item = RateLimitItemPerHour(1_000_000_000)
    values = [
        [(key, value) for key, value in zip(
            KEYS, (f"consumer-{i}", f"/route/{i % 10}", f"10.0.{i % 250}.{i % 200}"), strict=True
        )][:count]
        for i in range(CONSUMERS)
    ]

    async def call(i: int) -> bool:
        admitted = True
        for key, value in values[i % CONSUMERS]:
            admitted = await limiter.hit(item, "bench", key, value) and admitted
        return admitted

    return call


async def _run_case(
    case: Case, calls: int, concurrency: int
) -> tuple[float, list[float], float]:
    counter = itertools.count()
    latencies: list[float] = []
    refused = 0

    async def worker() -> None:
        nonlocal refused
        while (i := next(counter)) < calls:
            started = time.perf_counter()
            admitted = await case.call(i)
            latencies.append(time.perf_counter() - started)
            refused += not admitted

    began, cpu_began = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    if refused:
        raise SystemExit(f"{case.name}: {refused} calls refused; the run is not comparable")
    return calls / wall, latencies, cpu / calls


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def main_async(args: argparse.Namespace) -> None:
    # The service logs one JSON line per call, as in production; the bench discards them.
    devnull = open(os.devnull, "w")  # noqa: ASYNC230 - once, before any load
    previous = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(devnull),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    redis_proc = None
    redis_url = args.redis_url
    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    if redis_url is None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        port = free_port()
        redis_proc = subprocess.Popen(  # noqa: ASYNC220 - before any load
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{port}/0"
        await asyncio.sleep(0.3)
    try:
        await _bench(args, workdir, redis_url)
    finally:
        structlog.configure(**previous)
        devnull.close()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


async def _bench(args: argparse.Namespace, workdir: Path, redis_url: str) -> None:
    services = {
        "sidegate memory token_bucket": await _service(workdir, "memory", "token_bucket",
                                                       redis_url, "m"),
        BASELINE: await _service(workdir, "redis", "token_bucket", redis_url, "tb"),
        "sidegate redis fixed_window": await _service(workdir, "redis", "fixed_window",
                                                      redis_url, "fw"),
    }
    limits_url = redis_url.replace("redis://", "async+redis://", 1)
    storage = RedisStorage(limits_url, implementation="redispy")
    limiters = {
        "limits redis fixed_window": FixedWindowRateLimiter(storage),
        "limits redis sliding_window_counter": SlidingWindowCounterRateLimiter(storage),
    }
    cases = []
    for count in (1, 3):
        cases += [Case(name, count, _service_call(svc, count)) for name, svc in services.items()]
        cases.append(Case("sidegate redis store only (1 EVALSHA)", count,
                          _backend_call(services[BASELINE], count)))
        cases += [Case(name, count, _limits_call(lim, count)) for name, lim in limiters.items()]
    for case in cases:  # warm up connections, scripts and code paths
        await _run_case(case, min(200, args.calls), args.concurrency)
    rates: dict[tuple[str, int], dict[int, float]] = {}
    p50: dict[tuple[str, int], list[float]] = {}
    p99: dict[tuple[str, int], list[float]] = {}
    # Python CPU per call (client + service share this process; Redis runs apart): steadier
    # than calls/s when other work shares the cores.
    cpu_us: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.runs):
        for case in cases:
            rate, latencies, cpu = await _run_case(case, args.calls, args.concurrency)
            key = (case.name, case.descriptors)
            cpu_us.setdefault(key, []).append(cpu * 1e6)
            rates.setdefault(key, {})[round_] = rate
            p50.setdefault(key, []).append(_quantile(latencies, 0.5) * 1e6)
            p99.setdefault(key, []).append(_quantile(latencies, 0.99) * 1e6)
    rows = []
    for case in cases:
        key = (case.name, case.descriptors)
        ratio: Spread = paired_ratios(rates[key], rates[(BASELINE, case.descriptors)])
        rows.append([
            case.name, str(case.descriptors), spread(list(rates[key].values())).fmt(),
            spread(p50[key]).fmt(), spread(p99[key]).fmt(), spread(cpu_us[key]).fmt(),
            ratio.fmt(2),
        ])
    print(f"ShouldRateLimit, {args.runs} rounds x {args.calls} calls, concurrency "
          f"{args.concurrency}, python {sys.version.split()[0]}, redis at {redis_url}")
    print(table(["case", "descriptors", "calls/s", "p50 us", "p99 us", "CPU us/call",
                 f"calls/s x {BASELINE}"], rows))
    medians = {k: statistics.median(v.values()) for k, v in rates.items()}
    for count in (1, 3):
        limits_rate = medians[("limits redis fixed_window", count)]
        redis_rate = medians[(BASELINE, count)]
        service_vs_limits = redis_rate / limits_rate
        store_vs_limits = medians[("sidegate redis store only (1 EVALSHA)", count)] / limits_rate
        memory_vs_redis = medians[("sidegate memory token_bucket", count)] / redis_rate
        print(f"{count} descriptor(s): sidegate redis / limits fixed_window = "
              f"{service_vs_limits:.2f}x, sidegate store only / limits fixed_window = "
              f"{store_vs_limits:.2f}x, sidegate memory / sidegate redis = {memory_vs_redis:.2f}x")
    for svc in services.values():
        await svc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis-url", default=None)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
