"""API keys end to end: real Envoy → ``sidegate serve`` → echo upstream, and Redis-shared keys."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2

from tests.conftest import REPO_ROOT
from tests.harness import SidegateProcess, Stack

# The demo keys documented in examples/api-keys.yaml (published examples, not secrets).
FREE_KEY = "sg_demo_free_0123456789abcdef"
PREMIUM_KEY = "sg_demo_premium_0123456789abcdef"


def _config(store: dict[str, Any], **source: Any) -> dict[str, Any]:
    return {
        "authz": {
            "policy": {"directory": str(REPO_ROOT / "policies")},
            "identity": {
                "sources": [{"name": "keys", "type": "api_key", "store": store, **source}]
            },
        },
        "ratelimit": {"rules_dir": str(REPO_ROOT / "examples" / "ratelimit")},
    }


def test_free_and_premium_keys_get_their_tier_quotas_through_envoy(tmp_path: Path) -> None:
    """Quotas come only from the tier/consumer dynamic metadata sidegate puts on the Check
    answer: examples/ratelimit gives tier free 5/min and premium 20/min per consumer."""
    store = {"type": "file", "path": str(REPO_ROOT / "examples" / "api-keys.yaml")}
    config = _config(
        store, hide_credentials=True, also_accept=[{"header": "authorization", "prefix": "ApiKey "}]
    )
    with Stack.start(tmp_path, config) as stack:
        free = [stack.request("GET", "/hello", {"x-api-key": FREE_KEY})[0] for _ in range(6)]
        assert free == [200] * 5 + [429]
        premium = [stack.request("GET", "/hello", {"x-api-key": PREMIUM_KEY})[0] for _ in range(21)]
        assert premium == [200] * 20 + [429]
        _, headers, _ = stack.request("GET", "/hello", {"x-api-key": PREMIUM_KEY})
        assert headers["x-ratelimit-limit"].startswith("20")

        # hide_credentials: the key never reached the upstream
        assert len(stack.upstream.seen) == 25
        assert all("x-api-key" not in seen["headers"] for seen in stack.upstream.seen)

        status, headers, _ = stack.request("GET", "/hello", {"x-api-key": "sg_not_a_key"})
        assert status == 401
        assert headers["www-authenticate"].startswith("ApiKey ")
        # two different keys in one request
        status, _, _ = stack.request(
            "GET", "/hello", {"x-api-key": FREE_KEY, "authorization": f"ApiKey {PREMIUM_KEY}"}
        )
        assert status == 401
        # the free key by its other location is the same consumer, whose quota is used up
        assert stack.request("GET", "/hello", {"authorization": f"ApiKey {FREE_KEY}"})[0] == 429
        assert stack.request("GET", "/hello")[0] == 401

        stats = stack.envoy.stats()
        # Envoy's rate-limit filter counted every refusal the service gave
        assert stats["cluster.upstream.ratelimit.over_limit"] == 4
        assert stats["cluster.upstream.ratelimit.ok"] == 25

        output = stack.sidegate.output() + stack.sidegate.metrics()
        for key in (FREE_KEY, PREMIUM_KEY, "sg_not_a_key"):
            assert key not in output
        rejected = [r for r in stack.sidegate.logs() if r.get("event") == "identity_rejected"]
        assert rejected and all(r.get("source") == "keys" for r in rejected)


def _check(port: int, key: str) -> int:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/hello", "api.example.com"
    http.headers["x-api-key"] = key
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return stub.Check(request, timeout=5).status.code


def test_redis_store_shared_by_two_sidegate_processes(tmp_path: Path, redis_url: str) -> None:
    prefix = f"e2e:{tmp_path.name}:"
    store = {
        "type": "redis",
        "url": redis_url,
        "prefix": prefix,
        "cache_ttl": 0.2,
        "negative_cache_ttl": 0.2,
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = SidegateProcess(tmp_path / "a", _config(store))
    second = SidegateProcess(tmp_path / "b", _config(store))
    first.start()
    second.start()
    try:
        added = subprocess.run(
            [
                sys.executable, "-m", "sidegate", "keys", "add", "--consumer", "shared",
                "--tier", "premium", "--store", redis_url, "--redis-prefix", prefix,
            ],
            capture_output=True, text=True, cwd=REPO_ROOT, check=True,
        )  # fmt: skip
        key = added.stdout.strip()
        assert _check(first.grpc_port, key) == code_pb2.OK
        assert _check(second.grpc_port, key) == code_pb2.OK
        assert _check(second.grpc_port, "sg_unknown_key") == code_pb2.UNAUTHENTICATED
        for proc in (first, second):
            assert key not in proc.output()
            assert "sg_unknown_key" not in proc.output()
    finally:
        first.stop()
        second.stop()


def test_serving_process_reloads_the_key_file_and_keeps_keys_on_a_bad_one(
    tmp_path: Path,
) -> None:
    from sidegate.extauthz.identity.api_keys.digest import KeyDigester
    from sidegate.extauthz.identity.api_keys.file_store import write_key_file
    from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord

    def records(*keys: str) -> list[ApiKeyRecord]:
        return [ApiKeyRecord(digest=KeyDigester().digest(k), consumer=k[-4:]) for k in keys]

    first, second = "sg_reload_first_key_0001", "sg_reload_second_key_0002"
    path = tmp_path / "keys.yaml"
    write_key_file(path, records(first))
    proc = SidegateProcess(
        tmp_path, _config({"type": "file", "path": str(path), "reload_interval": 0.1})
    )
    proc.start()
    try:
        assert _check(proc.grpc_port, first) == code_pb2.OK
        assert _check(proc.grpc_port, second) == code_pb2.UNAUTHENTICATED
        write_key_file(path, records(second))
        for _ in range(100):  # bounded wait for the watcher (0.1 s interval)
            if _check(proc.grpc_port, second) == code_pb2.OK:
                break
            time.sleep(0.05)
        assert _check(proc.grpc_port, second) == code_pb2.OK
        assert _check(proc.grpc_port, first) == code_pb2.UNAUTHENTICATED

        path.write_text("keys: [ {digest: oops")
        def rejected() -> bool:
            return any(
                r.get("event") == "reload_failed" and r.get("component") == "api_key_file"
                for r in proc.logs()
            )

        deadline = time.monotonic() + 30  # a generous bound for a busy machine, not a timing
        while not rejected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rejected()
        assert _check(proc.grpc_port, second) == code_pb2.OK
        assert first not in proc.output() and second not in proc.output()
    finally:
        proc.stop()
