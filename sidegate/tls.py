"""gRPC server credentials from PEM files that are re-read when they change.

gRPC's dynamic credentials call a fetcher at every new connection's handshake; the fetcher
compares the files' stat signatures (a few microseconds) and rebuilds the configuration only when
one changed, so a renewed certificate (cert-manager, a Kubernetes Secret update) takes effect on
the next connection without a restart or a watcher thread. A broken or half-written pair is
refused, logged and counted, and the previous pair keeps serving; it is tried again when the files
change again.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import Counter

from sidegate.settings import TlsSettings

log = structlog.get_logger("sidegate.tls")

TLS_RELOADS = Counter(
    "sidegate_tls_reloads_total", "Certificate files re-read after a change, by result", ["result"]
)


class TlsFileError(Exception):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_configuration(settings: TlsSettings) -> grpc.ServerCertificateConfiguration:
    """Read and check the files: parseable PEM, and the key belongs to the certificate."""
    chain = _read(settings.cert_file, "certificate")
    key = _read(settings.key_file, "private key")
    try:
        certificate = x509.load_pem_x509_certificates(chain)[0]
    except ValueError as exc:
        raise TlsFileError(f"{settings.cert_file}: not a PEM certificate: {exc}") from None
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        # The message of cryptography's error never contains key material.
        raise TlsFileError(
            f"{settings.key_file}: not an unencrypted PEM private key: {exc}"
        ) from None
    if _public_der(private_key.public_key()) != _public_der(certificate.public_key()):
        raise TlsFileError(
            f"{settings.key_file}: the private key does not belong to {settings.cert_file}"
        )
    roots = None
    if settings.client_ca_file is not None:
        roots = _read(settings.client_ca_file, "client CA bundle")
        try:
            x509.load_pem_x509_certificates(roots)
        except ValueError as exc:
            raise TlsFileError(
                f"{settings.client_ca_file}: not a PEM certificate bundle: {exc}"
            ) from None
    return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)


class ReloadingCertificates:
    """The fetcher gRPC calls per handshake: a new configuration when the files changed."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._signature = self._stat()
        self.initial = load_configuration(settings)

    def _paths(self) -> list[Path]:
        paths = [self.settings.cert_file, self.settings.key_file]
        if self.settings.client_ca_file is not None:
            paths.append(self.settings.client_ca_file)
        return paths

    def _stat(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [path.stat() for path in self._paths()]
        except OSError:
            return None  # mid-replacement (a Secret's symlink swap): try at the next handshake
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        signature = self._stat()
        if signature is None or signature == self._signature:
            return None
        with self._lock:
            if signature == self._signature:
                return None
            self._signature = signature
            try:
                configuration = load_configuration(self.settings)
            except TlsFileError as exc:
                TLS_RELOADS.labels("error").inc()
                log.error("tls_reload_failed", reason=str(exc), kept="previous certificate")
                return None
        TLS_RELOADS.labels("success").inc()
        log.info("tls_reloaded", cert_file=str(self.settings.cert_file))
        return configuration


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials:
    fetcher = ReloadingCertificates(settings)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial,
        fetcher,
        require_client_authentication=(
            settings.client_ca_file is not None and settings.require_client_cert
        ),
    )
