"""The ``server`` section of the config file and the root model composing every section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sidegate.extauthz.settings import AuthzSettings
from sidegate.ratelimit.settings import RateLimitSettings
from sidegate.tracing_setup import TracingSettings


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9191")
    return value


UNIX_PREFIX = "unix://"


def _check_grpc_address(value: str) -> str:
    """host:port, or a Unix domain socket as unix:///absolute/path (gRPC's own syntax)."""
    if value.startswith("unix:"):
        if not value.startswith(UNIX_PREFIX + "/") or len(value) <= len(UNIX_PREFIX) + 1:
            raise ValueError("a Unix socket address must be unix:///absolute/path")
        return value
    try:
        return _check_address(value)
    except ValueError:
        raise ValueError(
            "must be host:port (e.g. 127.0.0.1:9191) or unix:///absolute/path"
        ) from None


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths are relative to the config file's directory (loader passes base_dir)."""
    base = (info.context or {}).get("base_dir")
    if value is not None and base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


class TlsSettings(BaseModel):
    """gRPC over TLS. The PEM files are re-read when they change (checked at each new
    connection), so a renewed certificate needs no restart; see sidegate/tls.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The server certificate chain (PEM), re-read when it changes.
    cert_file: Path
    # The server's private key (PEM, unencrypted), re-read when it changes.
    key_file: Path
    # CA bundle that client certificates must chain to; set it to turn on mTLS.
    client_ca_file: Path | None = None
    # With client_ca_file: refuse clients without a certificate (false: verify one if sent).
    require_client_cert: bool = True

    _paths = field_validator("cert_file", "key_file", "client_ca_file")(_resolve_path)


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # ext_authz, rate limit, gRPC health and reflection: host:port.
    grpc_address: str = "127.0.0.1:9191"
    # Plain HTTP: /metrics, /healthz, /readyz, /debug/* (host:port; loopback by default).
    admin_address: str = "127.0.0.1:9192"
    # grpc.aio won behind Envoy with realistic work per call (bench/README.md); "threads" keeps
    # the thread-pool server available for re-measuring on other hosts.
    model: Literal["aio", "threads"] = "aio"
    # Worker threads of the threads model.
    threads: int = Field(default=16, ge=1, le=256)
    # The event loop of each serving process: "auto" is uvloop where it is installed (a
    # dependency except on Windows), else asyncio's own; "uvloop" refuses to start without it.
    # A null grpc.aio service took 10-20 % less CPU per call on uvloop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # On SIGTERM: stop accepting, let in-flight calls finish for at most this long, exit 0.
    grace_period_s: float = Field(default=10.0, gt=0, le=300)
    # On SIGTERM, keep answering until calls stop arriving for this long (bounded by half the
    # grace period), then stop and let in-flight calls finish.
    drain_quiet_period_s: float = Field(default=0.5, ge=0, le=30)
    # gRPC server reflection (v1 and v1alpha, for grpcurl).
    reflection: bool = True
    # Lowest level logged; logs are JSON lines on stdout.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Share of the allowed decision lines (Check allowed, ShouldRateLimit OK) that are logged;
    # denials, over-limit answers and errors always are. Lines carry ``sample_rate`` when < 1.
    log_allowed_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # Serving processes (pre-forked, SO_REUSEPORT on grpc_address, one event loop each). With
    # N > 1 rate-limit buckets must be shared: the Redis backend, not memory (config refuses).
    workers: int = Field(default=1, ge=1, le=64)
    # Largest gRPC message accepted (CheckRequests carry bodies sent with with_request_body).
    max_receive_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Environment variable holding the bearer token the admin port's /debug/* endpoints require
    # when admin_address is not a loopback address (without one they are not served there).
    admin_token_env: str | None = None
    # gRPC over TLS (optionally mutual); absent: plaintext, for loopback and Unix sockets.
    tls: TlsSettings | None = None

    _grpc = field_validator("grpc_address")(_check_grpc_address)
    _admin = field_validator("admin_address")(_check_address)


class SidegateConfig(BaseModel):
    # Sections default to {} and are validated, so their relative paths resolve against the
    # config file's directory even when a section is left out.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    server: ServerSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    authz: AuthzSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    ratelimit: RateLimitSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    tracing: TracingSettings = Field(default_factory=dict)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _workers_share_buckets(self) -> SidegateConfig:
        # Each worker process would keep its own in-memory buckets: N workers would admit up
        # to N times every quota. Only Redis shares buckets between processes.
        if (self.server.workers > 1 and self.ratelimit.enabled
                and self.ratelimit.backend == "memory"):
            raise ValueError(
                f"server.workers: {self.server.workers} needs ratelimit.backend: redis "
                "(in-memory buckets are per process, so quotas would multiply by the number "
                "of workers); use workers: 1 or the redis backend"
            )
        return self
