"""Speaking Envoy's two protocols (and gRPC health) to a ``sidegate serve`` subprocess."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REPO_ROOT
from tests.harness import SidegateProcess, http_request

AUTHZ = "envoy.service.auth.v3.Authorization"
RATELIMIT = "envoy.service.ratelimit.v3.RateLimitService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(port: int, path: str = "/hello", headers: dict[str, str] | None = None) -> Any:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", path, "api.example.com"
    for name, value in (headers or {}).items():
        http.headers[name] = value
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)


def rate_limit(port: int, domain: str, entries: list[tuple[str, str]]) -> Any:
    descriptor = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    request = rls_pb2.RateLimitRequest(domain=domain, descriptors=[descriptor])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=10)


def health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def readyz(proc: SidegateProcess) -> tuple[int, dict[str, Any]]:
    status, _, body = http_request(proc.admin_port, "GET", "/readyz")
    return status, json.loads(body)


def components(proc: SidegateProcess) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in readyz(proc)[1]["components"]}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll until ``condition()`` is truthy; the timeout is generous (a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def events(proc: SidegateProcess, name: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        r for r in proc.logs()
        if r.get("event") == name and all(r.get(k) == v for k, v in fields.items())
    ]


def sighup_and_wait(proc: SidegateProcess) -> dict[str, Any]:
    """Send SIGHUP, wait for the reload it triggers to finish; its ``reloaded`` record."""
    before = len(events(proc, "reloaded")) + len(events(proc, "reload_failed", component="config"))
    proc.signal(signal.SIGHUP)
    wait_for(
        lambda: len(events(proc, "reloaded"))
        + len(events(proc, "reload_failed", component="config")) > before,
        "the SIGHUP reload to finish",
    )
    done = events(proc, "reloaded")
    return done[-1] if done else {}


def copy_policies(target: Path) -> Path:
    shutil.copytree(REPO_ROOT / "policies", target, ignore=shutil.ignore_patterns("__init__.py"))
    return target


RULES_V1 = """domain: test
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 1}
"""
RULES_V2 = RULES_V1.replace("requests_per_unit: 1", "requests_per_unit: 7")
DEEP_REGO = "package deep\nimport rego.v1\n\nx := " + "[" * 3000 + "]" * 3000 + "\n"
