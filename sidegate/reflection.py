"""gRPC server reflection under both names clients ask for: ``grpc.reflection.v1`` (grpcurl and
current gRPC tooling try it first) and ``grpc.reflection.v1alpha`` (older clients).

grpcio-reflection (1.85) implements only v1alpha. The v1 protocol is the same messages with the
same field numbers under another package name, so the v1 service is the v1alpha servicer behind
handlers that use the v1alpha (wire-identical) message classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from sidegate.grpc_guard import GuardedServer

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME


def enable_reflection(service_names: Iterable[str], server: GuardedServer) -> None:
    names = [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    servicer: Any = (
        reflection.aio.ReflectionServicer(names)
        if server.aio
        else reflection.ReflectionServicer(names)
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    # As generated code registers a service: by method path, and generically.
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, handlers),)
    )
    server.add_registered_method_handlers(V1_SERVICE_NAME, handlers)
