"""``sidegate explain`` and ``POST /debug/explain``: each stage of 200, 401, 403 and 429, with
quota peeked at, never taken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from sidegate.explain import ExplainError, parse_descriptor, parse_header
from sidegate.explain_envoy import EnvoyRoute
from tests.conftest import REPO_ROOT
from tests.harness import SidegateProcess, http_request

EXAMPLES = REPO_ROOT / "examples"


def explain(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidegate", "explain", *args],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def explain_json(*args: str) -> dict:
    result = explain(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # stdout is the report and nothing else


def test_an_allowed_request_shows_every_stage() -> None:
    report = explain_json("GET", "http://api.local/hello", "--descriptor", "generic_key=limited")
    assert report["identity"]["verdict"] == "authenticated"
    assert report["policy"]["path"] == "envoy/authz/allow"
    assert report["policy"]["result"] is True
    assert report["policy"]["rules"]["envoy/authz/allow"] is True
    assert report["check_response"]["http_status"] == 200
    assert report["check_response"]["dynamic_metadata"]["tier"] == "default"
    limited = report["ratelimit"]["descriptors"][0]
    assert limited["code"] == "OK" and limited["remaining"] == limited["limit"]["requests_per_unit"]
    assert report["answer"] == {"status": 200, "by": None}


def test_a_policy_denial_names_the_rules_that_decided() -> None:
    report = explain_json("http://api.local/deny")
    assert report["check_response"]["http_status"] == 403
    assert report["policy"]["rules"]["envoy/authz/denied_path"] is True
    assert report["answer"]["by"] == "policy"
    text = explain("http://api.local/deny").stdout
    assert "envoy/authz/denied_path = true" in text and "answer    HTTP 403" in text


def test_an_unknown_api_key_is_a_401_by_identity_and_the_key_is_not_shown() -> None:
    key = "sg_not_a_real_key_0000000000000000"
    report = explain_json(
        "--config", str(EXAMPLES / "sidegate.yaml"), "GET", "http://api.local/orders",
        "-H", f"x-api-key: {key}", "--envoy", str(EXAMPLES / "envoy.yaml"), "--route", "/",
    )
    assert report["identity"]["source"] == "demo-keys"
    assert report["identity"]["status"] == 401
    assert report["answer"]["status"] == 401 and report["answer"]["by"] == "identity"
    assert "www-authenticate" in json.dumps(report["check_response"])
    # Descriptors derived from the route's actions, with the metadata defaults of a denial.
    entries = report["ratelimit"]["descriptors"][0]["descriptor"]
    assert entries == [{"key": "tier", "value": "default"},
                       {"key": "consumer", "value": "anonymous"}]
    assert key not in json.dumps(report)


def test_a_valid_key_gets_its_tier_from_the_checks_metadata() -> None:
    report = explain_json(
        "--config", str(EXAMPLES / "sidegate.yaml"), "http://api.local/orders",
        "-H", "x-api-key: sg_demo_premium_0123456789abcdef",
        "--envoy", str(EXAMPLES / "envoy.yaml"), "--route", "/",
    )
    assert report["identity"]["identity"]["tier"] == "premium"
    entries = report["ratelimit"]["descriptors"][0]["descriptor"]
    assert entries == [{"key": "tier", "value": "premium"},
                       {"key": "consumer", "value": "demo-premium"}]
    assert "sg_demo_premium" not in json.dumps(report)


def test_over_limit_on_redis_is_a_429_and_explaining_takes_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    config = tmp_path / "sidegate.yaml"
    config.write_text(yaml.safe_dump({
        "authz": {"policy": {"directory": str(REPO_ROOT / "policies")}},
        "ratelimit": {
            "backend": "redis",
            # The same algorithm (so the same buckets) in the server and in explain.
            "default_algorithm": "token_bucket",
            "rules_dir": str(EXAMPLES / "ratelimit"),
            "redis": {"url": redis_url, "key_prefix": f"explain{tmp_path.name}:"},
        },
    }))
    process = SidegateProcess(tmp_path, yaml.safe_load(config.read_text()))
    process.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{process.grpc_port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            request = rls_pb2.RateLimitRequest(domain="sidegate")
            entry = request.descriptors.add().entries.add()
            entry.key, entry.value = "generic_key", "limited"
            codes = [stub.ShouldRateLimit(request, timeout=10).overall_code for _ in range(4)]
        assert codes[-1] == rls_pb2.RateLimitResponse.OVER_LIMIT
        args = ("--config", str(config), "http://api.local/limited",
                "--envoy", str(EXAMPLES / "envoy.yaml"), "--route", "/limited")
        first = explain_json(*args)
        second = explain_json(*args)
        assert first["answer"] == {"status": 429, "by": "ratelimit",
                                   "rules": ["sidegate.generic_key_limited"]}
        assert first["ratelimit"]["descriptors"][0]["remaining"] == 0
        assert second["ratelimit"]["descriptors"][0]["remaining"] == 0
    finally:
        assert process.stop() == 0


def test_debug_explain_sees_the_running_processs_memory_buckets(tmp_path: Path) -> None:
    process = SidegateProcess(tmp_path, {})
    process.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{process.grpc_port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            request = rls_pb2.RateLimitRequest(domain="sidegate")
            entry = request.descriptors.add().entries.add()
            entry.key, entry.value = "generic_key", "limited"
            stub.ShouldRateLimit(request, timeout=10)
        body = json.dumps({"method": "GET", "url": "http://api.local/limited",
                           "descriptors": ["generic_key=limited"]})
        status, _, raw = http_request(
            process.admin_port, "POST", "/debug/explain",
            {"content-type": "application/json"}, body,
        )
        assert status == 200, raw
        report = json.loads(raw)
        limited = report["ratelimit"]["descriptors"][0]
        assert limited["remaining"] == limited["limit"]["requests_per_unit"] - 1
        # Explaining took nothing: the same answer again.
        again = json.loads(http_request(
            process.admin_port, "POST", "/debug/explain",
            {"content-type": "application/json"}, body,
        )[2])
        assert again["ratelimit"]["descriptors"][0]["remaining"] == limited["remaining"]
        bad = http_request(process.admin_port, "POST", "/debug/explain", {}, "[1, 2]")
        assert bad[0] == 400
    finally:
        assert process.stop() == 0


def test_user_errors_are_one_line_not_a_traceback() -> None:
    result = explain("GET", "http://x/", "-H", "no-colon-here")
    assert result.returncode == 1
    assert result.stderr.startswith("sidegate: header 'no-colon-here'")
    assert "Traceback" not in result.stderr
    result = explain("--envoy", str(EXAMPLES / "envoy.yaml"), "--route", "/nope", "http://x/")
    assert result.returncode == 1 and "no route named or matching '/nope'" in result.stderr


def test_parsers() -> None:
    assert parse_header("X-Api-Key:  abc ") == ("x-api-key", "abc")
    assert parse_descriptor("generic_key=api,tier=free") == [("generic_key", "api"),
                                                            ("tier", "free")]
    with pytest.raises(ExplainError):
        parse_descriptor("tier")


def test_route_actions_follow_envoys_rules(tmp_path: Path) -> None:
    envoy = tmp_path / "envoy.yaml"
    routes = [{
        "name": "api",
        "match": {"prefix": "/api"},
        "route": {"cluster": "backend", "rate_limits": [
            {"actions": [{"generic_key": {"descriptor_value": "api"}},
                         {"request_headers": {"header_name": "x-team",
                                              "descriptor_key": "team"}}]},
            {"actions": [{"header_value_match": {
                "descriptor_value": "beta",
                "headers": [{"name": "x-beta", "present_match": True}]}}]},
            {"actions": [{"destination_cluster": {}}]},
        ]},
    }]
    manager = {"route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"],
                                                   "routes": routes}]},
               "http_filters": [{"name": "envoy.filters.http.ratelimit",
                                 "typed_config": {"domain": "apis"}}]}
    envoy.write_text(yaml.safe_dump({"static_resources": {"listeners": [{"filter_chains": [
        {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                      "typed_config": manager}]}]}]}}))
    route = EnvoyRoute.load(envoy, "api")
    assert route.domain == "apis"
    from sidegate.explain import ExplainRequest, check_request

    plain = check_request(ExplainRequest(url="http://h/api/x"))
    # No x-team header: Envoy drops that whole descriptor; no x-beta: the match fails too.
    assert route.descriptors(plain, {}) == [[("destination_cluster", "backend")]]
    both = check_request(ExplainRequest(url="http://h/api/x",
                                        headers=[("x-team", "red"), ("x-beta", "1")]))
    assert route.descriptors(both, {}) == [
        [("generic_key", "api"), ("team", "red")],
        [("header_match", "beta")],
        [("destination_cluster", "backend")],
    ]
