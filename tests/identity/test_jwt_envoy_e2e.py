"""JWT identity end to end: a real Envoy (examples/envoy.yaml) -> `sidegate serve` (JWT source
with OIDC discovery against an IdP on loopback, shipped policy, example rate-limit rules) ->
echo upstream. Identity headers reach the upstream, spoofed copies do not, bad tokens get a
401 challenge, and the tier in the Check's dynamic metadata selects the rate-limit quota."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.harness import Stack
from tests.identity.conftest import SigningKey, new_key


class ThreadedIdP:
    """Discovery + JWKS over HTTP on loopback, served from a thread (the harness is sync)."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.hits: dict[str, int] = {}
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    doc: dict[str, Any] = {"issuer": idp.issuer, "jwks_uri": idp.issuer + "/jwks"}
                elif self.path == "/jwks":
                    doc = {"keys": [idp.key.jwk()]}
                else:
                    self.send_error(404)
                    return
                idp.hits[self.path] = idp.hits.get(self.path, 0) + 1
                payload = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, subject: str, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "sub": subject, "aud": "api", "iat": now, "exp": now + 600}
        return self.key.sign({**body, **claims})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def threaded_idp() -> Iterator[ThreadedIdP]:
    idp = ThreadedIdP(new_key("RS256", "e2e-1"))
    try:
        yield idp
    finally:
        idp.stop()


def config(idp: ThreadedIdP) -> dict[str, Any]:
    return {
        "authz": {
            "policy": {"directory": str(REPO_ROOT / "policies")},
            "identity": {
                "sources": [
                    {
                        "name": "corp-idp",
                        "type": "jwt",
                        "issuers": [
                            {"issuer": idp.issuer, "discovery": True, "audiences": ["api"]}
                        ],
                    }
                ],
                "upstream_headers": {
                    "x-user-id": "subject",
                    "x-user-roles": "roles",
                    "x-consumer-tier": "tier",
                },
                "realm": "example-api",
            },
        },
        "ratelimit": {"rules_dir": str(REPO_ROOT / "examples" / "ratelimit")},
    }


def test_jwt_identity_through_envoy(tmp_path: Path, threaded_idp: ThreadedIdP) -> None:
    idp = threaded_idp
    with Stack.start(tmp_path, config(idp)) as stack:
        bearer = {"authorization": f"Bearer {idp.token('alice', tier='free', roles=['dev'])}"}

        # valid token: identity headers upstream, the client's x-user-id spoof is gone
        status, _, body = stack.request("GET", "/hello", {**bearer, "x-user-id": "admin"})
        assert status == 200, body
        seen = stack.upstream.last_headers()
        assert seen["x-user-id"] == "alice"
        assert seen["x-consumer-tier"] == "free"
        assert seen["x-user-roles"] == "dev"
        assert seen["authorization"] == bearer["authorization"]

        # a token without roles: a client-sent x-user-roles is removed, not passed on
        plain = {"authorization": f"Bearer {idp.token('carol', tier='premium')}"}
        status, _, _ = stack.request("GET", "/hello", {**plain, "x-user-roles": "admin"})
        assert status == 200
        assert "x-user-roles" not in stack.upstream.last_headers()

        # invalid token: 401 with an RFC 6750 challenge, never reaches the upstream
        seen_before = len(stack.upstream.seen)
        forged = idp.token("alice")[:-4] + "AAAA"
        status, headers, _ = stack.request("GET", "/hello", {"authorization": f"Bearer {forged}"})
        assert status == 401
        challenge = headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="example-api", error="invalid_token"')
        status, headers, _ = stack.request("GET", "/hello")
        assert status == 401
        assert headers["www-authenticate"] == 'Bearer realm="example-api"'
        assert len(stack.upstream.seen) == seen_before

        # the tier in the dynamic metadata picks the quota: free 5/min, premium 20/min
        free = {"authorization": f"Bearer {idp.token('fred', tier='free')}"}
        premium = {"authorization": f"Bearer {idp.token('penny', tier='premium')}"}
        free_codes = [stack.request("GET", "/quota", free)[0] for _ in range(7)]
        premium_codes = [stack.request("GET", "/quota", premium)[0] for _ in range(22)]
        assert free_codes.count(200) == 5 and free_codes[5:] == [429, 429]
        assert premium_codes.count(200) == 20 and premium_codes[20:] == [429, 429]

        logs = stack.sidegate.logs()
        rejected = [r for r in logs if r.get("event") == "identity_rejected"]
        assert [r["code"] for r in rejected] == ["bad_signature"]
        assert forged not in stack.sidegate.output()
        assert idp.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
        metrics = stack.sidegate.metrics()
        assert (
            'sidegate_identity_verifications_total{outcome="rejected",reason="bad_signature",'
            'source="corp-idp"} 1.0' in metrics
        )
