"""Issue 9 through the front door: a real Envoy (examples/envoy.yaml, ext_authz timeout 1 s) ->
`sidegate serve` -> echo upstream.

- A token with a new kid while the IdP hangs: sidegate answers 503 itself, within the call's
  deadline, before Envoy's own timeout (Envoy counts a *denial*, not an ext_authz error).
- No identity source, only `upstream_headers`: a client's spoofed `x-user-id` never reaches
  the upstream.
"""

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


class HangableIdP:
    """Discovery + JWKS on loopback from a thread; after ``hang()`` the JWKS never answers."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.hanging = threading.Event()
        self.released = threading.Event()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    doc: dict[str, Any] = {"issuer": idp.issuer, "jwks_uri": idp.issuer + "/jwks"}
                elif self.path == "/jwks":
                    if idp.hanging.is_set():
                        idp.released.wait(30)
                    doc = {"keys": [k.jwk() for k in idp.keys]}
                else:
                    self.send_error(404)
                    return
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

    def token(self, key: SigningKey, subject: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": "api", "iat": now, "exp": now + 600}
        return key.sign(claims)

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[HangableIdP]:
    server = HangableIdP([new_key("RS256", "e2e-old")])
    try:
        yield server
    finally:
        server.stop()


def policy() -> dict[str, Any]:
    return {"directory": str(REPO_ROOT / "policies")}


def test_new_kid_while_the_idp_hangs_is_sidegates_503_before_envoys_timeout(
    tmp_path: Path, idp: HangableIdP
) -> None:
    config = {
        "authz": {
            "policy": policy(),
            "identity": {
                "sources": [
                    {
                        "name": "corp-idp",
                        "type": "jwt",
                        "token_cache": False,
                        "issuers": [
                            {
                                "issuer": idp.issuer,
                                "discovery": True,
                                "audiences": ["api"],
                                # the refetch may wait 20 s; Envoy gives the Check 1 s
                                "jwks": {"cooldown_seconds": 0, "timeout_seconds": 20},
                            }
                        ],
                    }
                ]
            },
        }
    }
    old_key = idp.keys[0]
    with Stack.start(tmp_path, config) as stack:
        ok = {"authorization": f"Bearer {idp.token(old_key, 'alice')}"}
        assert stack.request("GET", "/hello", ok)[0] == 200

        rotated = new_key("RS256", "e2e-new")
        idp.keys.append(rotated)
        idp.hanging.set()
        new = {"authorization": f"Bearer {idp.token(rotated, 'bob')}"}
        status, headers, body = stack.request("GET", "/hello", new)
        assert status == 503, body
        assert "www-authenticate" not in headers

        stats = stack.envoy.stats("ext_authz")
        # sidegate's own deliberate answer (a denial), not Envoy giving up on the call
        assert stats.get("http.ingress.ext_authz.denied", 0) == 1, stats
        assert stats.get("http.ingress.ext_authz.error", 0) == 0, stats
        checks = [r for r in stack.sidegate.logs() if r.get("event") == "check"]
        assert checks[-1]["decision"] == "unavailable"
        assert "JWKS" in checks[-1]["reason"]

        # the known key keeps working while the IdP hangs
        assert stack.request("GET", "/hello", ok)[0] == 200
        idp.released.set()


def test_spoofed_identity_headers_are_stripped_without_identity_sources(tmp_path: Path) -> None:
    config = {
        "authz": {
            "policy": policy(),
            "identity": {"upstream_headers": {"x-user-id": "subject", "x-consumer-tier": "tier"}},
        }
    }
    with Stack.start(tmp_path, config) as stack:
        spoofed = {"x-user-id": "admin", "x-consumer-tier": "enterprise", "x-other": "kept"}
        status, _, body = stack.request("GET", "/hello", spoofed)
        assert status == 200, body
        seen = stack.upstream.last_headers()
        assert "x-user-id" not in seen
        assert "x-consumer-tier" not in seen
        assert seen["x-other"] == "kept"
