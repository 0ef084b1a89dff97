"""sidegate's own cost per call, without gRPC: the realistic workload's Check and ShouldRateLimit.

    python -m bench.service_micro [--calls 20000] [--concurrency 32] [--rounds 3] [--profile]

Builds the services from the realistic bench config (``bench/workload.py``: 1,000 rotating RS256
JWTs, the shipped RBAC policy, three Redis buckets per ShouldRateLimit on a redis-server it
starts on a free loopback port) and awaits ``AuthzService.check`` and
``RateLimitService.should_rate_limit`` directly with Envoy-shaped requests, ``--concurrency``
calls in flight, one JSON decision line per call written to /dev/null. Reports this process's
CPU time per call (median of the rounds, min-max): the part of a call sidegate itself adds on
top of the gRPC handling that the null baseline also pays. ``--profile`` prints cProfile's
top functions of one more round of each. Use it to find and check per-call costs quickly;
the headline numbers come from ``bench.harness`` through Envoy.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from envoy.config.core.v3 import address_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from bench.procs import free_port
from bench.workload import REALISTIC_PATHS, TIERS, realistic_workload


def check_requests(tokens: list[str]) -> list[Any]:
    """Envoy-shaped CheckRequests for ``GET /orders...`` with each token (paths rotate)."""

    def addr(port: int) -> Any:
        return address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        )

    requests = []
    for i, (token, path) in enumerate(zip(tokens, itertools.cycle(REALISTIC_PATHS))):
        headers = {
            ":authority": "127.0.0.1:10000", ":path": path, ":method": "GET", ":scheme": "http",
            "authorization": f"Bearer {token}", "user-agent": "wrk", "accept": "*/*",
            "x-client-version": "2.14.1", "x-forwarded-proto": "http",
            "x-request-id": f"5b0f6c3e-1c9a-4d8e-9a57-{i:012d}",
        }
        http = attribute_context_pb2.AttributeContext.HttpRequest(
            id=str(1739216458723645912 + i), method="GET", headers=headers, path=path,
            host="127.0.0.1:10000", scheme="http", protocol="HTTP/1.1",
        )
        attributes = attribute_context_pb2.AttributeContext(
            source=attribute_context_pb2.AttributeContext.Peer(address=addr(40000 + i % 1000)),
            destination=attribute_context_pb2.AttributeContext.Peer(address=addr(10000)),
            request=attribute_context_pb2.AttributeContext.Request(http=http),
        )
        requests.append(external_auth_pb2.CheckRequest(attributes=attributes))
    return requests


def rate_limit_requests(consumers: int) -> list[Any]:
    """The realistic route's three descriptors: [tier, consumer], generic_key, client_version."""
    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    descriptor = ratelimit_pb2.RateLimitDescriptor
    return [
        rls_pb2.RateLimitRequest(
            domain="sidegate",
            descriptors=[
                descriptor(entries=[entry(key="tier", value=TIERS[i % len(TIERS)]),
                                    entry(key="consumer", value=f"user-{i:05d}")]),
                descriptor(entries=[entry(key="generic_key", value="bench")]),
                descriptor(entries=[entry(key="client_version", value="2.14.1")]),
            ],
            hits_addend=1,
        )
        for i in range(consumers)
    ]


def _allowed(response: Any) -> bool:
    return response.status.code == 0 and response.HasField("ok_response")


def _not_limited(response: Any) -> bool:
    return response.overall_code == rls_pb2.RateLimitResponse.OK


async def drive(call: Callable[[Any], Awaitable[Any]], requests: list[Any], calls: int,
                concurrency: int, ok: Callable[[Any], bool]) -> float:
    """CPU seconds per call of ``calls`` calls, ``concurrency`` in flight; every answer must
    pass ``ok`` (allowed, not limited), or the run stops: a fast wrong answer measures nothing."""
    feed = itertools.islice(itertools.cycle(requests), calls)

    async def worker() -> None:
        for request in feed:
            if not ok(await call(request)):
                raise SystemExit(f"service_micro: unexpected answer to {request!r:.200}")

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / calls


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("service_micro: redis-server is missing (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


async def run(args: argparse.Namespace) -> None:
    from sidegate.config import load_config
    from sidegate.extauthz.factory import build_authz_service
    from sidegate.logging_setup import configure_logging
    from sidegate.ratelimit.service import RateLimitService

    workdir = Path(tempfile.mkdtemp(prefix="sidegate-micro-"))
    redis_proc, url = _start_redis(workdir)
    try:
        workload = realistic_workload(workdir, url, args.tokens)
        config_path = workdir / "sidegate.yaml"
        config_path.write_text(yaml.safe_dump(
            {"authz": workload.authz, "ratelimit": workload.ratelimit}, sort_keys=False))
        config = load_config(config_path)
        # serve's logging (one JSON line per call), into /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        configure_logging("info")
        authz = build_authz_service(config.authz)
        await authz.start()
        ratelimit = RateLimitService.from_settings(config.ratelimit)
        await ratelimit.start()
        assert workload.tokens_file is not None
        tokens = workload.tokens_file.read_text().split()
        cases: dict[str, tuple[Callable[[Any], Awaitable[Any]], list[Any], Any]] = {
            "check": (authz.check, check_requests(tokens), _allowed),
            "should_rate_limit": (
                ratelimit.should_rate_limit, rate_limit_requests(args.tokens), _not_limited
            ),
        }
        # warm: every token verified once, every decision cached once, every match memoised
        for call, requests, ok in cases.values():
            await drive(call, requests, len(requests), args.concurrency, ok)
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (call, requests, ok) in cases.items():
                results[name].append(
                    await drive(call, requests, args.calls, args.concurrency, ok)
                )
        for name, values in results.items():
            us = [v * 1e6 for v in values]
            print(f"{name:18} {statistics.median(us):7.1f} us/call CPU "
                  f"({min(us):.1f}-{max(us):.1f}), {args.rounds} rounds x {args.calls} calls",
                  file=sys.stderr)
        if args.profile:
            for name, (call, requests, ok) in cases.items():
                profiler = cProfile.Profile()
                profiler.enable()
                await drive(call, requests, args.calls, args.concurrency, ok)
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
                print(f"== {name}\n{out.getvalue()}", file=sys.stderr)
        await authz.close()
        await ratelimit.close()
    finally:
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=35)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
