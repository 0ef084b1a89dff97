"""``sidegate serve`` options that can also come from the environment.

Precedence, per setting: command-line flag > environment variable > config file > built-in
default. The config file itself is chosen by ``--config`` > ``SIDEGATE_CONFIG`` > the embedded
default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from sidegate.config import ConfigError
from sidegate.settings import ServerSettings, SidegateConfig

CONFIG_ENV = "SIDEGATE_CONFIG"


@dataclass(frozen=True)
class ServerOption:
    field: str  # the key of the config file's ``server`` section
    flag: str
    metavar: str
    env: str
    help: str


SERVER_OPTIONS = (
    ServerOption("grpc_address", "--grpc-address", "ADDRESS", "SIDEGATE_GRPC_ADDRESS",
                 "gRPC listen address: HOST:PORT or unix:///PATH"),
    ServerOption("admin_address", "--admin-address", "ADDRESS", "SIDEGATE_ADMIN_ADDRESS",
                 "admin HTTP listen address (/metrics, /healthz, /readyz): HOST:PORT"),
    ServerOption("log_level", "--log-level", "LEVEL", "SIDEGATE_LOG_LEVEL",
                 "debug | info | warning | error"),
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerSettings()
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE",
        help=f"config file [env {CONFIG_ENV}] (default: the embedded default config)",
    )
    for option in SERVER_OPTIONS:
        # default=None so that an absent flag falls through to the environment and the file.
        parser.add_argument(
            option.flag, dest=option.field, default=None, metavar=option.metavar,
            help=f"{option.help} [env {option.env}] "
            f"(default: {getattr(defaults, option.field)}, or the config file's "
            f"server.{option.field})",
        )


def config_path(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    if args.config is not None:
        return args.config
    value = environ.get(CONFIG_ENV, "").strip()
    return Path(value) if value else None


def server_overrides(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, tuple[str, str]]:
    """``{field: (value, where it came from)}`` for the flags and variables that are set."""
    environ = os.environ if environ is None else environ
    found: dict[str, tuple[str, str]] = {}
    for option in SERVER_OPTIONS:
        flag_value = getattr(args, option.field, None)
        env_value = environ.get(option.env, "").strip()
        if flag_value is not None:
            found[option.field] = (flag_value, option.flag)
        elif env_value:
            found[option.field] = (env_value, option.env)
    return found


def apply_overrides(
    config: SidegateConfig, overrides: Mapping[str, tuple[str, str]]
) -> SidegateConfig:
    """The config with the overrides applied and validated; errors name the flag or variable."""
    if not overrides:
        return config
    merged = config.server.model_dump()
    merged.update({name: value for name, (value, _) in overrides.items()})
    try:
        server = ServerSettings.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            where = overrides[name][1] if name in overrides else f"server.{name}"
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from None
    return config.model_copy(update={"server": server})
