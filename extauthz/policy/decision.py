"""A policy result, validated: a bool, or an opa-envoy-plugin decision object.

Types are checked as opa-envoy-plugin checks them: a wrong type anywhere makes the whole
result unusable (``DecisionError``), which the error policy then answers; it never half-applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from envoy.type.v3.http_status_pb2 import StatusCode

from sidegate.extauthz.policy.engine import UNDEFINED


class DecisionError(ValueError):
    """The policy produced no usable decision (undefined, or ill-typed)."""

    def __init__(self, reason: str, *, kind: str = "ill_typed") -> None:
        super().__init__(reason)
        self.kind = kind


# A status must be known to HTTP (as Go's http.StatusText) and to Envoy's StatusCode enum.
_VALID_STATUS = frozenset(int(s) for s in HTTPStatus) & frozenset(StatusCode.values())


@dataclass(slots=True)
class Decision:
    allowed: bool
    headers: list[tuple[str, str]] = field(default_factory=list)
    response_headers_to_add: list[tuple[str, str]] = field(default_factory=list)
    request_headers_to_remove: list[str] = field(default_factory=list)
    query_parameters_to_set: list[tuple[str, str]] = field(default_factory=list)
    query_parameters_to_remove: list[str] = field(default_factory=list)
    body: str | None = None
    http_status: int | None = None
    dynamic_metadata: dict[str, Any] = field(default_factory=dict)


def _name_values(key: str, value: Any) -> list[tuple[str, str]]:
    """``{name: "v"}`` or ``{name: ["v1", "v2"]}`` -> one pair per value, order kept."""
    if not isinstance(value, dict):
        raise DecisionError(f"type conversion error: {key} must be an object")
    pairs = []
    for name, item in value.items():
        values = item if isinstance(item, list) else [item]
        for one in values:
            if not isinstance(one, str):
                raise DecisionError(f"type conversion error: {key}[{name!r}] must hold strings")
            pairs.append((name, one))
    return pairs


def _headers(key: str, value: Any) -> list[tuple[str, str]]:
    """The header shapes opa-envoy-plugin takes: an object, or a list of objects."""
    if isinstance(value, list):
        pairs = []
        for item in value:
            pairs.extend(_name_values(key, item))
        return pairs
    return _name_values(key, value)


def _strings(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DecisionError(f"type conversion error: {key} must be an array of strings")
    return list(value)


def _status(value: Any) -> int:
    # JSON numbers arrive as int or float; 403.0 is fine, 403.5 and true are not.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise DecisionError("type conversion error: http_status must be an integer")
    status = int(value)
    if status not in _VALID_STATUS:
        raise DecisionError(f"invalid HTTP status code {status}")
    return status


def parse_decision(value: Any) -> Decision:
    """Validate a raw policy result the way opa-envoy-plugin does (``allowed`` required)."""
    if value is UNDEFINED:
        raise DecisionError("undefined decision", kind="undefined")
    if isinstance(value, bool):
        return Decision(allowed=value)
    if not isinstance(value, dict):
        raise DecisionError(f"illegal value for policy evaluation result: {type(value).__name__}")
    allowed = value.get("allowed")
    if not isinstance(allowed, bool):
        raise DecisionError("decision object needs a boolean 'allowed'")
    decision = Decision(allowed=allowed)
    if "headers" in value:
        decision.headers = _headers("headers", value["headers"])
    if "response_headers_to_add" in value:
        decision.response_headers_to_add = _headers(
            "response_headers_to_add", value["response_headers_to_add"]
        )
    if "request_headers_to_remove" in value:
        decision.request_headers_to_remove = _strings(
            "request_headers_to_remove", value["request_headers_to_remove"]
        )
    if "query_parameters_to_set" in value:
        decision.query_parameters_to_set = _name_values(
            "query_parameters_to_set", value["query_parameters_to_set"]
        )
    if "query_parameters_to_remove" in value:
        decision.query_parameters_to_remove = _strings(
            "query_parameters_to_remove", value["query_parameters_to_remove"]
        )
    if "body" in value:
        if not isinstance(value["body"], str):
            raise DecisionError("type conversion error: body must be a string")
        decision.body = value["body"]
    if "http_status" in value:
        decision.http_status = _status(value["http_status"])
    if "dynamic_metadata" in value:
        if not isinstance(value["dynamic_metadata"], dict):
            raise DecisionError("type conversion error: dynamic_metadata must be an object")
        decision.dynamic_metadata = value["dynamic_metadata"]
    return decision
