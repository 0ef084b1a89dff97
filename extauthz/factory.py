"""Composes the Check service from its settings: the one place that picks implementations."""

from __future__ import annotations

from sidegate.extauthz.grpc_body import ProtosetSource
from sidegate.extauthz.identity.base import AnonymousAuthenticator, Authenticator
from sidegate.extauthz.identity.pipeline import IdentityPipeline
from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.extauthz.policy.engine import PolicyEngine
from sidegate.extauthz.policy.remote_opa import RemoteOpaEngine
from sidegate.extauthz.service import AuthzService
from sidegate.extauthz.settings import AuthzSettings, PolicySettings


def build_engine(settings: PolicySettings) -> PolicyEngine:
    if settings.engine == "remote":
        return RemoteOpaEngine(
            settings.remote.url,
            timeout=settings.remote.timeout,
            max_connections=settings.remote.max_connections,
        )
    cache = settings.decision_cache
    return EmbeddedEngine(
        settings.directory,
        settings.entrypoints,
        watch_interval=settings.watch_interval,
        # Without pruning every input carries request ids and times: no key would repeat.
        cache_decisions=cache.enabled and settings.prune_input,
        cache_max_entries=cache.max_entries,
        cache_ttl_s=cache.ttl_s,
    )


def build_authenticator(settings: AuthzSettings) -> Authenticator:
    """The identity pipeline when sources are configured; otherwise everyone is anonymous.

    Static keys and key files are loaded here (a bad one raises, naming the issuer and key);
    remote keys are fetched by ``start()``.
    """
    if settings.identity.configured:
        return IdentityPipeline(settings.identity)
    # no source, yet client-sent copies of the identity headers must never reach upstream
    return AnonymousAuthenticator(settings.identity.upstream_headers)


def build_grpc_bodies(settings: AuthzSettings) -> ProtosetSource | None:
    """The protoset that decodes gRPC request messages, when one is configured (read here)."""
    path = settings.policy.body.proto_descriptor
    return ProtosetSource(path) if path is not None and settings.policy.body.parse else None


def build_authz_service(settings: AuthzSettings) -> AuthzService:
    """No network happens here; ``await service.start()`` connects and loads."""
    return AuthzService(
        settings,
        build_engine(settings.policy),
        build_authenticator(settings),
        build_grpc_bodies(settings),
    )


def validate(settings: AuthzSettings) -> None:
    """Everything ``sidegate check-config`` can verify offline (policies compile, files exist).

    Raises an exception whose message names the file and the problem.
    """
    engine = build_engine(settings.policy)
    if isinstance(engine, EmbeddedEngine):
        engine.load()
    # loads static keys and key files; network-free (remote keys are fetched on start)
    build_authenticator(settings)
    build_grpc_bodies(settings)
