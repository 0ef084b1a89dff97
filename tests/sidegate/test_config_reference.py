"""The configuration reference cannot drift: schema and docs come from the config models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from sidegate.cli import main
from sidegate.config import load_config
from sidegate.config_reference import all_keys, json_schema, markdown, sections, splice
from tests.conftest import REPO_ROOT

SCRIPT_DIR = REPO_ROOT / "scripts"


def generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", SCRIPT_DIR / "gen_config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_and_schema_are_what_the_models_give() -> None:
    assert generator().main(["--check"]) == 0, (
        "docs/configuration.md or sidegate/sidegate.schema.json is stale: "
        "run .venv/bin/python scripts/gen_config_reference.py"
    )


def test_every_key_has_a_type_a_default_or_required_and_a_meaning() -> None:
    missing = [key.path for key in all_keys() if not key.meaning]
    assert not missing, f"keys without a comment or description: {missing}"
    for key in all_keys():
        assert key.type and key.type != "any", key
        assert key.default, key


def test_every_section_of_the_models_is_in_the_reference() -> None:
    text = markdown()
    for section in sections():
        assert section.title in text
        for key in section.keys:
            assert f"`{key.path}`" in text


def test_splice_replaces_only_the_generated_part() -> None:
    document = "intro\n<!-- BEGIN GENERATED: x -->\nold\n<!-- END GENERATED -->\noutro\n"
    document = document.replace("<!-- BEGIN GENERATED: x -->", markdown().splitlines()[0])
    out = splice(document, "NEW\n")
    assert out == "intro\nNEW\noutro\n"
    with pytest.raises(ValueError):
        splice("no markers", "NEW\n")


def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def shipped_configs() -> list[Path]:
    """Every sidegate config under examples/ (rule files of a domain are not configs)."""
    found = []
    for path in sorted(REPO_ROOT.glob("examples/**/*.yaml")):
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and {"server", "authz", "ratelimit"} & set(document):
            found.append(path)
    assert found
    return found


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_the_schema_validates_every_shipped_example(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    errors = sorted(validator().iter_errors(document), key=str)
    assert not errors, [e.message for e in errors]


def test_the_schema_validates_the_effective_embedded_default() -> None:
    document = load_config(None).model_dump(mode="json")
    assert not list(validator().iter_errors(document))


@pytest.mark.parametrize(
    "document",
    [
        {"server": {"grpc_adress": "127.0.0.1:1"}},
        {"server": {"threads": 0}},
        {"authz": {"policy": {"on_error": "maybe"}}},
        {"ratelimit": {"backend": "memcached"}},
        {"authz": {"identity": {"sources": [{"type": "saml", "name": "x"}]}}},
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(document: dict) -> None:
    assert list(validator().iter_errors(document))


def test_config_schema_prints_the_shipped_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    shipped = json.loads((REPO_ROOT / "sidegate" / "sidegate.schema.json").read_text())
    assert printed == shipped
    assert printed["properties"]["server"]


def test_config_show_fills_defaults_and_masks_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s" * 40
    config = tmp_path / "sidegate.yaml"
    config.write_text(
        "authz:\n"
        "  policy: {directory: " + str(REPO_ROOT / "policies") + "}\n"
        "  identity:\n"
        "    sources:\n"
        "      - name: hs\n"
        "        type: jwt\n"
        "        issuers:\n"
        "          - issuer: https://issuer.example\n"
        "            algorithms: [HS256]\n"
        "            audiences: [api]\n"
        f"            keys: [{{kid: k1, secret: {secret}}}]\n"
        "ratelimit:\n"
        "  backend: redis\n"
        "  rules_dir: " + str(REPO_ROOT / "examples" / "ratelimit") + "\n"
        "  redis: {url: 'redis://app:hunter2@127.0.0.1:6390/0'}\n"
    )
    assert main(["config", "show", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    assert secret not in out and "hunter2" not in out
    shown = json.loads(out)
    assert shown["ratelimit"]["redis"]["url"] == "redis://app:***@127.0.0.1:6390/0"
    key = shown["authz"]["identity"]["sources"][0]["issuers"][0]["keys"][0]
    assert key["secret"] == "***"
    # Defaults filled in: keys the file never mentions.
    assert shown["server"]["grpc_address"] == "127.0.0.1:9191"
    assert shown["authz"]["policy"]["decision_cache"]["ttl_s"] > 0


def test_config_show_names_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sidegate.yaml"
    config.write_text("server:\n  grpc_adress: x\n")
    assert main(["config", "show", "--config", str(config)]) == 1
    assert "sidegate.yaml:2: server.grpc_adress: unknown key" in capsys.readouterr().err


def test_the_schema_validates_what_sidegate_init_writes(tmp_path: Path) -> None:
    from sidegate.init_cmd import write_starter

    write_starter(tmp_path / "demo")
    document = yaml.safe_load((tmp_path / "demo" / "sidegate.yaml").read_text())
    errors = sorted(validator().iter_errors(document), key=str)
    assert not errors, [e.message for e in errors]
