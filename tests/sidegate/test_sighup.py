"""SIGHUP through the front door: every file it promises is re-read (key files too), the config
file's live parts are swapped, restart-only changes are named, bad files keep everything, and a
poisonous policy neither blocks the reload of the rest nor makes SIGTERM exit non-zero."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from google.rpc import code_pb2

from sidegate.extauthz.identity.api_keys.digest import KeyDigester
from sidegate.extauthz.identity.api_keys.file_store import write_key_file
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from tests.harness import SidegateProcess
from tests.sidegate.process_helpers import (
    DEEP_REGO,
    RULES_V1,
    RULES_V2,
    check,
    components,
    copy_policies,
    events,
    rate_limit,
    readyz,
    sighup_and_wait,
)

FIRST, SECOND = "sg_sighup_first_key_0001", "sg_sighup_second_key_0002"


def keys(*names: str) -> list[ApiKeyRecord]:
    return [ApiKeyRecord(digest=KeyDigester().digest(k), consumer=k[-4:]) for k in names]


def setup(tmp_path: Path) -> dict[str, Any]:
    """No watchers at all: whatever changes after a SIGHUP, SIGHUP did."""
    policies = copy_policies(tmp_path / "policies")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES_V1)
    write_key_file(tmp_path / "keys.yaml", keys(FIRST))
    return {
        "authz": {
            "policy": {"directory": str(policies), "watch_interval": 0},
            "identity": {
                "sources": [
                    {
                        "name": "keys",
                        "type": "api_key",
                        "store": {
                            "type": "file", "path": str(tmp_path / "keys.yaml"),
                            "reload_interval": 0,
                        },
                    }
                ],
            },
        },
        "ratelimit": {"rules_dir": str(rules), "reload": {"watch": False}},
    }


def limit_of(port: int) -> int:
    return rate_limit(port, "test", [("k", "v")]).statuses[0].current_limit.requests_per_unit


def code(port: int, key: str | None, path: str = "/hello") -> int:
    return check(port, path, {"x-api-key": key} if key else {}).status.code


def test_sighup_reloads_key_files_and_rules_even_when_a_policy_is_poisonous(
    tmp_path: Path,
) -> None:
    proc = SidegateProcess(tmp_path, setup(tmp_path))
    proc.start()
    try:
        port = proc.grpc_port
        assert code(port, FIRST) == code_pb2.OK
        assert code(port, SECOND) == code_pb2.UNAUTHENTICATED
        assert limit_of(port) == 1

        write_key_file(tmp_path / "keys.yaml", keys(SECOND))
        (tmp_path / "rules" / "test.yaml").write_text(RULES_V2)
        (tmp_path / "policies" / "deep.rego").write_text(DEEP_REGO)
        for _ in range(2):  # twice: the second signal must find everything as healthy
            done = sighup_and_wait(proc)
            assert done["results"]["api_key_file:keys"] is True
            assert done["results"]["ratelimit_rules"] is True
            assert done["results"]["policy"] is False

        # the key file and the rules took effect; the old policy bundle keeps serving
        assert code(port, SECOND) == code_pb2.OK
        assert code(port, FIRST) == code_pb2.UNAUTHENTICATED
        assert code(port, SECOND, "/deny/x") == code_pb2.PERMISSION_DENIED
        assert limit_of(port) == 7

        failed = events(proc, "reload_failed", component="policy")
        assert failed and failed[0]["level"] == "warning"
        assert failed[0]["file"] == str(tmp_path / "policies")
        status, body = readyz(proc)
        assert status == 200 and body["ready"] is True
        policy = components(proc)["policy"]
        assert policy["state"] == "degraded" and "last reload rejected" in policy["reason"]
        assert 'sidegate_reloads_total{component="policy",result="failure",trigger="sighup"} 2.0' \
            in proc.metrics()
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.output()


def test_sighup_swaps_the_live_parts_of_the_config_file(tmp_path: Path) -> None:
    config = setup(tmp_path)
    proc = SidegateProcess(tmp_path, config)
    proc.start()
    try:
        port = proc.grpc_port
        assert code(port, None, "/public/docs") == code_pb2.UNAUTHENTICATED

        changed = copy.deepcopy(proc.config)
        identity = changed["authz"]["identity"]
        identity["anonymous"] = [{"path_prefixes": ["/public/"]}]
        identity["upstream_headers"] = {"x-consumer": "consumer"}
        changed["ratelimit"]["rules_dir"] = str(tmp_path / "rules2")
        (tmp_path / "rules2").mkdir()
        (tmp_path / "rules2" / "test.yaml").write_text(RULES_V2)
        changed["server"]["grpc_address"] = "127.0.0.1:1"  # needs a restart
        proc.config_path.write_text(yaml.safe_dump(changed, sort_keys=False))

        done = sighup_and_wait(proc)
        assert done["results"]["config"] is True
        restart = events(proc, "config_change_needs_restart")
        assert restart and restart[-1]["keys"] == ["server.grpc_address"]
        assert restart[-1]["level"] == "warning"

        assert code(port, None, "/public/docs") == code_pb2.OK  # the new anonymous rule
        answer = check(port, "/hello", {"x-api-key": FIRST})
        added = {h.header.key: h.header.value for h in answer.ok_response.headers}
        assert added.get("x-consumer") == FIRST[-4:]  # the new upstream header
        assert limit_of(port) == 7  # the new rules_dir

        # A bad config file (a duplicate key) keeps everything as it was.
        proc.config_path.write_text(
            yaml.safe_dump(config, sort_keys=False) + "authz: {enabled: false}\n"
        )
        sighup_and_wait(proc)
        bad = events(proc, "reload_failed", component="config")
        assert bad and "duplicate key 'authz'" in bad[-1]["error"]
        assert code(port, None, "/public/docs") == code_pb2.OK
        assert limit_of(port) == 7
        # the process still listens where it started
        assert readyz(proc)[0] == 200
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.output()
