"""Identity headers and credentials (issue 9): spoofed identity headers are stripped even with no
identity source, the API-key service is not the client's Host by default, every configured
credential location is masked in the decision log, and an issuer without audiences warns."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from sidegate.extauthz.factory import build_authenticator, build_authz_service
from sidegate.extauthz.identity.api_keys.settings import ApiKeySourceSettings
from sidegate.extauthz.identity.base import ANONYMOUS_IDENTITY, AuthnFailure, failure_code
from sidegate.extauthz.identity.jwt import JwtVerifier
from sidegate.extauthz.identity.jwt_settings import JwtSourceSettings
from sidegate.extauthz.policy.decision_log import mask_input
from sidegate.extauthz.request_view import RequestView
from sidegate.extauthz.settings import AuthzSettings
from tests.conftest import REPO_ROOT
from tests.identity.conftest import check_request
from tests.identity.jwt_helpers import status_of
from tests.identity.test_api_keys import MemoryStore, make_view, new_key, record, verifier


def settings(data: dict[str, Any]) -> AuthzSettings:
    return AuthzSettings.model_validate(data, context={"base_dir": REPO_ROOT})


# --- identity headers without any identity source ------------------------------------------------


async def test_identity_headers_are_stripped_without_identity_sources() -> None:
    config = settings(
        {"identity": {"upstream_headers": {"X-User-Id": "subject", "x-tier": "tier"}}}
    )
    service = build_authz_service(config)
    await service.start()
    try:
        request = check_request(headers={"x-user-id": "admin", "x-tier": "gold"})
        response = await service.check(request)
        assert status_of(response) == 200
        assert set(response.ok_response.headers_to_remove) >= {"x-user-id", "x-tier"}
        assert not [h for h in response.ok_response.headers if h.header.key == "x-user-id"]
    finally:
        await service.close()


def test_anonymous_authenticator_strips_configured_headers() -> None:
    config = settings({"identity": {"upstream_headers": {"x-user-id": "subject"}}})
    authenticator = build_authenticator(config)
    view = RequestView.from_check_request(check_request(headers={"x-user-id": "admin"}))
    mutations = authenticator.upstream_mutations(ANONYMOUS_IDENTITY, view)
    assert mutations.headers_to_remove == ["x-user-id"]
    assert mutations.headers == []


# --- API key services and the Host header -------------------------------------------------------


async def test_api_key_service_is_not_taken_from_the_clients_host_by_default() -> None:
    key = new_key()
    v = verifier(MemoryStore(record(key, services=["billing"])))
    # behind a wildcard virtual host the client picks the Host: it must not pick the service
    with pytest.raises(AuthnFailure) as info:
        await v.verify(key, make_view(host="billing"))
    assert failure_code(info.value) == "wrong_service"
    assert "names none" in info.value.reason
    # the route's context extension is the authority
    await v.verify(key, make_view(host="anything", context_extensions={"service": "billing"}))


async def test_unrestricted_keys_work_on_routes_without_a_service() -> None:
    key = new_key()
    v = verifier(MemoryStore(record(key)))
    assert (await v.verify(key, make_view(host="whatever"))).consumer == "acme"


async def test_service_from_authority_is_opt_in_through_the_settings(tmp_path: Any) -> None:
    from sidegate.extauthz.identity.api_keys.factory import build_api_key_verifier
    from sidegate.extauthz.identity.api_keys.file_store import write_key_file

    key = new_key()
    path = tmp_path / "keys.yaml"
    write_key_file(path, [record(key, services=["api.example.com"])])
    base = {"name": "keys", "type": "api_key", "store": {"type": "file", "path": str(path)}}
    strict = build_api_key_verifier(ApiKeySourceSettings.model_validate(base))
    with pytest.raises(AuthnFailure):
        await strict.verify(key, make_view(host="api.example.com"))
    opted = build_api_key_verifier(
        ApiKeySourceSettings.model_validate({**base, "service_from_authority": True})
    )
    assert (await opted.verify(key, make_view(host="api.example.com:8443"))).consumer == "acme"


# --- masking in the decision log ----------------------------------------------------------------


def test_configured_credential_locations_are_masked_in_the_decision_log() -> None:
    config = settings(
        {
            "policy": {"decision_log": {"include_input": True}},
            "identity": {
                "sources": [
                    {
                        "name": "idp",
                        "type": "jwt",
                        "credential": {"header": "X-Auth-Token"},
                        "issuers": [{"issuer": "https://i.example", "jwks_uri": "https://i/j"}],
                    },
                    {
                        "name": "keys",
                        "type": "api_key",
                        "credential": {"header": "x-client-key"},
                        "also_accept": [{"query": "ck"}, {"cookie": "session"}],
                        "store": {"type": "redis"},
                    },
                ]
            },
        }
    )
    log = config.policy.decision_log
    document = {
        "attributes": {
            "request": {
                "http": {
                    "headers": {
                        "x-auth-token": "secret-jwt",
                        "x-client-key": "secret-key",
                        "authorization": "Bearer x",
                        "accept": "text/html",
                    },
                    "path": "/a?ck=secret",
                }
            }
        },
        "parsed_query": {"ck": ["secret"], "page": ["2"]},
    }
    masked = mask_input(document, log.sensitive_headers, log.sensitive_query_params)
    headers = masked["attributes"]["request"]["http"]["headers"]
    assert headers["x-auth-token"].startswith("sha256:")
    assert headers["x-client-key"].startswith("sha256:")
    assert headers["accept"] == "text/html"
    assert masked["parsed_query"] == {"ck": ["***"], "page": ["2"]}
    assert "secret" not in repr(masked)


def test_cookie_credentials_mask_the_cookie_header_even_when_the_list_was_narrowed() -> None:
    config = settings(
        {
            "policy": {"decision_log": {"sensitive_headers": ["authorization"]}},
            "identity": {
                "sources": [
                    {
                        "name": "keys",
                        "type": "api_key",
                        "credential": {"cookie": "session"},
                        "store": {"type": "redis"},
                    }
                ]
            },
        }
    )
    assert config.policy.decision_log.sensitive_headers == ["authorization", "cookie"]


# --- RFC 8725 §3.9 ------------------------------------------------------------------------------


def test_issuer_without_audiences_warns_at_load() -> None:
    source = {
        "name": "idp",
        "type": "jwt",
        "issuers": [
            {"issuer": "https://a.example", "jwks_uri": "https://a.example/jwks"},
            {
                "issuer": "https://b.example",
                "jwks_uri": "https://b.example/jwks",
                "audiences": ["api"],
            },
        ],
    }
    with structlog.testing.capture_logs() as logs:
        JwtVerifier(JwtSourceSettings.model_validate(source))
    warnings = [e for e in logs if e["event"] == "jwt_issuer_without_audiences"]
    assert [w["issuer"] for w in warnings] == ["https://a.example"]
    assert warnings[0]["log_level"] == "warning"


# --- the Redis key store and the call's deadline ------------------------------------------------


async def test_redis_key_lookup_waits_only_the_calls_remaining_time() -> None:
    import asyncio

    from sidegate.common import deadline
    from sidegate.extauthz.identity.api_keys.redis_store import RedisKeyStore
    from sidegate.extauthz.identity.api_keys.store import KeyStoreUnavailable

    class HangingRedis:
        """Stands in for a Redis that accepted the connection and never answers."""

        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def hgetall(self, key: str) -> dict[str, str]:
            await self.release.wait()
            return {}

    # the socket timeout is long: only the gRPC call's deadline can end the wait in time
    store = RedisKeyStore("redis://127.0.0.1:1/0", timeout=30.0)
    hanging = HangingRedis()
    store._client = hanging  # type: ignore[assignment]
    try:
        with deadline.within_call(0.1), pytest.raises(KeyStoreUnavailable, match="call's time"):
            await asyncio.wait_for(store.lookup("a" * 64), 20.0)
    finally:
        hanging.release.set()
        store._client = None
