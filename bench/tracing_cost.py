"""What tracing costs per Check, in process: off (the default), and on with spans exported.

Runs the embedded-default Check (anonymous, the shipped policy) through the same wrapper the
gRPC servicer uses, in interleaved rounds of: hooks removed entirely (the floor), tracing off,
tracing on (SDK spans, batch processor, an exporter that drops them). Prints Checks/s per
round, medians, and the ratios to the floor measured in the same run.

    .venv/bin/python -m bench.tracing_cost [--rounds 5] [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from sidegate import grpc_services
from sidegate.common import tracing
from sidegate.config import load_config
from sidegate.extauthz.factory import build_authz_service
from sidegate.tracing_setup import TracingSettings, start_tracing, stop_tracing


class _Context:
    def time_remaining(self) -> float:
        return 5.0


class _DropExporter:
    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def _request(i: int) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/hello", "api.local"
    http.headers["traceparent"] = f"00-{i:032x}-{i + 1:016x}-01"
    return request


async def _round(service: Any, calls: int) -> float:
    requests = [_request(i + 1) for i in range(calls)]
    context = _Context()
    started = time.perf_counter()
    for request in requests:
        await grpc_services._within_deadline(
            context,
            service.check(request),
            grpc_services.CHECK_SPAN,
            grpc_services._check_carrier(request),
        )
    return calls / (time.perf_counter() - started)


@contextlib.contextmanager
def _mode(name: str) -> Any:
    if name == "on":
        provider = start_tracing(TracingSettings(enabled=True), exporter=_DropExporter())
        try:
            yield
        finally:
            stop_tracing(provider)
    elif name == "no hooks":
        saved = (tracing.span, tracing.server_span, tracing.set_attributes)
        tracing.span = tracing.server_span = lambda *a, **k: tracing._NOOP  # type: ignore[assignment]
        tracing.set_attributes = lambda **k: None  # type: ignore[assignment]
        try:
            yield
        finally:
            tracing.span, tracing.server_span, tracing.set_attributes = saved
    else:
        yield


async def main(rounds: int, calls: int) -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    config = load_config(None).authz
    service = build_authz_service(config)
    await service.start()
    modes = ["no hooks", "off", "on"]
    results: dict[str, list[float]] = {m: [] for m in modes}
    try:
        await _round(service, calls)  # warm-up
        for _ in range(rounds):
            for mode in modes:
                with _mode(mode):
                    results[mode].append(await _round(service, calls))
    finally:
        await service.close()
    floor = statistics.median(results["no hooks"])
    print(f"Checks/s in process, {rounds} interleaved rounds of {calls} calls (decision cache on)")
    for mode in modes:
        values = results[mode]
        median = statistics.median(values)
        print(
            f"  tracing {mode:9s} median {median:8.0f}  (min {min(values):.0f}, "
            f"max {max(values):.0f})  ratio to no hooks {median / floor:.3f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
