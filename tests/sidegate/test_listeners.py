"""gRPC over TLS / mTLS (certificates re-read on change) and over a Unix socket, through Envoy."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidegate.cli import main
from tests.harness import SidegateProcess, Stack
from tests.sidegate.certs import SERVER_NAME, Authority, Issued, authority

SERVING = health_pb2.HealthCheckResponse.SERVING


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.server_ca = authority(directory, "server-ca")
        self.client_ca = authority(directory, "client-ca")
        self.server = self.server_ca.issue(directory, "server", server=True)
        self.client = self.client_ca.issue(directory, "client", server=False)

    def tls_config(self) -> dict[str, Any]:
        return {"cert_file": str(self.server.cert), "key_file": str(self.server.key),
                "client_ca_file": str(self.client_ca.path)}


def health(port: int, trusted: Authority, client: Issued | None) -> int:
    """One Health.Check on a new connection; the status, or raises grpc.RpcError."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trusted.path.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    options = [("grpc.ssl_target_name_override", SERVER_NAME),
               # A new connection (and handshake) per call: no subchannel shared across channels.
               ("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        return reply.status


def envoy_tls(pki: Pki) -> Any:
    def mutate(cfg: dict[str, Any]) -> None:
        cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "sidegate")
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                         "UpstreamTlsContext",
                "sni": SERVER_NAME,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [{
                        "certificate_chain": {"filename": str(pki.client.cert)},
                        "private_key": {"filename": str(pki.client.key)},
                    }],
                    "validation_context": {
                        "trusted_ca": {"filename": str(pki.server_ca.path)},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": SERVER_NAME}}
                        ],
                    },
                },
            },
        }

    return mutate


def test_mtls_through_envoy(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    config = {"server": {"tls": pki.tls_config()}}
    with Stack.start(tmp_path, config, envoy_mutate=envoy_tls(pki)) as stack:
        assert stack.request("GET", "/hello")[0] == 200
        assert stack.request("GET", "/deny/x")[0] == 403
        assert stack.envoy.stats("ssl")["cluster.sidegate.ssl.handshake"] >= 1

        port = stack.sidegate.grpc_port
        assert health(port, pki.server_ca, pki.client) == SERVING
        # No client certificate, or one from another CA: the handshake is refused.
        with pytest.raises(grpc.RpcError) as refused:
            health(port, pki.server_ca, None)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        stranger = authority(tmp_path / "other", "stranger-ca").issue(
            tmp_path / "other", "c", server=False
        )
        with pytest.raises(grpc.RpcError):
            health(port, pki.server_ca, stranger)


def test_certificates_reload_on_change(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    sidegate = SidegateProcess(tmp_path, {"server": {"tls": pki.tls_config()}})
    sidegate.start()
    try:
        port = sidegate.grpc_port
        assert health(port, pki.server_ca, pki.client) == SERVING

        # A renewed server certificate from a new CA, written over the same paths.
        renewed_ca = authority(tmp_path / "renewed", "renewed-ca")
        renewed = renewed_ca.issue(tmp_path / "renewed", "server", server=True)
        shutil.copyfile(renewed.key, pki.server.key)
        shutil.copyfile(renewed.cert, pki.server.cert)
        assert health(port, renewed_ca, pki.client) == SERVING
        with pytest.raises(grpc.RpcError):
            health(port, pki.server_ca, pki.client)  # the old certificate is gone

        # A key that does not match the certificate: refused, the renewed pair keeps serving.
        other = renewed_ca.issue(tmp_path / "mismatch", "server", server=True)
        shutil.copyfile(other.key, pki.server.key)
        assert health(port, renewed_ca, pki.client) == SERVING
        metrics = sidegate.metrics()
        assert 'sidegate_tls_reloads_total{result="success"} 1.0' in metrics
        assert 'sidegate_tls_reloads_total{result="error"} 1.0' in metrics
        assert any(r.get("event") == "tls_reload_failed" for r in sidegate.logs())
    finally:
        assert sidegate.stop() == 0


def test_bad_certificate_files_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki(tmp_path)
    other = pki.server_ca.issue(tmp_path / "x", "other", server=True)
    path = tmp_path / "s.yaml"
    path.write_text(
        "server:\n  grpc_address: 127.0.0.1:0\n  admin_address: 127.0.0.1:0\n"
        f"  tls: {{cert_file: server.pem, key_file: {other.key}}}\n"
        "authz: {enabled: false}\nratelimit: {enabled: false}\n"
    )
    assert main(["check-config", str(path)]) == 1
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"sidegate: {other.key}: the private key does not belong to "
                   f"{tmp_path / 'server.pem'}"] * 2
    path.write_text("server:\n  tls: {cert_file: missing.pem, key_file: k.pem}\n")
    assert main(["check-config", str(path)]) == 1
    assert "missing.pem: cannot read the certificate" in capsys.readouterr().err


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: a Unix socket path is limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="sg-uds-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def envoy_pipe(socket: Path) -> Any:
    def mutate(cfg: dict[str, Any]) -> None:
        cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "sidegate")
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"] = {"pipe": {"path": str(socket)}}

    return mutate


def test_unix_socket_through_envoy(tmp_path: Path, socket_dir: Path) -> None:
    socket = socket_dir / "grpc.sock"
    # The environment variable wins over the config file's TCP address the harness writes.
    env = {"SIDEGATE_GRPC_ADDRESS": f"unix://{socket}"}
    with Stack.start(tmp_path, {}, envoy_mutate=envoy_pipe(socket), env=env) as stack:
        assert socket.is_socket()
        assert stack.request("GET", "/hello")[0] == 200
        assert stack.request("GET", "/deny/x")[0] == 403
        assert [stack.request("GET", "/limited")[0] for _ in range(4)] == [200, 200, 200, 429]
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
            assert reply.status == SERVING
        serving = next(r for r in stack.sidegate.logs() if r.get("event") == "serving")
        assert serving["grpc_address"] == f"unix://{socket}"


def test_unix_address_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("server:\n  grpc_address: unix:relative.sock\n")
    assert main(["check-config", str(path)]) == 1
    assert "unix:///absolute/path" in capsys.readouterr().err
