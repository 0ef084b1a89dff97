"""examples/mixed_identity end to end: a real Envoy -> ``sidegate serve`` with the example's
config (its IdP URLs pointed at loopback servers) -> echo upstream. One route accepts an API
key, a JWT (JWKS over HTTP) and an opaque token (Authlib's RFC 7662 endpoint) side by side."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidegate.cli import main
from tests.conftest import REPO_ROOT
from tests.harness import Stack
from tests.identity.conftest import new_key
from tests.identity.introspection_server import CLIENT_ID, CLIENT_SECRET, IntrospectionServer
from tests.identity.jwt_helpers import b64url
from tests.identity.test_jwt_envoy_e2e import ThreadedIdP

EXAMPLE = REPO_ROOT / "examples" / "mixed_identity" / "sidegate.yaml"
FREE_KEY = "sg_demo_free_0123456789abcdef"  # published demo key of examples/api-keys.yaml
SECRET_ENV = "SIDEGATE_INTROSPECTION_SECRET"


@pytest.fixture
def jwks_idp() -> Iterator[ThreadedIdP]:
    idp = ThreadedIdP(new_key("RS256", "mixed-1"))
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture
def introspection() -> Iterator[IntrospectionServer]:
    server = IntrospectionServer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def example_config(idp: ThreadedIdP, server: IntrospectionServer) -> dict[str, Any]:
    """The example, with absolute paths (the harness moves it) and loopback IdP URLs."""
    config = yaml.safe_load(EXAMPLE.read_text())
    base = EXAMPLE.parent
    config["authz"]["policy"]["directory"] = str((base / "../../policies").resolve())
    config["ratelimit"]["rules_dir"] = str((base / "../ratelimit").resolve())
    keys, jwt_source, opaque = config["authz"]["identity"]["sources"]
    keys["store"]["path"] = str((base / keys["store"]["path"]).resolve())
    issuer = jwt_source["issuers"][0]
    issuer["issuer"], issuer["jwks_uri"] = idp.issuer, idp.issuer + "/jwks"
    opaque["endpoint"] = server.url
    assert opaque["client_id"] == CLIENT_ID and opaque["client_secret_env"] == SECRET_ENV
    return config


def test_example_checks_out(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv(SECRET_ENV, "example-secret")
    assert main(["check-config", str(EXAMPLE)]) == 0
    captured = capsys.readouterr()
    assert "ok" in captured.out and "warning" not in captured.err


def test_keys_jwts_and_opaque_tokens_on_one_route(
    tmp_path: Path, jwks_idp: ThreadedIdP, introspection: IntrospectionServer
) -> None:
    server = introspection
    server.issue("opaque-premium-0001", extra={"plan": "premium"})
    server.issue("opaque-revoked-0002", revoked=True)
    config = example_config(jwks_idp, server)
    with Stack.start(tmp_path, config, env={SECRET_ENV: CLIENT_SECRET}) as stack:

        def call(headers: dict[str, str]) -> tuple[int, dict[str, str]]:
            status, _, body = stack.request("GET", "/hello", headers)
            return status, (json.loads(body)["headers"] if status == 200 else {})

        status, seen = call({"x-api-key": FREE_KEY})
        assert status == 200
        assert (seen["x-auth-source"], seen["x-user-id"]) == ("partner-keys", "demo-free")

        jwt = jwks_idp.token("svc-1", aud="orders-api", client_id="billing", tier="premium")
        status, seen = call({"authorization": f"Bearer {jwt}"})
        assert status == 200
        assert (seen["x-auth-source"], seen["x-user-id"]) == ("corp-jwt", "svc-1")
        assert server.hits == 0

        status, seen = call({"authorization": "Bearer opaque-premium-0001"})
        assert status == 200
        assert (seen["x-auth-source"], seen["x-consumer-tier"]) == ("corp-opaque", "premium")
        assert server.hits == 1

        status, headers, _ = stack.request(
            "GET", "/hello", {"authorization": "Bearer opaque-revoked-0002"}
        )
        assert status == 401 and headers["www-authenticate"].startswith("Bearer ")
        assert server.hits == 2

        # a tampered JWT: 401 from the JWT source, never offered to introspection
        header, _, signature = jwt.split(".")
        forged = b64url(json.dumps({"iss": jwks_idp.issuer, "sub": "admin"}).encode())
        status, headers, _ = stack.request(
            "GET", "/hello", {"authorization": f"Bearer {header}.{forged}.{signature}"}
        )
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
        assert server.hits == 2

        rejected = [r for r in stack.sidegate.logs() if r.get("event") == "identity_rejected"]
        assert [(r["source"], r["code"]) for r in rejected] == [
            ("corp-opaque", "inactive"),
            ("corp-jwt", "bad_signature"),
        ]
        output = stack.sidegate.output()
        for secret in (FREE_KEY, "opaque-premium-0001", jwt, CLIENT_SECRET):
            assert secret not in output
