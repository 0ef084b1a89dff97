"""Issues 9 and 10 through the front door (``sidegate serve``, both server models): requests
that do not decode get INVALID_ARGUMENT without a traceback, malformed admin requests are
answered quietly, and a seeded fuzz of >= 2,000 hostile Checks only ever gets deliberate answers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import SidegateProcess
from tests.policy.helpers import check_request
from tests.sidegate.check_fuzz import fuzz_policy_dir, messages

pytestmark = pytest.mark.timeout(240)

CHECK = "/envoy.service.auth.v3.Authorization/Check"
UNARY = {
    CHECK: "envoy.service.auth.v3.CheckRequest",
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit":
        "envoy.service.ratelimit.v3.RateLimitRequest",
    "/grpc.health.v1.Health/Check": "grpc.health.v1.HealthCheckRequest",
}
REFLECTION = (
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)
GARBAGE = [b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a" * 50, b"\x12\x05ab"]


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture(params=["aio", "threads"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SidegateProcess]:
    fuzz_policy_dir(str(tmp_path / "policies"))
    config = {
        "server": {"model": request.param},
        "authz": {"policy": {"directory": str(tmp_path / "policies"),
                             "default_path": "fuzz/decision"}},
    }
    process = SidegateProcess(tmp_path, config)
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def _assert_clean_log(process: SidegateProcess) -> None:
    output = process.output()
    assert "Traceback" not in output, output[-3000:]
    # stdlib logging (grpc, aiohttp, python-multipart) writes plain lines to stderr
    plain = [line for line in output.splitlines() if line and not line.startswith("{")]
    assert not plain, plain[:5]
    errors = [r for r in process.logs() if r.get("level") in ("error", "critical")]
    assert not errors, errors[:3]


def _still_serves(channel: grpc.Channel) -> None:
    check = channel.unary_unary(
        CHECK,
        request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    assert check(check_request("/hello"), timeout=10).status.code == 0
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_undecodable_requests_get_invalid_argument_without_traceback(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for method, message in UNARY.items():
            call = channel.unary_unary(
                method, request_serializer=_identity, response_deserializer=_identity
            )
            for garbage in GARBAGE:
                with pytest.raises(grpc.RpcError) as failed:
                    call(garbage, timeout=10)
                assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                assert failed.value.details() == f"request does not decode as {message}"
        for method in REFLECTION:
            stream = channel.stream_stream(
                method, request_serializer=_identity, response_deserializer=_identity
            )
            with pytest.raises(grpc.RpcError) as failed:
                list(stream(iter([GARBAGE[0]]), timeout=10))
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert failed.value.details() == (
                "request does not decode as grpc.reflection.v1alpha.ServerReflectionRequest"
            )
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch", request_serializer=_identity,
            response_deserializer=_identity,
        )
        with pytest.raises(grpc.RpcError) as failed:
            list(watch(GARBAGE[0], timeout=10))
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _still_serves(channel)
    time.sleep(0.2)
    refused = [r for r in server.logs() if r.get("event") == "undecodable_request"]
    assert len(refused) == len(UNARY) * len(GARBAGE) + len(REFLECTION) + 1
    assert all(r["level"] == "warning" for r in refused)
    metrics = server.metrics()
    assert 'sidegate_grpc_errors_total{code="INVALID_ARGUMENT",service="authz"} 4.0' in metrics
    assert 'sidegate_grpc_errors_total{code="INVALID_ARGUMENT",service="ratelimit"} 4.0' in metrics
    assert 'sidegate_grpc_errors_total{code="INVALID_ARGUMENT",service="health"} 5.0' in metrics
    assert 'sidegate_grpc_errors_total{code="INVALID_ARGUMENT",service="reflection"} 2.0' in metrics
    _assert_clean_log(server)


MALFORMED_HTTP = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 50,
    b"GARBAGE\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /readyz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /\x00\xff HTTP/1.1\r\n\r\n",
]


def test_malformed_admin_requests_are_answered_without_traceback(server):
    for payload in MALFORMED_HTTP:
        with socket.create_connection(("127.0.0.1", server.admin_port), timeout=10) as sock:
            sock.sendall(payload)
            answer = sock.recv(100)
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer[:20], (payload[:30], answer)
    assert server.metrics()  # still serving
    time.sleep(0.2)
    _assert_clean_log(server)


ALLOWED_DENIALS = {400, 401, 403, 503}


@pytest.mark.parametrize("server", ["aio"], indirect=True)
def test_fuzzed_checks_get_only_deliberate_answers(server):
    """>= 2,000 seeded random, mutated and hostile CheckRequests: OK, a denial with
    400/401/403/503, or INVALID_ARGUMENT for bytes that are no CheckRequest; never another
    gRPC status, never a traceback; the server still serves."""
    counts: dict[str, int] = {}
    with grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[("grpc.max_send_message_length", 16 << 20)],
    ) as channel:
        call = channel.unary_unary(CHECK, request_serializer=_identity,
                                   response_deserializer=_identity)
        batch: list[tuple[str, bytes, grpc.Future]] = []

        def drain() -> None:
            for kind, data, future in batch:
                try:
                    response = external_auth_pb2.CheckResponse.FromString(future.result())
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (kind, data[:80])
                    counts["invalid_argument"] = counts.get("invalid_argument", 0) + 1
                    continue
                if response.status.code == 0:
                    outcome = "ok"
                else:
                    outcome = str(response.denied_response.status.code)
                    assert int(outcome) in ALLOWED_DENIALS, (kind, data[:80], response)
                counts[outcome] = counts.get(outcome, 0) + 1
            batch.clear()

        for seed in (9, 10):
            for kind, data in messages(seed, 1002):
                batch.append((kind, data, call.future(data, timeout=30)))
                if len(batch) >= 32:
                    drain()
        drain()
        _still_serves(channel)
    assert sum(counts.values()) == 2004
    # The generators reach every kind of answer, not only one.
    assert {"ok", "400", "403", "invalid_argument"} <= counts.keys(), counts
    time.sleep(0.2)
    _assert_clean_log(server)
