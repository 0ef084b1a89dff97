"""The ``authz`` section of sidegate's config file, owned by the ext_authz package."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sidegate.extauthz.identity.settings import IdentitySettings
from sidegate.extauthz.request_body import BodyLimits


class _Strict(BaseModel):
    # validate_default runs the path resolver on defaults too; sub-models default to {} so they
    # are validated (with the loader's base_dir context) rather than constructed bare.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's directory (loader passes base_dir)."""
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


class RemoteOpaSettings(_Strict):
    """A running OPA asked over its REST Data API (``POST /v1/data/<path>``)."""

    # OPA's base URL; decisions are POST <url>/v1/data/<path>.
    url: str = Field("http://127.0.0.1:8181", pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    # Per decision; Envoy's own ext_authz timeout defaults to 200 ms, so stay below it.
    timeout: float = Field(0.15, gt=0)
    # Pooled connections to OPA.
    max_connections: int = Field(32, ge=1)


class BodySettings(_Strict):
    """``parsed_body`` for JSON, form, multipart and gRPC bodies Envoy sends
    (``with_request_body``)."""

    # Build parsed_body/truncated_body (opa-envoy-plugin's skip-request-body-parse, inverted).
    parse: bool = True
    # Bodies longer than this are not parsed: parsed_body is null, truncated_body true.
    max_bytes: int = Field(1_048_576, ge=0)
    # Caps on the work one body may cause (bench/body_bench.py); a body over one gets a 400.
    max_parts: int = Field(100, ge=1, le=100_000)
    # application/x-www-form-urlencoded: most fields per body; more is a 400.
    max_fields: int = Field(1000, ge=1, le=1_000_000)
    # JSON: most values (every ',', '[' and '{' counted before parsing); more is a 400.
    max_json_values: int = Field(10_000, ge=1, le=10_000_000)
    # JSON: most containers nested in each other; deeper is a 400.
    max_depth: int = Field(32, ge=1, le=512)
    # A protoset (protoc --descriptor_set_out=FILE --include_imports): the first message of an
    # application/grpc request becomes parsed_body (Envoy must send it with pack_as_bytes).
    proto_descriptor: Path | None = None

    @field_validator("proto_descriptor")
    @classmethod
    def _resolve_proto_descriptor(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @property
    def limits(self) -> BodyLimits:
        return BodyLimits(
            max_bytes=self.max_bytes,
            max_parts=self.max_parts,
            max_fields=self.max_fields,
            max_json_values=self.max_json_values,
            max_depth=self.max_depth,
        )


DEFAULT_SENSITIVE_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
)
DEFAULT_SENSITIVE_QUERY = ("access_token", "api_key", "apikey", "token", "key")


class DecisionLogSettings(_Strict):
    # Log the (masked) input document with each decision; off by default: it is large.
    include_input: bool = False
    # Headers logged only as a hash (credential locations of identity sources are added).
    sensitive_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_SENSITIVE_HEADERS))
    # Query parameters logged as *** (credential locations of identity sources are added).
    sensitive_query_params: list[str] = Field(default_factory=lambda: list(DEFAULT_SENSITIVE_QUERY))


class DecisionCacheSettings(_Strict):
    """Embedded engine: remember decisions per (bundle, path, pruned input digest); used only
    when the policies are deterministic and the input is pruned (docs/policy.md)."""

    # Reuse decisions for equal pruned inputs when the policies are deterministic.
    enabled: bool = True
    # Decisions kept (bounded LRU).
    max_entries: int = Field(10_000, ge=1, le=10_000_000)
    # Seconds a decision is reused; bounded so a cache never masks much of anything.
    ttl_s: float = Field(5.0, gt=0, le=3600)


class PolicySettings(_Strict):
    # embedded: Rego evaluated in process (regopy); remote: a running OPA asked over REST.
    engine: Literal["embedded", "remote"] = "embedded"
    remote: RemoteOpaSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    # The embedded engine's Rego modules and data files, relative to the config file.
    directory: Path = Path("policies")
    # The decision of routes that name none in context_extensions policy.
    default_path: str = "envoy/authz/allow"
    # Decision paths that must exist at load (a typo fails startup instead of denying later).
    # Every rule of the directory is selectable through context_extensions "policy" anyway.
    paths: list[str] = Field(default_factory=list)
    # What an undefined decision, an evaluation error or an ill-typed result becomes.
    on_error: Literal["deny", "unavailable", "grpc_error"] = "deny"
    # opa-envoy-plugin's dry-run: the decision is logged, the request allowed. For all paths,
    # or only for the decision paths listed in dry_run_paths.
    dry_run: bool = False
    # Decision paths in dry-run (see dry_run).
    dry_run_paths: list[str] = Field(default_factory=list)
    # Embedded engine: poll the directory every watch_interval seconds, recompile on change
    # (0 = off; SIGHUP reloads either way).
    watch_interval: float = Field(2.0, ge=0)
    body: BodySettings = Field(default_factory=dict)  # type: ignore[arg-type]
    decision_log: DecisionLogSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    # Embedded engine: set only the input paths the policies reference (setting the input is
    # most of a decision's cost). Off: the whole document, for debugging.
    prune_input: bool = True
    decision_cache: DecisionCacheSettings = Field(default_factory=dict)  # type: ignore[arg-type]

    _resolve_directory = field_validator("directory")(_resolve)

    @property
    def entrypoints(self) -> list[str]:
        return sorted({self.default_path.strip("/"), *(p.strip("/") for p in self.paths)})

    def is_dry_run(self, path: str) -> bool:
        return self.dry_run or path.strip("/") in {p.strip("/") for p in self.dry_run_paths}


class AuthzSettings(_Strict):
    # Serve envoy.service.auth.v3.Authorization (false: leave it out of the process).
    enabled: bool = True
    policy: PolicySettings = Field(default_factory=dict)  # type: ignore[arg-type]
    identity: IdentitySettings = Field(default_factory=dict)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _mask_identity_credentials(self) -> AuthzSettings:
        """The decision log masks every credential location the identity sources read (custom
        headers, cookies, query parameters), not only its own default list."""
        log = self.policy.decision_log
        headers = list(dict.fromkeys([*log.sensitive_headers, *self.identity.credential_headers()]))
        params = list(
            dict.fromkeys([*log.sensitive_query_params, *self.identity.credential_query_params()])
        )
        if headers != log.sensitive_headers or params != log.sensitive_query_params:
            merged = log.model_copy(
                update={"sensitive_headers": headers, "sensitive_query_params": params}
            )
            # frozen models: this is still validation, before anyone sees the instance
            policy = self.policy.model_copy(update={"decision_log": merged})
            object.__setattr__(self, "policy", policy)
        return self
