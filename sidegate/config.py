"""Loading the config file: YAML -> typed model, with errors naming file, key path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sidegate.common.yaml_loader import YamlError, parse_yaml
from sidegate.resources import shipped_examples, shipped_policies
from sidegate.settings import SidegateConfig


class ConfigError(Exception):
    """A config problem, already worded for the operator: file, key path, line, problem."""


def format_loc(loc: tuple[Any, ...]) -> str:
    """A validation location as the key path a reader writes: ``authz.identity.sources[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(text: str | bytes, source: str, base_dir: Path) -> SidegateConfig:
    try:
        document = parse_yaml(text, source)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    data = document.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping (server, authz, ratelimit)")
    try:
        return SidegateConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = document.line_of(loc)
            where = f"{source}:{line}" if line else source
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {format_loc(loc)}: {message}")
        raise ConfigError("\n".join(problems)) from None


def load_config(path: Path | None) -> SidegateConfig:
    """The config at ``path``, or the embedded default (the shipped policies and example rules)."""
    if path is None:
        embedded = {
            "authz": {"policy": {"directory": str(shipped_policies())}},
            "ratelimit": {"rules_dir": str(shipped_examples() / "ratelimit")},
        }
        return SidegateConfig.model_validate(embedded, context={"base_dir": Path.cwd()})
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    return parse_config(text, str(path), path.resolve().parent)
