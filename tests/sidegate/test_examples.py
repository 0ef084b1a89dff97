"""The shipped examples work as the README and examples/sidegate.yaml say."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sidegate.cli import main
from tests.conftest import REPO_ROOT
from tests.harness import Stack

EXAMPLES = REPO_ROOT / "examples"
FREE_KEY = "sg_demo_free_0123456789abcdef"
PREMIUM_KEY = "sg_demo_premium_0123456789abcdef"


def example_config() -> dict:
    """examples/sidegate.yaml with its relative paths made absolute (the harness moves it)."""
    config = yaml.safe_load((EXAMPLES / "sidegate.yaml").read_text())
    policy = config["authz"]["policy"]
    policy["directory"] = str((EXAMPLES / policy["directory"]).resolve())
    config["ratelimit"]["rules_dir"] = str(EXAMPLES / config["ratelimit"]["rules_dir"])
    for source in config["authz"]["identity"]["sources"]:
        store = source.get("store", {})
        if "path" in store:
            store["path"] = str(EXAMPLES / store["path"])
    return config


def test_example_config_checks_out(capsys) -> None:
    assert main(["check-config", str(EXAMPLES / "sidegate.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_example_config_through_envoy(tmp_path: Path) -> None:
    with Stack.start(tmp_path, example_config()) as stack:
        status, _, body = stack.request(
            "GET", "/hello", headers={"x-api-key": FREE_KEY, "x-user-id": "spoofed"}
        )
        assert status == 200, body
        seen = json.loads(body)["headers"]
        assert seen["x-user-id"] == "demo-free"
        assert seen["x-consumer-tier"] == "free"
        assert "x-api-key" not in seen  # hide_credentials

        status, headers, _ = stack.request("GET", "/hello")
        assert status == 401
        assert headers["www-authenticate"].startswith("ApiKey realm=")

        assert stack.request("GET", "/public/docs")[0] == 200

        # The free tier's quota is 5 per minute per consumer; premium is 20.
        free = [stack.request("GET", "/hello", {"x-api-key": FREE_KEY})[0] for _ in range(5)]
        assert free == [200, 200, 200, 200, 429]
        premium = [
            stack.request("GET", "/hello", {"authorization": f"ApiKey {PREMIUM_KEY}"})[0]
            for _ in range(6)
        ]
        assert premium == [200] * 6
