"""gRPC APIs authorised by message content, through a real Envoy.

A real gRPC client calls a real gRPC server behind Envoy; Envoy's ext_authz filter sends the
request body as bytes (``with_request_body.pack_as_bytes``) and ``sidegate serve`` decodes it
with a protoset, so the opa-envoy-plugin-style policy in ``rego_grpc/`` reads
``input.parsed_body.name``. Plain HTTP requests on the same listener keep working.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.harness import Stack
from tests.policy.grpc_protoset import SERVICE, Greeter, protoset_bytes

GREETER = Greeter()
POLICY_DIR = Path(__file__).parent / "rego_grpc"


@pytest.fixture
def greeter_server() -> Iterator[tuple[int, list[str]]]:
    """The upstream: a gRPC server answering SayHello and SayHelloStream; records the names."""
    seen: list[str] = []

    def say_hello(request: Any, context: grpc.ServicerContext) -> Any:
        seen.append(request.name)
        return GREETER.HelloReply(message=f"hello {request.name}")

    def say_hello_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        names = [r.name for r in requests]
        seen.extend(names)
        return GREETER.HelloReply(message="hello " + " and ".join(names))

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "SayHello": grpc.unary_unary_rpc_method_handler(
                say_hello,
                request_deserializer=GREETER.HelloRequest.FromString,
                response_serializer=GREETER.HelloReply.SerializeToString,
            ),
            "SayHelloStream": grpc.stream_unary_rpc_method_handler(
                say_hello_stream,
                request_deserializer=GREETER.HelloRequest.FromString,
                response_serializer=GREETER.HelloReply.SerializeToString,
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, seen
    finally:
        server.stop(0)


def grpc_route(port: int):
    """A route for the Greeter service to the gRPC upstream, with the body sent as bytes."""

    def mutate(cfg: dict[str, Any]) -> None:
        listener = next(
            lst for lst in cfg["static_resources"]["listeners"] if lst["name"] == "ingress"
        )
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        host = manager["route_config"]["virtual_hosts"][0]
        host["routes"].insert(
            0, {"match": {"prefix": f"/{SERVICE}/"}, "route": {"cluster": "greeter"}}
        )
        ext_authz = next(
            f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"
        )
        ext_authz["typed_config"]["with_request_body"] = {
            "max_request_bytes": 8192,
            "allow_partial_message": True,
            "pack_as_bytes": True,
        }
        cfg["static_resources"]["clusters"].append(
            {
                "name": "greeter",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/"
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {
                    "cluster_name": "greeter",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {
                                                "address": "127.0.0.1",
                                                "port_value": port,
                                            }
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        )

    return mutate


def test_a_grpc_client_is_authorised_by_the_message_it_sends(
    tmp_path: Path, greeter_server: tuple[int, list[str]]
) -> None:
    port, seen = greeter_server
    protoset = tmp_path / "greeter.protoset"
    protoset.write_bytes(protoset_bytes())
    config = {
        "authz": {
            "policy": {
                "directory": str(POLICY_DIR),
                "default_path": "envoy/authz/allow",
                "body": {"proto_descriptor": str(protoset)},
            }
        }
    }
    with Stack.start(tmp_path, config, envoy_mutate=grpc_route(port)) as stack:
        with grpc.insecure_channel(f"127.0.0.1:{stack.envoy.port}") as channel:
            say_hello = channel.unary_unary(
                f"/{SERVICE}/SayHello",
                request_serializer=GREETER.HelloRequest.SerializeToString,
                response_deserializer=GREETER.HelloReply.FromString,
            )
            reply = say_hello(GREETER.HelloRequest(name="alice"), timeout=10)
            assert reply.message == "hello alice"

            with pytest.raises(grpc.RpcError) as denied:
                say_hello(GREETER.HelloRequest(name="mallory"), timeout=10)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "mallory" not in seen

            # Client streaming: the first message decides (a business account).
            stream = channel.stream_unary(
                f"/{SERVICE}/SayHelloStream",
                request_serializer=GREETER.HelloRequest.SerializeToString,
                response_deserializer=GREETER.HelloReply.FromString,
            )
            business = [GREETER.HelloRequest(name="acme", kind=2), GREETER.HelloRequest(name="x")]
            assert stream(iter(business), timeout=10).message == "hello acme and x"
            with pytest.raises(grpc.RpcError) as denied:
                stream(iter([GREETER.HelloRequest(name="joe", kind=1)]), timeout=10)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # A plain HTTP request on the same listener: decided by its path, body not decoded.
        assert stack.request("GET", "/public")[0] == 200
        assert stack.request("GET", "/private")[0] == 403
    assert seen == ["alice", "acme", "x"]
