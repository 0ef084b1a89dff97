"""``sidegate policy test [DIR]`` and ``sidegate policy eval --input FILE [--path P]``."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from sidegate.common.exit_codes import INPUT_ERROR
from sidegate.extauthz.policy import testing
from sidegate.extauthz.policy.decision import DecisionError, parse_decision
from sidegate.extauthz.policy.embedded import EmbeddedEngine, PolicyCompileError
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError
from sidegate.extauthz.policy.sources import PolicySourceError


def _default_directory() -> Path:
    # ./policies where there is one (a deployment made by `sidegate init`), else the shipped
    # policies (package data), so the command works outside a checkout too.
    local = Path("policies")
    return local if local.is_dir() else Path(str(resources.files("sidegate.policies")))


DEFAULT_PATH = "envoy/authz/allow"


def _cmd_test(args: argparse.Namespace) -> int:
    directory = args.directory or _default_directory()
    try:
        # A policy that does not compile is a diagnostic (stderr), not a test report.
        testing.discover(directory)
    except (PolicySourceError, PolicyCompileError) as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return INPUT_ERROR
    return testing.report(directory, sys.stdout, timeout=args.timeout)


def _cmd_eval(args: argparse.Namespace) -> int:
    try:
        input_doc = json.loads(Path(args.input).read_text())
    except (OSError, ValueError) as exc:
        print(f"sidegate: {args.input}: cannot read input document: {exc}", file=sys.stderr)
        return INPUT_ERROR
    engine = EmbeddedEngine(args.policies or _default_directory())
    try:
        engine.load()
        result = engine.evaluate_json(args.path, json.dumps(input_doc))
    except PolicyCompileError as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return INPUT_ERROR
    except PolicyError as exc:
        print(f"sidegate: {args.path}: {exc.reason}", file=sys.stderr)
        return 1
    output: dict[str, object] = {"path": args.path.strip("/")}
    if result.value is not UNDEFINED:
        output["result"] = result.value
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
        "directory", type=Path, nargs="?", default=None,
        help="policy directory (default: ./policies, else the shipped policies)"
    )
    test.add_argument(
        "--timeout", type=float, default=testing.DEFAULT_TIMEOUT, help="seconds per test rule"
    )
    test.set_defaults(handler=_cmd_test)

    evaluate = commands.add_parser("eval", help="print the decision for one input document")
    evaluate.add_argument("--input", required=True, help="input document (JSON file)")
    evaluate.add_argument("--path", default=DEFAULT_PATH, help="decision path")
    evaluate.add_argument(
        "--policies", type=Path, default=None,
        help="policy directory (default: ./policies, else the shipped policies)"
    )
    evaluate.set_defaults(handler=_cmd_eval)
