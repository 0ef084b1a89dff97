"""``sidegate init DIR`` writes a deployment that runs as written: sidegate + a real Envoy.

Only the port numbers are changed for the test (other tests run in parallel on this machine):
sidegate's through its ``--grpc-address``/``--admin-address`` flags, Envoy's in a copy of
DIR/envoy.yaml. Everything else (config, policies, rules, key file, Envoy's filters) is used
unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidegate.cli import main
from sidegate.resources import shipped_examples, shipped_policies
from tests.conftest import free_port
from tests.harness import EchoUpstream, EnvoyProcess, http_request
from tests.packaging.test_wheel import _wait_ready


def init(directory: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "sidegate", "init", str(directory)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    keys = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert set(keys) == {"free", "premium"}
    assert all(err.startswith("sidegate: ") for err in result.stderr.splitlines())
    return keys


def test_init_writes_the_shipped_files(tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    keys = init(target)
    shipped = sorted(p.relative_to(shipped_policies()) for p in shipped_policies().rglob("*.rego"))
    written = sorted(p.relative_to(target / "policies") for p in (target / "policies").rglob("*"))
    assert [p for p in written if p.suffix == ".rego"] == shipped
    assert any(p.name.endswith("_test.rego") for p in written)
    assert (target / "envoy.yaml").read_text() == (shipped_examples() / "envoy.yaml").read_text()
    key_file = (target / "api-keys.yaml").read_text()
    for key in keys.values():
        assert key not in key_file  # digests only
    assert "sg_demo_" not in key_file  # never the keys published in the examples
    assert (target / "api-keys.yaml").stat().st_mode & 0o077 == 0
    assert main(["check-config", str(target / "sidegate.yaml")]) == 0


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(tmp_path)
    before = (tmp_path / "api-keys.yaml").read_text()
    assert main(["init", str(tmp_path)]) == 1
    assert "would overwrite" in capsys.readouterr().err
    assert (tmp_path / "api-keys.yaml").read_text() == before
    assert main(["init", "--force", str(tmp_path)]) == 0
    assert (tmp_path / "api-keys.yaml").read_text() != before


def test_init_policy_tests_pass(tmp_path: Path) -> None:
    init(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "sidegate", "policy", "test", "-v"], cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{tmp_path}/policies" in result.stdout or "policies/" in result.stdout


def test_init_deployment_through_envoy(tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    keys = init(target)
    grpc_port, admin_port = free_port(), free_port()
    log = tmp_path / "sidegate.log"
    upstream = EchoUpstream()
    upstream.start()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidegate", "serve", "--config", str(target / "sidegate.yaml"),
             "--grpc-address", f"127.0.0.1:{grpc_port}",
             "--admin-address", f"127.0.0.1:{admin_port}"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )
    envoy = None
    try:
        _wait_ready(proc, admin_port, log)
        envoy = EnvoyProcess(tmp_path, grpc_port, upstream.port, source=target / "envoy.yaml")
        envoy.start()

        def get(path: str, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
            return http_request(envoy.port, "GET", path, {"x-api-key": key} if key else {})

        status, _, body = get("/hello", keys["free"])
        assert status == 200, body
        seen = json.loads(body)["headers"]
        assert seen["x-user-id"] == "demo-free" and seen["x-consumer-tier"] == "free"
        assert get("/hello")[0] == 401
        assert get("/hello", "sg_demo_free_0123456789abcdef")[0] == 401  # published demo key
        assert get("/admin/panel", keys["free"])[0] == 403
        # Tier free: 5 a minute per consumer; the first /hello used one (a request refused by
        # ext_authz never reaches the rate-limit filter).
        assert [get("/hello", keys["free"])[0] for _ in range(5)] == [200] * 4 + [429]
        assert [get("/hello", keys["premium"])[0] for _ in range(6)] == [200] * 6
    finally:
        if envoy is not None:
            envoy.stop()
        proc.terminate()
        code = proc.wait(60)
        upstream.stop()
    assert code == 0, log.read_text()
    starting = next(json.loads(line) for line in log.read_text().splitlines()
                    if line.startswith("{") and '"starting"' in line)
    assert starting["config"] == str(target / "sidegate.yaml")
    assert starting["identity_sources"] == [{"name": "demo-keys", "type": "api_key", "keys": 2}]
