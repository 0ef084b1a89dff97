"""Tracing end to end: a real Envoy, ``sidegate serve`` with tracing on, and a real OTLP/gRPC
receiver (the OpenTelemetry collector protocol's generated service) started by the test.

The client's W3C ``traceparent`` reaches sidegate in the CheckRequest's headers; the exported
Check span continues that trace, its identity and policy spans are its children, and no
credential is among the exported attributes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.harness import Stack

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.arrived = threading.Condition()

    def Export(self, request: Any, context: Any) -> Any:
        with self.arrived:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
            self.arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, names: set[str], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                found = {s.name: s for s in self.spans if s.trace_id.hex() == TRACE_ID}
                if names <= set(found):
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"spans {names - set(found)} never arrived; got {list(found)}")
                self.arrived.wait(left)


@pytest.fixture
def receiver() -> Iterator[tuple[int, Receiver]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(0)


def test_check_spans_continue_the_clients_trace_through_envoy(
    tmp_path: Path, receiver: tuple[int, Receiver]
) -> None:
    port, collector = receiver
    config = {
        "tracing": {
            "enabled": True,
            "exporter": "otlp_grpc",
            "endpoint": f"http://127.0.0.1:{port}",
            "service_name": "sidegate-e2e",
        }
    }
    with Stack.start(tmp_path, config) as stack:
        status, _, _ = stack.request(
            "GET",
            "/hello",
            headers={
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                "authorization": "Bearer never-exported",
            },
        )
        assert status == 200
    # Stopping sidegate flushes its batch of spans.
    spans = collector.wait_for(
        {"envoy.service.auth.v3.Authorization/Check", "sidegate.identity", "sidegate.policy"}
    )
    check = spans["envoy.service.auth.v3.Authorization/Check"]
    assert check.parent_span_id.hex() == PARENT_ID
    for stage in ("sidegate.identity", "sidegate.policy"):
        assert spans[stage].parent_span_id == check.span_id
    attributes = {a.key: a.value for a in check.attributes}
    assert attributes["sidegate.decision"].string_value == "allowed"
    dump = " ".join(str(s) for s in collector.spans)
    assert "never-exported" not in dump
