"""Health that tells the truth per part: with ``failure_mode: error`` a Redis outage marks only the
rate-limit service NOT_SERVING; ext_authz and the process stay SERVING, /readyz stays 200 and
names Redis as down, and everything comes back when Redis does. Real Redis, stopped and paused."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2

from tests.conftest import RedisServer
from tests.harness import SidegateProcess
from tests.sidegate.process_helpers import (
    AUTHZ,
    NOT_SERVING,
    RATELIMIT,
    RULES_V1,
    SERVING,
    check,
    components,
    health,
    rate_limit,
    readyz,
    wait_for,
)


def config(tmp_path: Path, url: str) -> dict:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES_V1.replace("per_unit: 1", "per_unit: 1000"))
    return {
        "ratelimit": {
            "rules_dir": str(rules),
            "backend": "redis",
            "failure_mode": "error",
            "redis": {"url": url, "timeout_seconds": 0.2, "retry_interval_seconds": 0.2},
        }
    }


def ratelimit_fails(port: int) -> bool:
    try:
        rate_limit(port, "test", [("k", "v")])
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
        return True
    return False


def ratelimit_answers(port: int) -> bool:
    try:
        rate_limit(port, "test", [("k", "v")])
    except grpc.RpcError:
        return False
    return True


def test_a_redis_outage_takes_down_only_the_rate_limit_service(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    proc = SidegateProcess(tmp_path, config(tmp_path, redis_server.url))
    proc.start()
    try:
        port = proc.grpc_port
        assert ratelimit_answers(port)
        assert components(proc)["redis"]["state"] == "ok"

        redis_server.stop()
        wait_for(lambda: ratelimit_fails(port), "a rate-limit call to fail")
        wait_for(lambda: health(port, RATELIMIT) == NOT_SERVING, "rate limit NOT_SERVING")
        assert health(port, AUTHZ) == SERVING
        assert health(port, "") == SERVING
        assert check(port, "/hello").status.code == code_pb2.OK  # authz answers meanwhile
        status, body = readyz(proc)
        assert status == 200 and body["ready"] is True
        redis_state = {c["name"]: c for c in body["components"]}["redis"]
        assert redis_state["state"] == "down" and "failure_mode 'error'" in redis_state["reason"]
        assert {c["name"] for c in body["components"]} >= {"policy", "ratelimit_rules", "redis"}

        redis_server.start()  # same port
        wait_for(lambda: ratelimit_answers(port), "Redis to answer again")
        wait_for(lambda: health(port, RATELIMIT) == SERVING, "rate limit SERVING again")
        assert components(proc)["redis"]["state"] == "ok"
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.output()


def test_a_paused_redis_is_an_outage_of_rate_limiting_only(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    proc = SidegateProcess(tmp_path, config(tmp_path, redis_server.url))
    proc.start()
    # WRITE: the token-bucket script (EVALSHA, it writes) waits; CLIENT UNPAUSE itself still
    # runs (under ALL it would wait too). One raw connection, no handshake to pause.
    client = socket.create_connection(("127.0.0.1", redis_server.port), timeout=30)

    def command(*args: str) -> bytes:
        client.sendall(f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a)}\r\n{a}\r\n".encode() for a in args
        ))
        return client.recv(64)

    try:
        port = proc.grpc_port
        assert ratelimit_answers(port)
        assert command("CLIENT", "PAUSE", "60000", "WRITE") == b"+OK\r\n"
        wait_for(lambda: ratelimit_fails(port), "a rate-limit call to time out")
        wait_for(lambda: health(port, RATELIMIT) == NOT_SERVING, "rate limit NOT_SERVING")
        assert health(port, AUTHZ) == SERVING and health(port, "") == SERVING
        assert readyz(proc)[0] == 200
        assert command("CLIENT", "UNPAUSE") == b"+OK\r\n"
        wait_for(lambda: ratelimit_answers(port), "Redis to answer again")
        wait_for(lambda: health(port, RATELIMIT) == SERVING, "rate limit SERVING again")
    finally:
        client.close()
        assert proc.stop() == 0


@pytest.mark.parametrize("mode", ["allow", "local"])
def test_other_failure_modes_keep_the_rate_limit_service_serving(
    tmp_path: Path, redis_server: RedisServer, mode: str
) -> None:
    cfg = config(tmp_path, redis_server.url)
    cfg["ratelimit"]["failure_mode"] = mode
    proc = SidegateProcess(tmp_path, cfg)
    proc.start()
    try:
        redis_server.stop()

        def seen_down() -> bool:
            rate_limit(proc.grpc_port, "test", [("k", "v")])  # answered per the failure mode
            return components(proc)["redis"]["state"] == "down"

        wait_for(seen_down, "Redis seen down")
        assert health(proc.grpc_port, RATELIMIT) == SERVING
    finally:
        assert proc.stop() == 0
