"""The foundation end to end: real Envoy (examples/envoy.yaml) -> `sidegate serve` (embedded default
policy, example rate-limit rules) -> echo upstream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.harness import SidegateProcess, Stack, http_request

# The harness fills in the checkout's policies/ and examples/ratelimit/: the embedded default.
DEFAULT: dict = {}


def test_allow_deny_and_quota_through_envoy(tmp_path: Path) -> None:
    with Stack.start(tmp_path, DEFAULT) as stack:
        status, _, body = stack.request("GET", "/hello?x=1&x=2")
        assert status == 200, body
        assert json.loads(body)["path"] == "/hello?x=1&x=2"

        status, _, _ = stack.request("GET", "/deny/this")
        assert status == 403
        # The upstream never saw the denied request.
        assert all(r["path"] != "/deny/this" for r in stack.upstream.seen)

        # /admin needs the admin role; the embedded default has no identity sources.
        assert stack.request("GET", "/admin/panel")[0] == 403

        # Example quota for /limited: 3 per minute, the 4th is refused by the rate-limit service.
        statuses = [stack.request("GET", "/limited")[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        _, headers, _ = stack.request("GET", "/limited")
        assert headers["x-ratelimit-remaining"] == "0"
        assert headers["x-ratelimit-limit"].startswith("3")

        # Envoy really called both services for every request (stats of the routed cluster).
        stats = stack.envoy.stats()
        assert stats["http.ingress.ext_authz.ok"] == 6
        assert stats["http.ingress.ext_authz.denied"] == 2
        assert stats["cluster.upstream.ratelimit.ok"] == 4
        assert stats["cluster.upstream.ratelimit.over_limit"] == 2

        logs = stack.sidegate.logs()
        checks = [r for r in logs if r.get("event") == "check"]
        assert len(checks) == 8
        denied = next(r for r in checks if r["path"] == "/deny/this")
        assert denied["decision"] == "denied" and denied["status"] == 403
        assert {"decision_id", "reason", "method", "duration_ms", "request_id"} <= denied.keys()
        assert [r for r in logs if r.get("event") == "should_rate_limit"]

        metrics = stack.sidegate.metrics()
        assert 'sidegate_authz_checks_total{outcome="denied"} 2.0' in metrics
        assert "sidegate_authz_check_seconds_bucket" in metrics


def test_health_reflection_and_admin(tmp_path: Path) -> None:
    sidegate = SidegateProcess(tmp_path, DEFAULT)
    sidegate.start()
    try:
        target = f"127.0.0.1:{sidegate.grpc_port}"
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in (
                "",
                "envoy.service.auth.v3.Authorization",
                "envoy.service.ratelimit.v3.RateLimitService",
            ):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
            names = {s.name for s in reply.list_services_response.service}
            assert {
                "envoy.service.auth.v3.Authorization",
                "envoy.service.ratelimit.v3.RateLimitService",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            } <= names

            # The v1 service (what grpcurl asks first) answers the same protocol.
            v1 = channel.stream_stream(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            symbol = reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="envoy.service.auth.v3.Authorization"
            )
            listed, described = list(v1(iter([request, symbol]), timeout=5))
            assert {s.name for s in listed.list_services_response.service} == names
            assert described.file_descriptor_response.file_descriptor_proto

        assert http_request(sidegate.admin_port, "GET", "/healthz")[0] == 200
        assert http_request(sidegate.admin_port, "GET", "/readyz")[0] == 200
        assert "sidegate_ready 1.0" in sidegate.metrics()
    finally:
        assert sidegate.stop() == 0


def _check_request(path: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.id = "GET", path, "example", "req-1"
    http.headers["user-agent"] = "test"
    return request


@pytest.mark.parametrize("model", ["aio", "threads"])
def test_sigterm_during_traffic_loses_no_in_flight_call(tmp_path: Path, model: str) -> None:
    sidegate = SidegateProcess(tmp_path, {"server": {"model": model}})
    sidegate.start()
    target = f"127.0.0.1:{sidegate.grpc_port}"

    async def traffic() -> list[object]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            await stub.Check(_check_request("/warm"), timeout=5)
            calls = [stub.Check(_check_request(f"/x/{i}"), timeout=20) for i in range(200)]
            # Every call is on the wire before the signal: they are all in flight.
            await asyncio.sleep(0.05)
            sidegate.signal(15)
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(traffic())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, (len(errors), errors[:1])
    assert all(r.status.code == 0 for r in results)  # type: ignore[union-attr]
    assert sidegate.stop() == 0
    events = [r.get("event") for r in sidegate.logs()]
    assert "draining" in events and events[-1] == "stopped"
