"""The decode guard as installed: handlers rewritten when registered through ``GuardedServer``
(no server interceptor), for both server models, on the registered and the generic path.

The front-door tests (every service of ``sidegate serve``, both models) are in
test_check_hardening.py; these pin the parts a served config does not reach on its own.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidegate.grpc_guard import GuardedServer, guard_handler

ECHO = "/test.Echo/Say"
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"
HEALTH_REQUEST = "grpc.health.v1.HealthCheckRequest"


def _identity(data: bytes) -> bytes:
    return data


def _echo_generic(behavior: Any) -> grpc.GenericRpcHandler:
    """A service registered only generically (no method path registered): grpc looks its
    handler up per call, so the guard's generic path serves it."""
    return grpc.method_handlers_generic_handler("test.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
    })


def _calls(port: int) -> dict[str, Any]:
    """What a client sees: a valid and an undecodable request per method."""
    out: dict[str, Any] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        valid = health_pb2.HealthCheckRequest(service="").SerializeToString()
        for method in (ECHO, "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/List"):
            call = channel.unary_unary(
                method, request_serializer=_identity, response_deserializer=_identity
            )
            for name, data in (("valid", valid), ("garbage", GARBAGE)):
                try:
                    call(data, timeout=10)
                    out[f"{method} {name}"] = "OK"
                except grpc.RpcError as exc:
                    out[f"{method} {name}"] = (exc.code(), exc.details())
    return out


def _expected(unimplemented_details: str) -> dict[str, Any]:
    refused = (grpc.StatusCode.INVALID_ARGUMENT, f"request does not decode as {HEALTH_REQUEST}")
    return {
        f"{ECHO} valid": "OK",
        f"{ECHO} garbage": refused,
        "/grpc.health.v1.Health/Check valid": "OK",
        "/grpc.health.v1.Health/Check garbage": refused,
        # grpcio-health leaves List unimplemented; the guard keeps that answer.
        "/grpc.health.v1.Health/List valid": (
            grpc.StatusCode.UNIMPLEMENTED, unimplemented_details
        ),
        "/grpc.health.v1.Health/List garbage": (
            grpc.StatusCode.INVALID_ARGUMENT,
            "request does not decode as grpc.health.v1.HealthListRequest",
        ),
    }


async def test_aio_server_refuses_undecodable_requests_on_both_paths() -> None:
    import asyncio

    async def say(request: Any, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.aio.server()
    guarded = GuardedServer(server)
    assert guarded.aio
    guarded.add_generic_rpc_handlers((_echo_generic(say),))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), guarded)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        seen = await asyncio.get_running_loop().run_in_executor(None, _calls, port)
    finally:
        await server.stop(0)
    assert seen == _expected("Unexpected <class 'NotImplementedError'>: Method not implemented!")


def test_thread_server_refuses_undecodable_requests_on_both_paths() -> None:
    def say(request: Any, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    pool = futures.ThreadPoolExecutor(2)
    server = grpc.server(pool)
    guarded = GuardedServer(server)
    assert not guarded.aio
    guarded.add_generic_rpc_handlers((_echo_generic(say),))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), guarded)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        seen = _calls(port)
    finally:
        server.stop(0).wait()
        pool.shutdown()
    assert seen == _expected("Method not implemented!")


def test_raw_bytes_handlers_are_left_alone() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    assert guard_handler("/test.Raw/Echo", handler, aio=False) is handler
    assert guard_handler("/test.Raw/Echo", handler, aio=True) is handler


def test_aio_request_streams_need_an_async_generator() -> None:
    handler = grpc.stream_unary_rpc_method_handler(
        lambda requests, context: None,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
    )
    with pytest.raises(TypeError, match="async generator"):
        guard_handler("/test.Sum/Add", handler, aio=True)
