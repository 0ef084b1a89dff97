"""The ``sidegate`` command: serve, check-config, and the policy/keys tool groups."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

import structlog

from sidegate import __version__, serve_options
from sidegate.common.exit_codes import INPUT_ERROR, OK, RUNTIME_ERROR
from sidegate.config import ConfigError, load_config
from sidegate.extauthz.errors import AuthzConfigError
from sidegate.logging_setup import configure_logging
from sidegate.ratelimit.config import RuleConfigError

# Tool groups owned by the service packages; each exposes add_subcommands(subparsers).
_SUBCOMMAND_MODULES = (
    "sidegate.extauthz.policy.cli_commands",
    "sidegate.extauthz.keys_cli",
    "sidegate.config_cli",
    "sidegate.explain_cli",
    "sidegate.init_cmd",
)


def _fail(problem: object, code: int) -> int:
    _report(str(problem))
    return code


def _cmd_serve(args: argparse.Namespace) -> int:
    from sidegate.app import StartupError, serve
    from sidegate.tls import TlsFileError

    path = serve_options.config_path(args)
    try:
        config = serve_options.apply_overrides(
            load_config(path), serve_options.server_overrides(args)
        )
    except ConfigError as exc:
        return _fail(exc, INPUT_ERROR)
    from sidegate.workers import run_workers, worker_index

    if config.server.workers > 1 and worker_index() is None:
        # The supervisor: N worker processes of this same config (sidegate/workers.py), each
        # given the same flags (the environment is inherited).
        flags = [
            f"{option.flag}={getattr(args, option.field)}"
            for option in serve_options.SERVER_OPTIONS
            if getattr(args, option.field, None) is not None
        ]
        return run_workers(path, config.server.workers, config.server.grace_period_s, flags)
    configure_logging(config.server.log_level, config.server.log_allowed_sample_rate)
    from sidegate.event_loop import EventLoopUnavailable, loop_factory

    try:
        with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
            runner.run(serve(config, path))
    except (StartupError, EventLoopUnavailable) as exc:
        return _fail(exc, RUNTIME_ERROR)
    except TlsFileError as exc:
        return _fail(exc, INPUT_ERROR)
    except (AuthzConfigError, RuleConfigError) as exc:
        # A policy, key file or rule file referenced by the config is wrong: name them all.
        from sidegate.references import check_references

        for problem in check_references(config, path) or [str(exc)]:
            _report(problem)
        return INPUT_ERROR
    return OK


def _report(message: str) -> None:
    """Every line of an error prefixed, so each reads on its own in a log or a terminal."""
    for line in message.splitlines() or [""]:
        print(f"sidegate: {line}", file=sys.stderr)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from sidegate.references import check_references

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc, INPUT_ERROR)
    # every referenced file (policies, key files, PEM files, rule files), all problems at once
    problems = check_references(config, args.config)
    if config.server.tls is not None:
        from sidegate.tls import TlsFileError, load_configuration

        try:
            load_configuration(config.server.tls)
        except TlsFileError as exc:
            problems.append(str(exc))
    from sidegate.event_loop import EventLoopUnavailable, loop_factory

    try:
        loop_factory(config.server.event_loop)
    except EventLoopUnavailable as exc:
        problems.append(str(exc))
    if config.authz.enabled:
        from sidegate.extauthz.identity.reachability import unreachable_sources

        for warning in unreachable_sources(config.authz.identity):
            print(f"sidegate: warning: {args.config or 'embedded'}: {warning}", file=sys.stderr)
    if not problems:
        from sidegate.rule_tiers import key_file_tier_warnings

        for warning in key_file_tier_warnings(config):
            print(f"sidegate: warning: {args.config or 'embedded'}: {warning}", file=sys.stderr)
    for problem in problems:
        _report(problem)
    if problems:
        return INPUT_ERROR
    print(f"{args.config or 'embedded default'}: ok")
    return OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidegate", description="Envoy ext_authz and rate-limit sidecar"
    )
    parser.add_argument("--version", action="version", version=f"sidegate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve ext_authz, rate limit, health and admin endpoints",
        description="Serve ext_authz, rate limit, gRPC health and the admin endpoints. Each "
        "setting comes from its flag, else its environment variable, else the config file, "
        "else the default shown.",
    )
    serve_options.add_serve_arguments(serve)
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
        if hasattr(module, "set_tier_lookup"):
            from sidegate.rule_tiers import configured_tiers

            # keys add warns about a tier no rate-limit rule knows
            module.set_tier_lookup(configured_tiers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return int(args.handler(args) or 0)
    # Tools print their result on stdout; what the libraries log goes to stderr. The previous
    # logging config comes back afterwards, for callers that run a tool in-process.
    previous = structlog.get_config()
    configure_logging("warning", to_stderr=True)
    try:
        return int(args.handler(args) or 0)
    finally:
        structlog.configure(**previous)


if __name__ == "__main__":
    raise SystemExit(main())
