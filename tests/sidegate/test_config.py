"""Config loading: every error names the file, the key path and (where known) the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.cli import main
from sidegate.config import ConfigError, load_config
from sidegate.resources import shipped_examples, shipped_policies


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidegate.yaml"
    path.write_text(text)
    return path


def test_embedded_default_points_at_the_shipped_data() -> None:
    config = load_config(None)
    assert config.authz.policy.directory == shipped_policies()
    assert (shipped_policies() / "envoy" / "authz.rego").is_file()
    assert config.ratelimit.rules_dir == shipped_examples() / "ratelimit"
    assert config.server.model == "aio"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "authz:\n  policy:\n    directory: mypolicies\n")
    config = load_config(path)
    assert config.authz.policy.directory == tmp_path / "mypolicies"
    # A section left out still resolves its defaults against the file's directory.
    assert config.ratelimit.rules_dir == tmp_path / "examples" / "ratelimit"


def test_unknown_key_names_file_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  grpc_address: 127.0.0.1:9191\n  grpc_adress: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:3: server.grpc_adress: unknown key"


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "authz:\n  policy:\n    default_pth: a/b\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:3: authz.policy.default_pth: unknown key"


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  threads: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: server.threads: ")
    assert "integer" in message


def test_bad_address(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  grpc_address: localhost\n")
    with pytest.raises(ConfigError, match=r"server.grpc_address: .*host:port"):
        load_config(path)


def test_bad_enum_value(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  model: fibers\n")
    with pytest.raises(ConfigError, match=r":2: server.model: Input should be 'aio' or 'threads'"):
        load_config(path)


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  threads: 0\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert any(line.startswith(f"{path}:3: bogus: unknown key") for line in lines)
    assert any(line.startswith(f"{path}:2: server.threads:") for line in lines)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(path)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  grpc_address: [unclosed\n  model: aio\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:")
    assert "invalid YAML" in str(err.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- server\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).server.grpc_address == "127.0.0.1:9191"


def test_serve_exits_non_zero_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "ratelimit:\n  backnd: redis\n")
    # The same exit code as check-config for the same bad file (common/exit_codes.py).
    assert main(["serve", "--config", str(path)]) == 1
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()[0]
    assert err.strip() == f"sidegate: {path}:2: ratelimit.backnd: unknown key"


def test_check_config_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 0
    assert "embedded default: ok" in capsys.readouterr().out
    bad = write(tmp_path, "server:\n  model: fibers\n")
    assert main(["check-config", str(bad)]) == 1


def test_check_config_compiles_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "broken.rego").write_text("package envoy.authz\n\nallow if {\n")
    path = write(tmp_path, "authz:\n  policy:\n    directory: policies\n")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "broken.rego" in err


def test_check_config_loads_rate_limit_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(
        "domain: d\ndescriptors:\n  - key: k\n"
        "    rate_limit: {unit: fortnight, requests_per_unit: 1}\n"
    )
    path = write(tmp_path, "authz:\n  enabled: false\nratelimit:\n  rules_dir: rules\n")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "a.yaml" in err
    assert "invalid rate limit unit 'fortnight'" in err


def test_serve_reports_a_taken_port_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(
            tmp_path,
            f"server:\n  grpc_address: 127.0.0.1:{port}\n"
            "authz: {enabled: false}\nratelimit: {enabled: false}\n",
        )
        assert main(["serve", "--config", str(path)]) == 3  # a runtime (start-up) failure
    err = capsys.readouterr().err.strip()
    assert err == (
        f"sidegate: cannot bind gRPC address 127.0.0.1:{port} (in use, or not a local address)"
    )
