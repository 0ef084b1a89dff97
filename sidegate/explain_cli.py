"""``sidegate explain``: the command line around sidegate/explain.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sidegate.config import ConfigError, load_config
from sidegate.explain import (
    ExplainError,
    ExplainRequest,
    check_request,
    check_request_from_json,
    explain,
    parse_descriptor,
    parse_header,
    render_text,
)
from sidegate.explain_envoy import EnvoyRoute


@dataclass
class _Services:
    authz: Any = None
    ratelimit: Any = None


def _request(args: argparse.Namespace) -> Any:
    if args.check_request:
        if args.check_request == "-":
            return check_request_from_json(sys.stdin.read())
        return check_request_from_json(Path(args.check_request).read_text())
    if not args.url:
        raise ExplainError("give a URL (and optionally a method), or --check-request FILE")
    return check_request(
        ExplainRequest(
            method=args.method,
            url=args.url,
            headers=[parse_header(h) for h in args.header],
            body=args.data or "",
            context_extensions=dict(
                _pair(item, "--context-extension") for item in args.context_extension
            ),
        )
    )


async def _run(
    config: Any,
    request: Any,
    descriptors: list[list[tuple[str, str]]] | None,
    domain: str | None,
    route: EnvoyRoute | None,
) -> dict[str, Any]:
    from sidegate.extauthz.factory import build_authz_service
    from sidegate.ratelimit.service import RateLimitService

    services = _Services()
    try:
        if config.authz.enabled:
            services.authz = build_authz_service(config.authz)
            await services.authz.start()
        if config.ratelimit.enabled:
            services.ratelimit = RateLimitService.from_settings(config.ratelimit)
            await services.ratelimit.start()
        return await explain(services, request, descriptors, domain, route)
    finally:
        for service in (services.authz, services.ratelimit):
            if service is not None:
                with contextlib.suppress(Exception):
                    await service.close()


def _pair(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ExplainError(f"{flag} {text!r}: expected key=value")
    return key, value


def _quiet_logs() -> None:
    # The report is the output: the services' own log lines go to stderr, warnings only.
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _cmd_explain(args: argparse.Namespace) -> int:
    _quiet_logs()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return 1
    if bool(args.envoy) != bool(args.route):
        print("sidegate: --envoy and --route go together", file=sys.stderr)
        return 2
    try:
        request = _request(args)
        descriptors = [parse_descriptor(d) for d in args.descriptor] or None
        route = EnvoyRoute.load(args.envoy, args.route) if args.envoy else None
        report = asyncio.run(_run(config, request, descriptors, args.domain, route))
    except (ExplainError, OSError) as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        sys.stdout.write(render_text(report))
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "explain",
        help="why a request gets 200/401/403/429: identity, policy, CheckResponse, quotas",
        description="Explain one request stage by stage with the loaded config. Quota is "
        "peeked at, never taken. Example: sidegate explain --config sidegate.yaml GET "
        "http://api.local/orders -H 'x-api-key: KEY' --descriptor tier=free,consumer=acme",
    )
    parser.add_argument("method_or_url", nargs="?", help="HTTP method (default GET) or the URL")
    parser.add_argument("url_arg", nargs="?", metavar="url", help="the URL (path and query)")
    parser.add_argument("--config", type=Path, help="config file (default: embedded default)")
    parser.add_argument(
        "-H", "--header", action="append", default=[], help="'Name: value', like curl"
    )
    parser.add_argument("-d", "--data", help="request body")
    parser.add_argument(
        "--context-extension", action="append", default=[], metavar="KEY=VALUE",
        help="the route's ext_authz context_extensions",
    )
    parser.add_argument(
        "--descriptor", action="append", default=[], metavar="K=V[,K=V...]",
        help="a rate-limit descriptor Envoy would send (repeatable)",
    )
    parser.add_argument("--domain", help="rate-limit domain (default: the Envoy filter's, or "
                        "'sidegate')")
    parser.add_argument("--envoy", type=Path, help="derive descriptors from this Envoy config")
    parser.add_argument("--route", help="the route (its name, or its match prefix or path)")
    parser.add_argument(
        "--check-request", metavar="FILE", help="a CheckRequest in protojson ('-': stdin)"
    )
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.set_defaults(handler=_dispatch)


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}


def _dispatch(args: argparse.Namespace) -> int:
    first, second = args.method_or_url, args.url_arg
    if first and second:
        args.method, args.url = first, second
    elif first and first.upper() in _METHODS:
        args.method, args.url = first, None
    else:
        args.method, args.url = "GET", first
    return _cmd_explain(args)
