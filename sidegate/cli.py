"""The ``sidegate`` command: serve, check-config, and the policy/keys tool groups."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from sidegate import __version__
from sidegate.config import ConfigError, load_config
from sidegate.extauthz.errors import AuthzConfigError
from sidegate.logging_setup import configure_logging
from sidegate.ratelimit.config import RuleConfigError

# Tool groups owned by the service packages; each exposes add_subcommands(subparsers).
_SUBCOMMAND_MODULES = ("sidegate.extauthz.policy.cli_commands", "sidegate.extauthz.keys_cli")


def _cmd_serve(args: argparse.Namespace) -> int:
    from sidegate.app import StartupError, serve

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _report(str(exc))
        return 2
    configure_logging(config.server.log_level)
    try:
        asyncio.run(serve(config, args.config))
    except StartupError as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return 1
    except (AuthzConfigError, RuleConfigError) as exc:
        # A policy, key file or rule file referenced by the config is wrong: name them all.
        from sidegate.references import check_references

        problems = check_references(config, args.config) or [str(exc)]
        for problem in problems:
            _report(problem)
        return 2
    return 0


def _report(message: str) -> None:
    """Every line of an error prefixed, so each reads on its own in a log or a terminal."""
    for line in message.splitlines() or [""]:
        print(f"sidegate: {line}", file=sys.stderr)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from sidegate.references import check_references

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _report(str(exc))
        return 1
    # every referenced file (policies, key files, PEM files, rule files), all problems at once
    problems = check_references(config, args.config)
    for problem in problems:
        _report(problem)
    if problems:
        return 1
    print(f"{args.config or 'embedded default'}: ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidegate", description="Envoy ext_authz and rate-limit sidecar"
    )
    parser.add_argument("--version", action="version", version=f"sidegate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve ext_authz, rate limit, health and admin endpoints")
    serve.add_argument("--config", type=Path, help="config file (default: embedded demo config)")
    serve.set_defaults(handler=_cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and what it references")
    check.add_argument("config", type=Path, nargs="?", help="config file (default: embedded)")
    check.set_defaults(handler=_cmd_check_config)

    for module_name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
