"""The built wheel, installed into a fresh venv, serves from an empty directory.

What a new user does: ``pip install sidegate`` (not editable), ``cd`` anywhere, ``sidegate
serve``. The embedded default (shipped policies and example rules are package data),
``check-config`` with no file and ``policy test`` with no directory must work there, and the
wheel must install nothing but the ``sidegate`` package at the top level of site-packages.
See wheel_env.py for how the venv borrows its dependencies.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import free_port
from tests.harness import http_request
from tests.packaging import wheel_env


@dataclass
class Installed:
    wheel: Path
    venv: Path
    empty: Path  # a working directory with nothing in it

    def sidegate(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "sidegate"), *args], cwd=self.empty,
            env=wheel_env.clean_env(self.venv), capture_output=True, text=True, timeout=300,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    workdir = tmp_path_factory.mktemp("wheel")
    wheel = wheel_env.build_wheel(workdir)
    venv = wheel_env.make_venv(workdir, wheel)
    empty = workdir / "empty"
    empty.mkdir()
    yield Installed(wheel, venv, empty)
    assert not any(empty.iterdir()), "a command wrote into the working directory"


def test_wheel_installs_only_the_sidegate_namespace(installed: Installed) -> None:
    _, record = wheel_env.wheel_metadata(installed.wheel)
    top_level = {Path(path).parts[0] for path in record}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert top_level - dist_info == {"sidegate"}, top_level
    assert dist_info == {f"{installed.wheel.name.split('-')[0]}-"
                         f"{installed.wheel.name.split('-')[1]}.dist-info"}
    # The installed tree agrees: nothing of ours beside sidegate/ and its dist-info.
    site = wheel_env.site_packages(installed.venv)
    ours = {p.name for p in site.iterdir()} - {"_sidegate_test_dependencies.pth", "__pycache__"}
    assert {n for n in ours if not n.startswith("sidegate")} <= {"_distutils_hack", "pip"}, ours
    # Package data: the shipped policies (with their tests) and example rules.
    for path in ("sidegate/policies/envoy/authz.rego", "sidegate/policies/envoy/authz_test.rego",
                 "sidegate/examples/ratelimit/sidegate.yaml", "sidegate/examples/envoy.yaml",
                 "sidegate/ratelimit/buckets/lua/take.lua"):
        assert path in record, path
    assert not any(p.startswith(("sidegate/tests", "tests/", "bench/")) for p in record)
    with zipfile.ZipFile(installed.wheel) as archive:
        meta = archive.read(next(n for n in archive.namelist() if n.endswith("/METADATA")))
    assert b"License-Expression: Apache-2.0" in meta and b"License-File: LICENSE" in meta
    assert b"Requires-Python: >=3.11" in meta


def test_check_config_without_a_file(installed: Installed) -> None:
    result = installed.sidegate("check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "embedded default: ok\n"


def test_policy_test_without_a_directory(installed: Installed) -> None:
    result = installed.sidegate("policy", "test", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS:" in result.stdout and "FAIL" not in result.stdout
    # The shipped policies, from site-packages, not from a checkout.
    assert str(wheel_env.site_packages(installed.venv)) in result.stdout


def test_policy_eval_prints_only_json_on_stdout(installed: Installed) -> None:
    document = json.dumps({"parsed_path": ["deny"]})
    input_file = installed.empty.parent / "input.json"
    input_file.write_text(document)
    result = installed.sidegate("policy", "eval", "--input", str(input_file))
    assert json.loads(result.stdout)["allowed"] is False  # the whole of stdout is one document


def _check_request(path: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.id = "GET", path, "example", "req-1"
    return request


def test_serve_from_an_empty_directory(installed: Installed) -> None:
    grpc_port, admin_port = free_port(), free_port()
    log = installed.empty.parent / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(installed.venv / "bin" / "sidegate"), "serve",
             "--grpc-address", f"127.0.0.1:{grpc_port}"],
            cwd=installed.empty,
            env={**wheel_env.clean_env(installed.venv),
                 "SIDEGATE_ADMIN_ADDRESS": f"127.0.0.1:{admin_port}"},
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(proc, admin_port, log)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            authz = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert authz.Check(_check_request("/hello"), timeout=10).status.code == 0
            assert authz.Check(_check_request("/deny/x"), timeout=10).status.code == 7
            limit = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
                rls_pb2.RateLimitRequest(
                    domain="sidegate",
                    descriptors=[ratelimit_pb2.RateLimitDescriptor(
                        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(
                            key="generic_key", value="limited")]
                    )],
                ),
                timeout=10,
            )
            assert limit.overall_code == rls_pb2.RateLimitResponse.OK
            assert limit.statuses[0].current_limit.requests_per_unit == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    starting = next(r for r in records if r["event"] == "starting")
    assert starting["config"] == "embedded default"
    assert starting["policy_directory"].startswith(str(wheel_env.site_packages(installed.venv)))
    assert starting["policy_modules"] >= 1
    assert "sidegate" in starting["rule_domains"]


def _wait_ready(proc: subprocess.Popen[bytes], admin_port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sidegate exited {proc.returncode}:\n{log.read_text()}")
        try:
            if http_request(admin_port, "GET", "/readyz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"sidegate not ready:\n{log.read_text()}")
