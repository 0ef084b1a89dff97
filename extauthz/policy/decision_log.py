"""What the per-Check decision log line says about the policy step, with secrets masked.

The service writes one structlog line per Check; this record carries the policy part of it:
path, result, dry-run, timings, and (when configured) the input with credentials masked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MASK = "***"


def _fingerprint(value: str) -> str:
    """A short hash, so two log lines can be matched on the same credential without it."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


# Headers that carry the request-target, query string (and any credential in it) included.
_PATH_HEADERS = frozenset({":path", "x-envoy-original-path"})


def _without_query(target: str) -> str:
    """The query string may hold credentials (``?access_token=``); the parsed copy is masked
    per parameter, the raw copies lose it whole."""
    path, sep, _ = target.partition("?")
    return path + "?" + MASK if sep else target


def mask_input(
    document: dict[str, Any],
    sensitive_headers: Iterable[str],
    sensitive_query_params: Iterable[str] = (),
) -> dict[str, Any]:
    """A copy of the input document safe to log: masked headers, query params and body.

    Only the branches that change are copied; the request body is never logged.
    """
    headers_to_mask = {h.lower() for h in sensitive_headers}
    params_to_mask = set(sensitive_query_params)
    masked = dict(document)
    attributes = document.get("attributes")
    http = (attributes or {}).get("request", {}).get("http")
    if http is not None:
        new_http = dict(http)
        headers = http.get("headers") or {}
        new_http["headers"] = {
            k: (
                _fingerprint(v)
                if k.lower() in headers_to_mask
                else _without_query(v)
                if k.lower() in _PATH_HEADERS
                else v
            )
            for k, v in headers.items()
        }
        if "headerMap" in http:
            new_http["headerMap"] = MASK
        for key in ("body", "rawBody"):
            if key in new_http:
                new_http[key] = MASK
        if "path" in new_http:
            new_http["path"] = _without_query(new_http["path"])
        masked["attributes"] = {
            **attributes,
            "request": {**attributes["request"], "http": new_http},
        }
    if "parsed_query" in document:
        masked["parsed_query"] = {
            k: ([MASK] * len(v) if k in params_to_mask else v)
            for k, v in document["parsed_query"].items()
        }
    if document.get("parsed_body") is not None:
        masked["parsed_body"] = MASK
    identity = document.get("identity")
    if isinstance(identity, dict) and "claims" in identity:
        # Claims are verified data, yet may carry personal data: log their names only.
        masked["identity"] = {**identity, "claims": sorted(identity.get("claims") or {})}
    return masked


@dataclass(slots=True)
class PolicyTrace:
    """The policy step of one Check, filled in as it runs."""

    path: str = ""
    result: str = ""
    dry_run: bool = False
    input_seconds: float = 0.0
    eval_seconds: float = 0.0
    cached: bool = False  # the decision came from the embedded engine's decision cache
    input: dict[str, Any] | None = None

    def log_fields(self) -> dict[str, Any]:
        if not self.path:
            return {}
        fields: dict[str, Any] = {
            "policy": self.path,
            "policy_result": self.result,
            "input_ms": round(self.input_seconds * 1000, 3),
            "eval_ms": round(self.eval_seconds * 1000, 3),
            "cached": self.cached,
        }
        if self.dry_run:
            fields["dry_run"] = True
        if self.input is not None:
            fields["input"] = self.input
        return fields
