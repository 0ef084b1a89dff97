"""``sidegate policy test [PATH...]`` and ``sidegate policy eval --input FILE [--path P]``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from importlib import resources
from pathlib import Path

from sidegate.common.exit_codes import INPUT_ERROR
from sidegate.extauthz.policy import testing
from sidegate.extauthz.policy.decision import DecisionError, parse_decision
from sidegate.extauthz.policy.embedded import EmbeddedEngine, PolicyCompileError
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError
from sidegate.extauthz.policy.package_rules import package_rule_values


def _default_directory() -> Path:
    # ./policies where there is one (a deployment made by `sidegate init`), else the shipped
    # policies (package data), so the command works outside a checkout too.
    local = Path("policies")
    return local if local.is_dir() else Path(str(resources.files("sidegate.policies")))


DEFAULT_PATH = "envoy/authz/allow"


def _cmd_test(args: argparse.Namespace) -> int:
    # Results on stdout; a policy that does not load or compile is a diagnostic (stderr).
    return testing.report(
        args.paths or [_default_directory()],
        sys.stdout,
        timeout=args.timeout,
        verbose=args.verbose,
        run=args.run,
        err=sys.stderr,
    )


def decision_path(text: str) -> str:
    """``data.envoy.authz.allow``, ``envoy.authz.allow`` and ``envoy/authz/allow`` alike."""
    path = text.strip().strip("/")
    if path == "data" or path.startswith("data."):
        path = path[len("data") :].lstrip(".")
    return path.replace(".", "/") if "/" not in path else path


def _cmd_eval(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
        input_doc = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"sidegate: {args.input}: cannot read input document: {exc}", file=sys.stderr)
        return INPUT_ERROR
    path = decision_path(args.path)
    # One decision: a cache would only log about itself on stdout, which carries the JSON.
    engine = EmbeddedEngine(args.policies or _default_directory(), cache_decisions=False)
    input_json = json.dumps(input_doc)
    try:
        engine.load()
        result = engine.evaluate_json(path, input_json)
    except PolicyCompileError as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return INPUT_ERROR
    except PolicyError as exc:
        print(f"sidegate: {path}: {exc.reason}", file=sys.stderr)
        return 1
    output: dict[str, object] = {"path": path}
    if result.value is not UNDEFINED:
        output["result"] = result.value
    if args.explain:
        output["explain"] = asyncio.run(package_rule_values(engine, path, input_doc))
    # Whether sidegate could use it as a Check decision, and why not.
    try:
        output["allowed"] = parse_decision(result.value).allowed
    except DecisionError as exc:
        output["error"] = str(exc)
    print(json.dumps(output, indent=2, sort_keys=True))
    return 0 if "allowed" in output else 1


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    policy = subparsers.add_parser("policy", help="test and evaluate Rego policies")
    commands = policy.add_subparsers(dest="policy_command", required=True)

    test = commands.add_parser(
        "test", help="run the test_* rules of *_test.rego files (like opa test)"
    )
    test.add_argument(
        "paths", type=Path, nargs="*", metavar="PATH",
        help="policy directories and files (default: ./policies, else the shipped policies)",
    )
    test.add_argument(
        "-v", "--verbose", action="store_true", help="every test with its result and time"
    )
    test.add_argument(
        "-r", "--run", metavar="REGEX", help="only tests whose data.pkg.test_name matches"
    )
    test.add_argument(
        "--timeout", type=float, default=testing.DEFAULT_TIMEOUT, help="seconds per test rule"
    )
    test.set_defaults(handler=_cmd_test)

    evaluate = commands.add_parser("eval", help="print the decision for one input document")
    evaluate.add_argument("--input", required=True, help="input document (JSON file; - stdin)")
    evaluate.add_argument(
        "--path", default=DEFAULT_PATH,
        help="decision path: data.envoy.authz.allow, envoy.authz.allow or envoy/authz/allow",
    )
    evaluate.add_argument(
        "--explain", action="store_true",
        help="also the values of every rule in the decision's package (those that held decided)",
    )
    evaluate.add_argument(
        "--policies", type=Path, default=None,
        help="policy directory (default: ./policies, else the shipped policies)"
    )
    evaluate.set_defaults(handler=_cmd_eval)
