"""The /readyz component report, part by part (in process; the Redis cases run end to end in
test_health_per_part.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sidegate.extauthz.factory import build_authz_service
from sidegate.extauthz.settings import AuthzSettings
from sidegate.health import component_report
from tests.conftest import REPO_ROOT


def settings(tmp_path: Path) -> AuthzSettings:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - digest: {'a' * 64}\n    consumer: a\n")
    return AuthzSettings.model_validate(
        {
            "policy": {"directory": str(REPO_ROOT / "policies"), "watch_interval": 0},
            "identity": {
                "sources": [
                    {
                        "name": "idp",
                        "type": "jwt",
                        "issuers": [
                            {"issuer": "https://idp.example.com",
                             "jwks_uri": "https://idp.example.com/jwks"}
                        ],
                    },
                    {
                        "name": "keys",
                        "type": "api_key",
                        "store": {"type": "file", "path": str(keys), "reload_interval": 0},
                    },
                ]
            },
        },
        context={"base_dir": tmp_path},
    )


async def test_report_names_policy_key_stores_and_each_issuer(tmp_path: Path) -> None:
    authz = build_authz_service(settings(tmp_path))
    authz.engine.load()  # type: ignore[attr-defined]
    report = {c["name"]: c for c in component_report(SimpleNamespace(authz=authz, ratelimit=None))}
    assert report["policy"]["state"] == "ok" and "module(s)" in report["policy"]["reason"]
    assert report["key_store:keys"]["state"] == "ok"
    assert report["key_store:keys"]["reason"].startswith("1 key(s) from ")
    issuer = report["jwks:https://idp.example.com"]
    assert issuer["state"] == "down" and issuer["reason"] == "not fetched yet"

    # a rejected reload: degraded, the previous keys serving, the reason names file and line
    store = authz.authenticator.sources[1][1].store  # type: ignore[attr-defined]
    (tmp_path / "keys.yaml").write_text("keys:\n  - digest: x\n    digest: y\n")
    assert not await store.reload_async("sighup")
    keys = {c["name"]: c for c in component_report(SimpleNamespace(authz=authz, ratelimit=None))}
    state = keys["key_store:keys"]
    assert state["state"] == "degraded" and state["last_reload"] == "failure"
    assert "keys.yaml:3: duplicate key 'digest'" in state["reason"]
    await authz.close()
