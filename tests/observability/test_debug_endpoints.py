"""The admin port's /debug/* endpoints: what is loaded, from a running ``sidegate serve``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidegate.debug import debug_token, is_loopback
from tests.conftest import REPO_ROOT
from tests.harness import SidegateProcess, http_request

SECRET_KEY = "k" * 48


def get(process: SidegateProcess, path: str, headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = http_request(process.admin_port, "GET", path, headers)
    return status, json.loads(body)


def test_debug_endpoints_show_what_is_loaded_and_never_a_secret(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys.yaml"
    keys.write_text((REPO_ROOT / "examples" / "api-keys.yaml").read_text())
    config = {
        "authz": {
            "identity": {
                "sources": [
                    {
                        "name": "keys",
                        "type": "api_key",
                        "store": {"type": "file", "path": str(keys)},
                    },
                    {
                        "name": "hs",
                        "type": "jwt",
                        "credential": {"header": "x-jwt"},
                        "issuers": [
                            {
                                "issuer": "https://issuer.example",
                                "algorithms": ["HS256"],
                                "audiences": ["api"],
                                "keys": [{"kid": "k1", "secret": SECRET_KEY}],
                            }
                        ],
                    },
                ]
            }
        }
    }
    process = SidegateProcess(tmp_path, config)
    process.start()
    try:
        status, shown = get(process, "/debug/config")
        assert status == 200
        issuer = shown["authz"]["identity"]["sources"][1]["issuers"][0]
        assert issuer["keys"][0]["secret"] == "***"

        status, rl = get(process, "/debug/ratelimit")
        assert status == 200 and rl["enabled"] and rl["rules"] > 0
        domain = rl["domains"]["sidegate"]
        limited = next(d for d in domain["descriptors"] if d.get("value") == "limited")
        assert limited["rate_limit"]["limits"][0]["requests_per_unit"] > 0

        status, policies = get(process, "/debug/policies")
        assert status == 200 and policies["ready"]
        assert "envoy/authz/allow" in policies["entrypoints"]
        assert any(m["package"] == "envoy.authz" for m in policies["modules"])
        assert set(policies["decision_cache"]) >= {"on", "why_off", "entries"}

        status, identity = get(process, "/debug/identity")
        assert status == 200
        by_name = {s["name"]: s for s in identity["sources"]}
        assert by_name["keys"]["store"]["keys"] > 0
        assert by_name["hs"]["issuers"]["https://issuer.example"]["kids"] == ["k1"]

        everything = "".join(
            http_request(process.admin_port, "GET", f"/debug/{name}")[2].decode()
            for name in ("config", "ratelimit", "policies", "identity")
        )
        assert SECRET_KEY not in everything
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1:9192", True), ("[::1]:9192", True), ("localhost:1", True),
     ("0.0.0.0:9192", False), ("10.1.2.3:9192", False), ("example.org:1", False)],
)
def test_which_admin_addresses_are_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_off_loopback_the_endpoints_need_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    assert debug_token("0.0.0.0:9192", None) == (False, None)
    monkeypatch.setenv("SIDEGATE_ADMIN_TOKEN", "t0ken")
    assert debug_token("0.0.0.0:9192", "SIDEGATE_ADMIN_TOKEN") == (True, "t0ken")
    assert debug_token("127.0.0.1:9192", None) == (True, None)


async def test_a_token_is_required_when_configured() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from sidegate.debug import add_debug_routes

    app = web.Application()
    add_debug_routes(app, {"config": lambda: {"ok": True}}, "t0ken")
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/debug/config")).status == 401
        wrong = await client.get("/debug/config", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        right = await client.get("/debug/config", headers={"Authorization": "Bearer t0ken"})
        assert right.status == 200 and await right.json() == {"ok": True}
