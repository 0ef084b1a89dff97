"""Introspection end to end: Envoy → ``sidegate serve`` → Authlib's RFC 7662 endpoint."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.harness import Stack
from tests.identity.introspection_server import CLIENT_ID, CLIENT_SECRET, IntrospectionServer


@pytest.fixture
def threaded_server() -> Iterator[IntrospectionServer]:
    """The endpoint on its own event loop: the harness talks to it from another process."""
    server = IntrospectionServer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_opaque_tokens_through_envoy(tmp_path: Path, threaded_server: IntrospectionServer) -> None:
    server = threaded_server
    server.issue("opaque-premium-token", extra={"plan": "premium"})
    server.issue("opaque-revoked-token", revoked=True)
    config = {
        "authz": {
            "policy": {"directory": str(REPO_ROOT / "policies")},
            "identity": {
                "sources": [
                    {
                        "name": "opaque",
                        "type": "introspection",
                        "endpoint": server.url,
                        "client_id": CLIENT_ID,
                        "client_secret_env": "SG_E2E_INTROSPECTION_SECRET",
                        "tier_claim": "plan",
                        "audiences": ["orders-api"],
                        "breaker": {"failure_threshold": 100},
                    }
                ],
                "upstream_headers": {"x-user-id": "subject", "x-consumer-tier": "tier"},
            },
        },
        "ratelimit": {"rules_dir": str(REPO_ROOT / "examples" / "ratelimit")},
    }
    env = {"SG_E2E_INTROSPECTION_SECRET": CLIENT_SECRET}
    with Stack.start(tmp_path, config, env=env) as stack:
        good = {"authorization": "Bearer opaque-premium-token"}
        status, headers, _ = stack.request("GET", "/hello", good)
        assert status == 200
        seen = stack.upstream.last_headers()
        assert (seen["x-user-id"], seen["x-consumer-tier"]) == ("user-1", "premium")
        assert headers["x-ratelimit-limit"].startswith("20")  # premium quota via metadata
        for _ in range(3):
            assert stack.request("GET", "/hello", good)[0] == 200
        assert server.hits == 1  # cached

        status, headers, _ = stack.request(
            "GET", "/hello", {"authorization": "Bearer opaque-revoked-token"}
        )
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer ")

        server.mode = "error500"
        status, _, _ = stack.request("GET", "/hello", {"authorization": "Bearer opaque-new"})
        assert status == 503
        server.mode = "ok"

        output = stack.sidegate.output() + stack.sidegate.metrics()
        for secret in ("opaque-premium-token", "opaque-revoked-token", "opaque-new", CLIENT_SECRET):
            assert secret not in output
        assert 'cause="status"' in stack.sidegate.metrics()
