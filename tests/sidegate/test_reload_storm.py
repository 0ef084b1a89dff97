"""A reload storm under traffic through a real Envoy.

100 rewrites alternating valid and invalid versions of a policy, a rule file and a key file, with
SIGHUPs among them, while a client keeps sending requests through Envoy. Expected: no request
fails, every valid version takes effect, no invalid one ever does, every watcher still runs at
the end, and SIGTERM exits 0. Progress is observed (probes, /readyz), never timed.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import grpc
from google.rpc import code_pb2

from sidegate.extauthz.identity.api_keys.digest import KeyDigester
from sidegate.extauthz.identity.api_keys.file_store import write_key_file
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from tests.harness import Stack, http_request
from tests.sidegate.process_helpers import check, components, rate_limit, wait_for

ROUNDS = 100
STEADY_KEY = "sg_storm_steady_key_000000"

# Every path is allowed except /probe/<n>, allowed only while version <n> is loaded.
POLICY = """package envoy.authz

import rego.v1

default allow := false

version := "{version}"

allow if input.parsed_path[0] != "probe"

allow if {{
	input.parsed_path[0] == "probe"
	input.parsed_path[1] == version
}}
"""


def bad_policy(n: int) -> str:
    """Version ``n`` made invalid: a syntax error, or no package declaration."""
    text = POLICY.format(version=n)
    if n % 4 == 1:
        return text.replace("allow if input.parsed_path[0]", "allow if ][ input.parsed_path[0]")
    return text.replace("package envoy.authz", "# package envoy.authz")


RULES = """domain: storm
descriptors:
  - key: k
    rate_limit: {{unit: hour, requests_per_unit: {limit}}}
"""
BAD_RULES = [
    RULES + "domain: duplicate\n",
    RULES.replace("unit: hour", "unit: fortnight"),
]


def round_key(n: int) -> str:
    return f"sg_storm_round_key_{n:06d}"


def replace(path: Path, text: str) -> None:
    """Write beside and rename: a reader sees the old file or the new, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_keys(path: Path, *keys: str) -> None:
    tmp = path.with_name(f".{path.name}.new")
    records = [ApiKeyRecord(digest=KeyDigester().digest(k), consumer=k[-6:]) for k in keys]
    write_key_file(tmp, records)
    os.replace(tmp, path)


def bad_keys(n: int) -> str:
    digest = KeyDigester().digest(round_key(n))
    if n % 4 == 1:
        return f"keys:\n  - digest: {digest}\n    consumer: x\n  - {{digest: broken"
    return f"keys:\n  - digest: {digest}\n    consumer: x\n    consumer: y\n"  # duplicate key


class Traffic(threading.Thread):
    """Steady requests through Envoy with the key every version holds; records failures."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[tuple[int, bytes]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            status, _, body = http_request(self.port, "GET", "/hello", {"x-api-key": STEADY_KEY})
            self.sent += 1
            if status != 200:
                self.failures.append((status, body[:200]))


def probe_ok(port: int, version: int) -> bool:
    answer = check(port, f"/probe/{version}", {"x-api-key": STEADY_KEY})
    return answer.status.code == code_pb2.OK


def key_ok(port: int, key: str) -> bool:
    return check(port, "/hello", {"x-api-key": key}).status.code == code_pb2.OK


def limit(port: int) -> int:
    return rate_limit(port, "storm", [("k", "v")]).statuses[0].current_limit.requests_per_unit


def all_rejected(port_admin_proc) -> bool:  # type: ignore[no-untyped-def]
    parts = components(port_admin_proc)
    return all(
        parts[name].get("last_reload") == "failure"
        for name in ("policy", "ratelimit_rules", "key_store:keys")
    )


def test_reload_storm_under_traffic(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    rules = tmp_path / "rules"
    rules.mkdir()
    keyfile = tmp_path / "keys.yaml"
    replace(policies / "authz.rego", POLICY.format(version=0))
    replace(rules / "storm.yaml", RULES.format(limit=1000))
    write_keys(keyfile, STEADY_KEY, round_key(0))
    config = {
        # one JSON line per call would cost more CPU than the storm itself
        "server": {"log_level": "warning"},
        "authz": {
            "policy": {"directory": str(policies), "watch_interval": 0.05},
            "identity": {
                "sources": [
                    {
                        "name": "keys",
                        "type": "api_key",
                        "store": {"type": "file", "path": str(keyfile), "reload_interval": 0.05},
                    }
                ],
            },
        },
        "ratelimit": {"rules_dir": str(rules), "reload": {"watch": True, "interval_seconds": 0.05}},
    }
    with Stack.start(tmp_path, config) as stack:
        proc = stack.sidegate
        port = proc.grpc_port
        assert stack.request("GET", "/hello", {"x-api-key": STEADY_KEY})[0] == 200
        traffic = Traffic(stack.envoy.port)
        traffic.start()
        good = 0  # the last valid version
        try:
            for n in range(1, ROUNDS + 1):
                if n % 2 == 0:
                    replace(policies / "authz.rego", POLICY.format(version=n))
                    replace(rules / "storm.yaml", RULES.format(limit=1000 + n))
                    write_keys(keyfile, STEADY_KEY, round_key(n))
                    if n % 3 == 0:
                        proc.signal(signal.SIGHUP)
                    wait_for(lambda n=n: probe_ok(port, n), f"policy version {n}")
                    wait_for(lambda n=n: limit(port) == 1000 + n, f"rule version {n}")
                    wait_for(lambda n=n: key_ok(port, round_key(n)), f"key version {n}")
                    assert not key_ok(port, round_key(good))  # the previous set is gone
                    good = n
                else:
                    replace(policies / "authz.rego", bad_policy(n))
                    replace(rules / "storm.yaml", BAD_RULES[n // 2 % 2].format(limit=1000 + n))
                    replace(keyfile, bad_keys(n))
                    if n % 3 == 0:
                        proc.signal(signal.SIGHUP)
                    wait_for(lambda: all_rejected(proc), f"invalid version {n} rejected")
                    # nothing of the invalid version, everything of the last valid one
                    assert probe_ok(port, good) and not probe_ok(port, n)
                    assert limit(port) == 1000 + good
                    assert key_ok(port, round_key(good)) and not key_ok(port, round_key(n))
        finally:
            traffic.stop.set()
            traffic.join(30)
        assert traffic.sent > ROUNDS
        assert traffic.failures == []
        parts = components(proc)
        for name in ("policy", "ratelimit_rules", "key_store:keys"):
            assert parts[name]["watcher"] == "running", parts[name]
        try:
            assert proc.stop() == 0
        except grpc.RpcError:  # pragma: no cover - only to show a clearer failure
            raise
    assert "Traceback" not in proc.output()
