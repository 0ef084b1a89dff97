"""gRPC-level load without Envoy: many concurrent Check / ShouldRateLimit calls.

Two clients:

- ``python`` (default): a grpc.aio client in this process; every answer is checked (Check must
  allow, ShouldRateLimit must say OK). The client shares the 2 cores with the server, so its
  numbers are lower than what the server alone could do; they compare servers fairly.
- ``h2load`` (``apt-get install -y nghttp2-client``): a C HTTP/2 client posting a gRPC-framed
  request; it only sees HTTP statuses, so one Python call per method first proves the answer
  is the expected one, and the run fails on any non-2xx or failed stream, or when sidegate's
  ``sidegate_grpc_errors_total`` moved during the run.

Requests look like Envoy's: the CheckRequest carries the attributes and headers Envoy sends for
a GET through the example listener; the RateLimitRequest the descriptors of the example route.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import address_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from bench.procs import Backend, BenchError, http_get, null_label
from bench.stats import Spread, paired_ratios, spread, table

METHODS = ("check", "ratelimit")
_PATHS = {
    "check": "/envoy.service.auth.v3.Authorization/Check",
    "ratelimit": "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
}


def check_request(path: str = "/bench") -> Any:
    def addr(port: int) -> Any:
        return address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        )

    headers = {
        ":authority": "127.0.0.1:10000", ":path": path, ":method": "GET", ":scheme": "http",
        "user-agent": "sidegate-bench/1 (wrk)", "accept": "application/json",
        "accept-encoding": "gzip, deflate", "x-client-version": "2.14.1",
        "x-forwarded-proto": "http", "x-request-id": "5b0f6c3e-1c9a-4d8e-9a57-2f3c1d0e8a41",
    }
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1739216458723645912", method="GET", headers=headers, path=path,
        host="127.0.0.1:10000", scheme="http", protocol="HTTP/1.1",
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            source=attribute_context_pb2.AttributeContext.Peer(address=addr(53122)),
            destination=attribute_context_pb2.AttributeContext.Peer(address=addr(10000)),
            request=attribute_context_pb2.AttributeContext.Request(http=http),
        )
    )


def rate_limit_request() -> Any:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    return rls_pb2.RateLimitRequest(
        domain="sidegate",
        descriptors=[ratelimit_pb2.RateLimitDescriptor(
            entries=[entry(key="tier", value="default"), entry(key="consumer", value="anonymous")]
        )],
        hits_addend=1,
    )


def _call(method: str, channel: grpc.aio.Channel) -> tuple[Callable[..., Any], Any, Any]:
    """(stub method, request, predicate on the answer)."""
    if method == "check":
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return stub.Check, check_request(), lambda r: r.status.code == 0
    stub_rl = rls_pb2_grpc.RateLimitServiceStub(channel)
    ok = rls_pb2.RateLimitResponse.OK
    return stub_rl.ShouldRateLimit, rate_limit_request(), lambda r: r.overall_code == ok


@dataclass(frozen=True)
class GrpcRun:
    round: int
    method: str
    backend: str
    client: str
    calls: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_call: float = 0.0

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.duration_s if self.duration_s else 0.0


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def python_load(port: int, method: str, *, duration_s: float, concurrency: int,
                      channels: int) -> tuple[int, float, list[float]]:
    """(calls, elapsed seconds, latencies in ms) for ``concurrency`` callers on ``channels``."""
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(channels)]
    latencies: list[float] = []
    failures: list[str] = []
    try:
        calls = [_call(method, chans[i % channels]) for i in range(concurrency)]
        # One call each first: connections open and the answer is proven before timing starts.
        for fn, request, ok in calls[:channels]:
            answer = await fn(request, timeout=10)
            if not ok(answer):
                raise BenchError(f"{method}: unexpected answer {answer}")
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker(fn: Callable[..., Any], request: Any, ok: Callable[[Any], bool]) -> None:
            while time.perf_counter() < deadline and not failures:
                t0 = time.perf_counter()
                try:
                    answer = await fn(request, timeout=5)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                    return
                latencies.append((time.perf_counter() - t0) * 1000)
                if not ok(answer):
                    failures.append(f"unexpected answer {answer}")
                    return

        await asyncio.gather(*(worker(*c) for c in calls))
        elapsed = time.perf_counter() - start
    finally:
        for chan in chans:
            await chan.close()
    if failures:
        raise BenchError(f"{method}: {len(failures)} failed call(s), first: {failures[0]}")
    return len(latencies), elapsed, latencies


def _grpc_frame(message: Any) -> bytes:
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def h2load_binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise BenchError("h2load is not installed (apt-get install -y nghttp2-client)")
    return found


def h2load_load(port: int, method: str, *, duration_s: float, concurrency: int, channels: int,
                workdir: Path) -> tuple[int, float, float, float]:
    """(calls, seconds, p50 ms, p99 ms-ish) from h2load; raises on any failed/non-2xx stream.

    h2load reports mean/max/sd of request time, not percentiles: p50 is given as its mean and
    p99 as mean + 2.33 sd (a normal approximation), and the report labels them so.
    """
    body = workdir / f"{method}.grpc"
    body.write_bytes(_grpc_frame(check_request() if method == "check" else rate_limit_request()))
    streams = max(1, concurrency // channels)
    argv = [h2load_binary(), "-D", str(max(1, round(duration_s))), "-c", str(channels),
            "-m", str(streams), "-t", "1", "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://127.0.0.1:{port}{_PATHS[method]}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if proc.returncode != 0:
        raise BenchError(f"h2load failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    out = proc.stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    req_time = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)",
                         out)
    if not (done and codes and finished and req_time):
        raise BenchError(f"cannot read h2load's output:\n{out}")
    calls, failed, errored = int(done[1]), int(done[3]), int(done[4])
    if failed or errored or int(codes[1]) != calls:
        raise BenchError(f"h2load: {failed} failed, {errored} errored, {codes[0]}")
    seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    mean = float(req_time[1]) * scale[req_time[2]]
    sd = float(req_time[3]) * scale[req_time[4]]
    return calls, seconds, mean, mean + 2.33 * sd


def grpc_errors(backend: Backend) -> float:
    """sidegate's count of calls answered with a gRPC error (h2load cannot see grpc-status).

    The null services have no error path; they count as 0.
    """
    if backend.kind != "sidegate":
        return 0.0
    status, body = http_get(backend.admin_port, "/metrics")
    if status != 200:
        raise BenchError(f"{backend.label} /metrics answered {status}")
    return sum(float(line.rpartition(" ")[2]) for line in body.decode().splitlines()
               if line.startswith("sidegate_grpc_errors_total{"))


def run_grpc_bench(workdir: Path, backends: Sequence[Backend], *, runs: int, duration_s: float,
                   concurrency: int, channels: int, client: str = "python",
                   methods: Sequence[str] = METHODS,
                   progress: Callable[[str], None] = print) -> list[GrpcRun]:
    results = []
    for round_index in range(1, runs + 1):
        for method in methods:
            for backend in backends:
                cpu_before = backend.child.cpu_seconds()
                if client == "h2load":
                    asyncio.run(python_load(backend.grpc_port, method, duration_s=0.2,
                                            concurrency=1, channels=1))
                    errors_before = grpc_errors(backend)
                    calls, seconds, p50, p99 = h2load_load(
                        backend.grpc_port, method, duration_s=duration_s,
                        concurrency=concurrency, channels=channels, workdir=workdir)
                    if grpc_errors(backend) != errors_before:
                        raise BenchError(f"{backend.label} answered {method} calls with gRPC "
                                         f"errors under h2load (sidegate_grpc_errors_total)")
                else:
                    calls, seconds, lat = asyncio.run(python_load(
                        backend.grpc_port, method, duration_s=duration_s,
                        concurrency=concurrency, channels=channels))
                    lat.sort()
                    p50, p99 = _percentile(lat, 50), _percentile(lat, 99)
                backend.child.check_alive()
                cpu = (backend.child.cpu_seconds() - cpu_before) * 1e6 / max(calls, 1)
                run = GrpcRun(round_index, method, backend.label, client, calls, seconds, p50, p99,
                              cpu)
                results.append(run)
                progress(f"  round {round_index} {method:<9} {backend.label:<20} "
                         f"{run.calls_per_s:>9,.0f} calls/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
                         f"  server CPU {cpu:5.0f} us/call")
    return results


def summarize_grpc(runs: Sequence[GrpcRun]) -> list[dict[str, Any]]:
    out = []
    for method, backend in dict.fromkeys((r.method, r.backend) for r in runs):
        mine = [r for r in runs if r.method == method and r.backend == backend]
        ratio: Spread | None = None
        if backend.startswith("sidegate/"):
            ratio = paired_ratios(
                {r.round: r.calls_per_s for r in mine},
                {r.round: r.calls_per_s for r in runs
                 if r.method == method and r.backend == null_label(backend)},
            )
        out.append({
            "method": method, "backend": backend, "client": mine[0].client,
            "calls_per_s": spread([r.calls_per_s for r in mine]),
            "p50_ms": spread([r.p50_ms for r in mine]),
            "p99_ms": spread([r.p99_ms for r in mine]),
            "cpu_us": spread([r.server_cpu_us_per_call for r in mine]),
            "vs_null": ratio if ratio is not None and ratio.n else None,
        })
    return out


def render_grpc(summary: Sequence[dict[str, Any]]) -> str:
    rows = [[s["method"], s["backend"], s["calls_per_s"].fmt(), s["p50_ms"].fmt(2),
             s["p99_ms"].fmt(2), s["cpu_us"].fmt(),
             "-" if s["vs_null"] is None else s["vs_null"].fmt(2)]
            for s in summary]
    return table(["method", "server", "calls/s median (min-max)", "p50 ms", "p99 ms",
                  "server CPU us/call", "sidegate/null same model"], rows)
