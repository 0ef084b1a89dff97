"""``sidegate serve`` settings: flag > environment variable > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate import serve_options
from sidegate.cli import build_parser, main
from sidegate.config import ConfigError, load_config


def resolve(argv: list[str], environ: dict[str, str]):
    args = build_parser().parse_args(["serve", *argv])
    config = load_config(serve_options.config_path(args, environ))
    return serve_options.apply_overrides(config, serve_options.server_overrides(args, environ))


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "server:\n  grpc_address: 127.0.0.1:7001\n  admin_address: 127.0.0.1:7002\n"
        "  log_level: warning\n"
    )
    # default
    assert resolve([], {}).server.grpc_address == "127.0.0.1:9191"
    # file (via SIDEGATE_CONFIG) over default
    server = resolve([], {"SIDEGATE_CONFIG": str(path)}).server
    assert (server.grpc_address, server.admin_address, server.log_level) == (
        "127.0.0.1:7001", "127.0.0.1:7002", "warning"
    )
    # env over file
    env = {"SIDEGATE_CONFIG": str(path), "SIDEGATE_GRPC_ADDRESS": "127.0.0.1:7101",
           "SIDEGATE_LOG_LEVEL": "debug"}
    server = resolve([], env).server
    assert (server.grpc_address, server.admin_address, server.log_level) == (
        "127.0.0.1:7101", "127.0.0.1:7002", "debug"
    )
    # flag over env; --config over SIDEGATE_CONFIG
    other = tmp_path / "other.yaml"
    other.write_text("server:\n  admin_address: 127.0.0.1:7202\n")
    server = resolve(["--grpc-address", "127.0.0.1:7201", "--config", str(other)], env).server
    assert (server.grpc_address, server.admin_address, server.log_level) == (
        "127.0.0.1:7201", "127.0.0.1:7202", "debug"
    )
    # An empty variable is unset.
    assert resolve([], {"SIDEGATE_GRPC_ADDRESS": ""}).server.grpc_address == "127.0.0.1:9191"


def test_bad_override_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^--log-level: "):
        resolve(["--log-level", "loud"], {})
    with pytest.raises(ConfigError, match=r"^SIDEGATE_GRPC_ADDRESS: "):
        resolve([], {"SIDEGATE_GRPC_ADDRESS": "nowhere"})


def test_bad_override_exits_as_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDEGATE_ADMIN_ADDRESS", "not-an-address")
    assert main(["serve"]) == 1
    assert capsys.readouterr().err.startswith("sidegate: SIDEGATE_ADMIN_ADDRESS: ")


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--no-such-flag"])
    assert exc.value.code == 2


def test_help_shows_flags_env_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--grpc-address", "SIDEGATE_GRPC_ADDRESS", "default: 127.0.0.1:9191",
                     "--admin-address", "SIDEGATE_ADMIN_ADDRESS", "default: 127.0.0.1:9192",
                     "--log-level", "SIDEGATE_LOG_LEVEL", "default: info",
                     "--config", "SIDEGATE_CONFIG"):
        assert expected in text, expected
