"""``sidegate explain``: why one request gets 200, 401, 403 or 429, stage by stage.

Takes a request as a user thinks of it (method, URL, curl-style ``-H`` headers; or a JSON
CheckRequest), the route's context extensions and the rate-limit descriptors Envoy would send
(given, or derived from an Envoy config's route actions and the Check's dynamic metadata), and
reports each stage with the loaded config: the identity (which source, verdict, reason, the
identity mapped), the policy input (masked) and decision with the values of the rules of the
decision's package, the CheckResponse Envoy would get, the descriptors, the matched rate-limit
rules and each bucket's state. Quota is only peeked at, never taken.

The same engine answers ``POST /debug/explain`` on the admin port (sidegate/debug.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.json_format import MessageToDict, Parse, ParseError

from sidegate.extauthz.identity.base import AuthnFailure
from sidegate.extauthz.input_document import InputError, build_input
from sidegate.extauthz.policy.decision import DecisionError, parse_decision
from sidegate.extauthz.policy.decision_log import mask_input
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError
from sidegate.extauthz.policy.package_rules import package_rule_values
from sidegate.extauthz.request_view import RequestView

METADATA_NAMESPACE = "envoy.filters.http.ext_authz"


class ExplainError(ValueError):
    """The request to explain cannot be understood (worded for the user)."""


@dataclass
class ExplainRequest:
    method: str = "GET"
    url: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""
    context_extensions: dict[str, str] = field(default_factory=dict)
    # Each descriptor is its entries in order; None: none given (derive or skip).
    descriptors: list[list[tuple[str, str]]] | None = None
    domain: str | None = None
    source_address: str = "127.0.0.1"


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ExplainError(f"header {text!r}: expected 'Name: value' (as curl's -H)")
    return name.strip().lower(), value.strip()


def parse_descriptor(text: str) -> list[tuple[str, str]]:
    """``generic_key=api,tier=free``: one descriptor, its entries in order."""
    entries = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ExplainError(f"descriptor {text!r}: expected key=value[,key=value...]")
        entries.append((key.strip(), value.strip()))
    return entries


def check_request(req: ExplainRequest) -> external_auth_pb2.CheckRequest:
    parts = urlsplit(req.url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = req.method.upper()
    http.path = path
    http.host = parts.netloc or dict(req.headers).get("host", "localhost")
    http.scheme = parts.scheme or "http"
    http.protocol = "HTTP/1.1"
    for name, value in req.headers:
        # Envoy folds repeated headers into one, comma-joined.
        current = http.headers.get(name)
        http.headers[name] = f"{current},{value}" if current else value
    if req.body:
        http.body = req.body
        http.size = len(req.body.encode())
    address = request.attributes.source.address.socket_address
    address.address, address.port_value = req.source_address, 50000
    request.attributes.context_extensions.update(req.context_extensions)
    return request


def check_request_from_json(text: str) -> external_auth_pb2.CheckRequest:
    try:
        return Parse(text, external_auth_pb2.CheckRequest())
    except ParseError as exc:
        raise ExplainError(f"not a CheckRequest in protojson: {exc}") from None


async def explain(
    app: Any,
    request: external_auth_pb2.CheckRequest,
    descriptors: list[list[tuple[str, str]]] | None = None,
    domain: str | None = None,
    envoy_route: Any = None,
) -> dict[str, Any]:
    """Every stage for one request; ``app`` holds the started ``authz`` and ``ratelimit``."""
    report: dict[str, Any] = {"request": _request_summary(request)}
    response = None
    if app.authz is not None:
        report["identity"], identity = await _identity(app.authz, request)
        if identity is not None:
            report["policy"] = await _policy(app.authz, request, identity)
        response = await app.authz.check(request)
        report["check_response"] = _check_response(response)
    if envoy_route is not None:
        metadata = _dynamic_metadata(response)
        descriptors = envoy_route.descriptors(request, metadata)
        domain = domain or envoy_route.domain
    if app.ratelimit is not None and descriptors:
        report["ratelimit"] = await _ratelimit(app.ratelimit, domain or "sidegate", descriptors)
        if response is not None and response.status.code != 0:
            report["ratelimit"]["note"] = (
                "peeked: no quota was taken; Envoy would not ask, the Check denied first"
            )
    report["answer"] = _answer(report)
    return report


def _request_summary(request: external_auth_pb2.CheckRequest) -> dict[str, Any]:
    http = request.attributes.request.http
    return {
        "method": http.method,
        "host": http.host,
        "path": http.path,
        "context_extensions": dict(request.attributes.context_extensions),
    }


async def _identity(service: Any, request: Any) -> tuple[dict[str, Any], Any]:
    view = RequestView.from_check_request(request)
    authenticator = service.authenticator
    claimed = _claiming_source(authenticator, view)
    try:
        identity = await authenticator.authenticate(view)
    except AuthnFailure as failure:
        status = 503 if failure.kind == "unavailable" else 401
        return {
            "source": claimed,
            "verdict": failure.kind,
            "status": status,
            "reason": failure.reason,
        }, None
    described = identity.as_input()
    described["claims"] = sorted(described.get("claims", {}))  # names only, as the log has
    return {"source": claimed or identity.source or None, "verdict": "authenticated",
            "identity": described}, identity


def _claiming_source(authenticator: Any, view: RequestView) -> str | None:
    """The source that takes the request's credential, chosen exactly as authentication
    chooses it (location, route and token shape); else the one that found an unclaimed one."""
    select = getattr(authenticator, "select", None)
    if select is None:
        return None  # anonymous-only: no sources
    taken, unclaimed = select(view)
    if taken is not None:
        return str(taken[0].name)
    return unclaimed.name if unclaimed is not None else None


async def _policy(service: Any, request: Any, identity: Any) -> dict[str, Any]:
    settings = service.settings.policy
    view = RequestView.from_check_request(request)
    path = (view.context_extensions.get("policy") or settings.default_path).strip("/")
    try:
        document = build_input(view, settings.body)
    except InputError as exc:
        return {"path": path, "input_error": str(exc), "status": 400}
    document["identity"] = identity.as_input()
    masked = mask_input(
        document,
        settings.decision_log.sensitive_headers,
        settings.decision_log.sensitive_query_params,
    )
    out: dict[str, Any] = {"path": path, "input": masked}
    try:
        result = await service.engine.evaluate(path, document)
    except PolicyError as exc:
        out["error"] = exc.reason if hasattr(exc, "reason") else str(exc)
        return out
    out["result"] = None if result.value is UNDEFINED else result.value
    out["defined"] = result.value is not UNDEFINED
    try:
        out["allowed"] = parse_decision(result.value).allowed
    except DecisionError as exc:
        out["decision_error"] = str(exc)
    out["rules"] = await package_rule_values(service.engine, path, document)
    return out


def _check_response(response: Any) -> dict[str, Any]:
    described = MessageToDict(response, preserving_proto_field_name=True)
    code = response.status.code
    if response.HasField("denied_response"):
        status = response.denied_response.status.code or 403
    elif code == 0:
        status = 200
    else:
        status = 403
    described["http_status"] = status
    return described


def _dynamic_metadata(response: Any) -> dict[str, str]:
    if response is None:
        return {}
    fields = MessageToDict(response.dynamic_metadata) if response.dynamic_metadata else {}
    return {k: v for k, v in fields.items() if isinstance(v, str)}


async def _ratelimit(
    service: Any, domain: str, descriptors: list[list[tuple[str, str]]]
) -> dict[str, Any]:
    request = rls_pb2.RateLimitRequest(domain=domain)
    for entries in descriptors:
        descriptor = request.descriptors.add()
        for key, value in entries:
            entry = descriptor.entries.add()
            entry.key, entry.value = key, value
    response, summary = await service.peek(request)
    statuses = []
    for entries, status, matched in zip(descriptors, response.statuses, summary, strict=True):
        item: dict[str, Any] = {
            "descriptor": [{"key": k, "value": v} for k, v in entries],
            "rule": matched.get("rule"),
            "code": rls_pb2.RateLimitResponse.Code.Name(status.code),
        }
        if status.HasField("current_limit"):
            # A peek (0 hits) passes while anything is left; the request itself takes 1.
            if status.limit_remaining < 1 and status.code == rls_pb2.RateLimitResponse.OK:
                item["code"] = "OVER_LIMIT"
            item["limit"] = {
                "requests_per_unit": status.current_limit.requests_per_unit,
                "unit": rls_pb2.RateLimitResponse.RateLimit.Unit.Name(status.current_limit.unit),
            }
            item["remaining"] = status.limit_remaining
            item["reset_s"] = status.duration_until_reset.seconds + round(
                status.duration_until_reset.nanos / 1e9, 3
            )
        statuses.append(item)
    over = any(item["code"] == "OVER_LIMIT" for item in statuses)
    overall = "OVER_LIMIT" if over and not service.settings.shadow_mode else (
        rls_pb2.RateLimitResponse.Code.Name(response.overall_code)
    )
    return {
        "domain": domain,
        "overall": overall,
        "descriptors": statuses,
        "note": "peeked: no quota was taken",
    }


def _answer(report: dict[str, Any]) -> dict[str, Any]:
    """The status the client would see, and the stage that decided it."""
    identity = report.get("identity", {})
    if identity.get("verdict") in ("unauthenticated", "unavailable"):
        return {"status": identity["status"], "by": "identity", "reason": identity.get("reason")}
    check = report.get("check_response")
    if check is not None and check["http_status"] != 200:
        policy = report.get("policy", {})
        return {"status": check["http_status"], "by": "policy", "path": policy.get("path")}
    ratelimit = report.get("ratelimit")
    if ratelimit is not None and ratelimit["overall"] == "OVER_LIMIT":
        over = [d["rule"] for d in ratelimit["descriptors"] if d["code"] == "OVER_LIMIT"]
        return {"status": 429, "by": "ratelimit", "rules": over}
    return {"status": 200, "by": None}


# -- human-readable -----------------------------------------------------------------------


def render_text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    req = report["request"]
    lines.append(f"request   {req['method']} {req['host']}{req['path']}")
    if req["context_extensions"]:
        lines.append(f"          context_extensions {req['context_extensions']}")
    identity = report.get("identity")
    if identity is not None:
        lines.append("")
        lines.append(f"identity  source: {identity.get('source') or '(none claimed it)'}")
        lines.append(f"          verdict: {identity['verdict']}")
        if "reason" in identity:
            lines.append(f"          reason: {identity['reason']}  -> {identity['status']}")
        if "identity" in identity:
            who = identity["identity"]
            lines.append(
                f"          subject={who.get('subject')!r} consumer={who.get('consumer')!r} "
                f"tier={who.get('tier')!r} roles={who.get('roles')} scopes={who.get('scopes')}"
            )
    policy = report.get("policy")
    if policy is not None:
        lines.append("")
        lines.append(f"policy    {policy['path']}")
        if "input_error" in policy:
            lines.append(f"          input error: {policy['input_error']} -> 400")
        if "error" in policy:
            lines.append(f"          error: {policy['error']}")
        if "result" in policy:
            lines.append(f"          result: {json.dumps(policy['result'])}")
            lines.append(f"          allowed: {policy.get('allowed')}")
        for rule, value in policy.get("rules", {}).items():
            lines.append(f"          {rule} = {json.dumps(value)}")
    check = report.get("check_response")
    if check is not None:
        lines.append("")
        lines.append(f"envoy     CheckResponse -> HTTP {check['http_status']}")
        for key in ("ok_response", "denied_response", "dynamic_metadata"):
            if key in check:
                lines.append(f"          {key}: {json.dumps(check[key], sort_keys=True)}")
    ratelimit = report.get("ratelimit")
    if ratelimit is not None:
        lines.append("")
        lines.append(f"ratelimit domain {ratelimit['domain']}: {ratelimit['overall']} (peeked)")
        for item in ratelimit["descriptors"]:
            entries = ", ".join(f"{e['key']}={e['value']}" for e in item["descriptor"])
            line = f"          [{entries}] rule={item['rule']} {item['code']}"
            if "limit" in item:
                limit = item["limit"]
                line += (
                    f" limit={limit['requests_per_unit']}/{limit['unit']} "
                    f"remaining={item['remaining']} reset={item['reset_s']}s"
                )
            lines.append(line)
    answer = report["answer"]
    lines.append("")
    by = f" (decided by {answer['by']})" if answer.get("by") else ""
    lines.append(f"answer    HTTP {answer['status']}{by}")
    return "\n".join(lines) + "\n"


def request_from_json(body: Any) -> tuple[Any, list[list[tuple[str, str]]] | None, str | None]:
    """``POST /debug/explain``'s body: {method, url, headers, body, context_extensions,
    descriptors, domain}, or {check_request: <protojson>, descriptors, domain}."""
    if not isinstance(body, dict):
        raise ExplainError("the body must be a JSON object")
    if "check_request" in body:
        request = check_request_from_json(json.dumps(body["check_request"]))
    else:
        headers = body.get("headers") or {}
        pairs = headers.items() if isinstance(headers, dict) else headers
        try:
            request = check_request(
                ExplainRequest(
                    method=str(body.get("method", "GET")),
                    url=str(body.get("url", "/")),
                    headers=[(str(k).lower(), str(v)) for k, v in pairs],
                    body=str(body.get("body", "")),
                    context_extensions={
                        str(k): str(v) for k, v in (body.get("context_extensions") or {}).items()
                    },
                )
            )
        except (TypeError, ValueError) as exc:
            raise ExplainError(f"cannot read the request: {exc}") from None
    descriptors = None
    if body.get("descriptors"):
        descriptors = []
        for item in body["descriptors"]:
            if isinstance(item, str):
                descriptors.append(parse_descriptor(item))
            elif isinstance(item, list):
                descriptors.append([(str(e["key"]), str(e["value"])) for e in item])
            else:
                raise ExplainError("a descriptor is 'k=v,k=v' or [{key, value}, ...]")
    domain = body.get("domain")
    return request, descriptors, None if domain is None else str(domain)
