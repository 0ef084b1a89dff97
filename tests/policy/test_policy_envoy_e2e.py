"""Policy decisions end to end: real Envoy -> ``sidegate serve`` -> echo upstream.

Checks what the client and the upstream actually see: a deny's custom status, body and headers;
headers added and removed upstream, query rewritten and a response header added on an allow;
a per-route policy chosen through ``context_extensions``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from tests.harness import Stack

E2E_POLICIES = Path(__file__).parent / "rego_e2e"
CONFIG = {"authz": {"policy": {"directory": str(E2E_POLICIES), "default_path": "e2e/decide"}}}


def strict_route(cfg: dict[str, Any]) -> None:
    """Add a route for /strict whose ext_authz check uses the policy ``e2e/strict``."""
    listener = next(lst for lst in cfg["static_resources"]["listeners"] if lst["name"] == "ingress")
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    host = manager["route_config"]["virtual_hosts"][0]
    route = {
        "match": {"prefix": "/strict"},
        "route": {"cluster": "upstream"},
        "typed_per_filter_config": {
            "envoy.filters.http.ext_authz": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3"
                ".ExtAuthzPerRoute",
                "check_settings": {"context_extensions": {"policy": "e2e/strict"}},
            }
        },
    }
    host["routes"].insert(0, route)


def test_policy_decisions_through_envoy(tmp_path: Path) -> None:
    with Stack.start(tmp_path, CONFIG, envoy_mutate=strict_route) as stack:
        # A deny with a custom status, JSON body and headers (two Set-Cookie values).
        status, headers, body = stack.request("GET", "/premium/report")
        assert status == 402
        assert json.loads(body) == {"error": "upgrade required"}
        assert headers["content-type"] == "application/json"
        assert headers["x-deny-reason"] == "premium"
        assert headers["set-cookie"].split("\n") == ["a=1", "b=2"]
        assert all(not r["path"].startswith("/premium") for r in stack.upstream.seen)

        # An allow that edits the request on its way upstream and the response on its way back.
        status, headers, body = stack.request(
            "GET",
            "/open/data?keep=1&drop=2",
            headers={"x-remove-me": "secret", "x-keep-me": "kept"},
        )
        assert status == 200, body
        upstream = stack.upstream.seen[-1]
        seen = upstream["headers"]
        assert seen["x-added-by-policy"] == "yes"
        assert "x-remove-me" not in seen
        assert seen["x-keep-me"] == "kept"
        assert seen["x-multi"] == "one,two"  # first value set, the second appended
        assert upstream["path"].startswith("/open/data?")
        query = upstream["path"].split("?", 1)[1].split("&")
        assert sorted(query) == ["added=1", "keep=1"]
        assert headers["x-policy-response"] == "present"

        # The default decision for anything else: a plain 403 with the policy's body.
        status, _, body = stack.request("GET", "/elsewhere")
        assert (status, body) == (403, b"denied by the e2e policy")

        # A route that selects another decision path through context_extensions.
        status, headers, body = stack.request("GET", "/strict/open")
        assert (status, body) == (401, b"strict route")
        assert headers["www-authenticate"] == 'Bearer realm="e2e"'

        checks = [r for r in stack.sidegate.logs() if r.get("event") == "check"]
        strict = next(r for r in checks if r["path"] == "/strict/open")
        assert strict["policy"] == "e2e/strict" and strict["decision_id"]


def test_sighup_reloads_policy_and_keeps_it_when_broken(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    policy = policies / "e2e.rego"
    policy.write_text((E2E_POLICIES / "e2e.rego").read_text())
    config = {"authz": {"policy": {"directory": str(policies), "default_path": "e2e/decide"}}}
    with Stack.start(tmp_path, config) as stack:
        assert stack.request("GET", "/elsewhere")[0] == 403

        policy.write_text(
            policy.read_text().replace(
                'default decide := {"allowed": false, "body": "denied by the e2e policy"}',
                "default decide := true",
            )
        )
        stack.sidegate.signal(signal.SIGHUP)
        assert wait_for_status(stack, "/elsewhere", 200)

        policy.write_text("package e2e\n\ndecide if {\n  input.x ==\n}\n")
        stack.sidegate.signal(signal.SIGHUP)
        assert wait_for_log(stack, "policy_reload_failed")
        assert stack.request("GET", "/elsewhere")[0] == 200  # the old bundle still serves
        failure = next(r for r in stack.sidegate.logs() if r["event"] == "policy_reload_failed")
        assert f"{policy}:4:" in failure["error"]


def wait_for_status(stack: Stack, path: str, status: int) -> bool:
    for _ in range(100):
        if stack.request("GET", path)[0] == status:
            return True
        time.sleep(0.1)
    return False


def wait_for_log(stack: Stack, event: str) -> bool:
    for _ in range(100):
        if any(r.get("event") == event for r in stack.sidegate.logs()):
            return True
        time.sleep(0.1)
    return False
