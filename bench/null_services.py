"""The null baseline: an always-allow ext_authz and an always-OK rate-limit server.

They do no work beyond decoding the request and encoding a constant answer, so their throughput
behind Envoy is the ceiling any Python gRPC service reaches on this host with the same server
model. ``--model aio`` serves with ``grpc.aio``, on asyncio's own loop or with ``--loop uvloop``
on uvloop (sidegate's ``server.event_loop``); ``--model threads`` with ``grpc.server`` and a
thread pool, exactly as ``sidegate serve`` does (same options).

    python -m bench.null_services --address 127.0.0.1:9191 --model threads --threads 16
    python -m bench.null_services --address 127.0.0.1:9191 --loop uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_ALLOW = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=0), ok_response=external_auth_pb2.OkHttpResponse()
)
_OK = rls_pb2.RateLimitResponse.OK
_OPTIONS = [("grpc.so_reuseport", 0)]


def rate_limit_ok(request: Any) -> Any:
    statuses = [rls_pb2.RateLimitResponse.DescriptorStatus(code=_OK) for _ in request.descriptors]
    return rls_pb2.RateLimitResponse(overall_code=_OK, statuses=statuses)


class SyncNullAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    def Check(self, request: Any, context: Any) -> Any:
        return _ALLOW


class SyncNullRateLimit(rls_pb2_grpc.RateLimitServiceServicer):
    def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        return rate_limit_ok(request)


class AioNullAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(self, request: Any, context: Any) -> Any:
        return _ALLOW


class AioNullRateLimit(rls_pb2_grpc.RateLimitServiceServicer):
    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        return rate_limit_ok(request)


def _serving_health(servicer: Any) -> None:
    for name in ("", "envoy.service.auth.v3.Authorization",
                 "envoy.service.ratelimit.v3.RateLimitService"):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def serve_threads(address: str, threads: int) -> None:
    pool = futures.ThreadPoolExecutor(threads, thread_name_prefix="grpc")
    server = grpc.server(pool, options=_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(SyncNullAuthorization(), server)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(SyncNullRateLimit(), server)
    health_servicer = health.HealthServicer()
    _serving_health(health_servicer)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"null_services: cannot bind {address}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    stop.wait()
    server.stop(1).wait()
    pool.shutdown(wait=False)


async def serve_aio(address: str) -> None:
    server = grpc.aio.server(options=_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AioNullAuthorization(), server)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(AioNullRateLimit(), server)
    health_servicer = health.aio.HealthServicer()
    for name in ("", "envoy.service.auth.v3.Authorization",
                 "envoy.service.ratelimit.v3.RateLimitService"):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"null_services: cannot bind {address}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.null_services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:9191")
    parser.add_argument("--model", choices=("aio", "threads"), default="aio")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop of the aio model")
    args = parser.parse_args(argv)
    if not args.address.startswith("127.0.0.1:"):
        parser.error("the bench serves on loopback only: --address 127.0.0.1:PORT")
    if args.model == "threads" and args.loop != "asyncio":
        parser.error("--loop uvloop: the threads model runs no event loop")
    if args.model == "aio":
        factory = None
        if args.loop == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve_aio(args.address))
    else:
        serve_threads(args.address, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
