"""Queries through regopy's C functions, around the pitfalls of its Python wrapper (1.5.2).

The wrapper's ``Output`` parses the engine's JSON when it is created, again on ``str()``, and
raises ``JSONDecodeError`` when the engine reports some errors (``bundle verify: ...``) as an
OK output holding an error tree. Here the output is read once, as text, and freed at once.
Tested against the pinned regopy version in tests/policy/test_embedded_engine.py.
"""

from __future__ import annotations

import json
from typing import Any

import regopy
from regopy import rego_shared

from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError

# rego-cpp's bundle compiler sometimes emits a plan that fails its own verifier for one
# entrypoint (seen: "bundle verify: raw index 26 >= local_count 26"); the policy is valid and
# the tree-walking interpreter evaluates it correctly.
BUNDLE_VERIFY_ERROR = "bundle verify"

_ERROR_MESSAGE = "(errormsg "


class BrokenEntrypoint(PolicyError):
    """The compiled bundle cannot evaluate this entrypoint; use the interpreter instead."""


def _read(handle: Any) -> tuple[bool, str]:
    try:
        return bool(rego_shared.rego_output_ok(handle)), rego_shared.rego_output_string(handle)
    finally:
        rego_shared.rego_free_output(handle)


def _error_message(text: str) -> str:
    start = text.find(_ERROR_MESSAGE)
    if start < 0:
        return text.strip()[:300]
    rest = text[start + len(_ERROR_MESSAGE) :]
    length, _, message = rest.partition(":")
    return message[: int(length)] if length.isdigit() else message[:300]


def _value(ok: bool, text: str, *, bound: bool) -> Any:
    if not ok or text.startswith(("(error", "<error>", "(rego-errorseq")):
        message = _error_message(text)
        if BUNDLE_VERIFY_ERROR in message:
            raise BrokenEntrypoint(f"evaluation failed: {message}")
        raise PolicyError(f"evaluation failed: {message}")
    if text == "undefined":
        return UNDEFINED
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise PolicyError("evaluation returned unreadable output") from exc
    except RecursionError:
        # A value built at run time (json.unmarshal of a deep string) nests past what the
        # decoder recurses through: an evaluation error, not an exception out of the engine.
        raise PolicyError("evaluation returned a value nested too deeply") from None
    if bound:
        return document.get("bindings", {}).get("x", UNDEFINED)
    expressions = document.get("expressions") or []
    if len(expressions) != 1:
        raise PolicyError(f"multiple evaluation results ({len(expressions)})")
    return expressions[0]


def set_input_json(interpreter: regopy.Interpreter, input_json: str) -> None:
    rego_shared.rego_set_input_term(interpreter._impl, input_json)


def query_entrypoint(
    interpreter: regopy.Interpreter, bundle: regopy.Bundle, entrypoint: str
) -> Any:
    """The entrypoint's value (or UNDEFINED) for the input already set; PolicyError on error."""
    handle = rego_shared.rego_bundle_query_entrypoint(interpreter._impl, bundle._impl, entrypoint)
    return _value(*_read(handle), bound=False)


def query_rule(interpreter: regopy.Interpreter, entrypoint: str) -> Any:
    """The same through the tree-walking interpreter: slower, used where the bundle is broken.

    The value is bound to a variable: queried bare, a rule whose value is ``false`` reads as
    undefined in regopy.
    """
    return query_ref(interpreter, "data." + ".".join(entrypoint.split("/")))


def query_ref(interpreter: regopy.Interpreter, ref: str) -> Any:
    """The value of a reference such as ``data.pkg.rule``, or UNDEFINED; PolicyError."""
    handle = rego_shared.rego_query(interpreter._impl, f"x := {ref}")
    return _value(*_read(handle), bound=True)
