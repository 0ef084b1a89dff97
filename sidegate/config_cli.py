"""``sidegate config schema`` and ``sidegate config show``: the config as sidegate reads it."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from sidegate.config import ConfigError, load_config
from sidegate.config_reference import schema_text

MASK = "***"
# Keys whose value is a secret itself (an HMAC key, a password); *_env keys only name a variable.
_SECRET_KEYS = re.compile(r"(^|_)(secret|password|passwd|token|pepper|private_key)$")
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"^(?P<head>[a-z][a-z0-9+.-]*://[^/@:]*:)(?P<password>[^/@]+)(?=@)")


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of the dumped config with secret values replaced by ``***``."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEYS.search(key.lower()):
            return MASK
        return _URL_PASSWORD.sub(lambda m: m["head"] + MASK, value)
    return value


def effective_config(path: Path | None) -> dict[str, Any]:
    """The config with every default filled in and paths resolved, secrets masked."""
    config = load_config(path)
    return mask_secrets(config.model_dump(mode="json"))


def _cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        effective = effective_config(args.config)
    except ConfigError as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(effective, indent=2, sort_keys=False))
    else:
        source = args.config or "embedded default"
        sys.stdout.write(f"# effective configuration of {source} (defaults filled in)\n")
        sys.stdout.write(yaml.safe_dump(effective, sort_keys=False, allow_unicode=True))
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = subparsers.add_parser("config", help="the config file's schema and effective values")
    commands = config.add_subparsers(dest="config_command", required=True)

    schema = commands.add_parser(
        "schema", help="print the JSON Schema of sidegate.yaml (for editors and CI validation)"
    )
    schema.set_defaults(handler=_cmd_schema)

    show = commands.add_parser(
        "show", help="print the effective configuration, defaults filled in, secrets masked"
    )
    show.add_argument("--config", type=Path, help="config file (default: embedded default)")
    show.add_argument("--json", action="store_true", help="JSON instead of YAML")
    show.set_defaults(handler=_cmd_show)
