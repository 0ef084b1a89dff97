"""Building CheckResponses: OK with header mutations, Denied with status/headers/body."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption, QueryParameter
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckResponse,
    DeniedHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.wrappers_pb2 import BoolValue
from google.rpc import code_pb2, status_pb2

from sidegate.extauthz.identity.base import UpstreamMutations
from sidegate.extauthz.policy.decision import Decision

_OVERWRITE = BoolValue(value=False)
_APPEND = BoolValue(value=True)


def header_options(
    headers: Iterable[tuple[str, str]], *, append: bool = False, repeats_append: bool = True
) -> list[HeaderValueOption]:
    """One HeaderValueOption per (name, value), ``append`` always set explicitly.

    Envoy versions disagree on what an unset ``append`` means (envoy#43310), so it is never
    left unset. On an OK response a repeated name with ``append=False`` on the first and True
    on the rest keeps every value. A denied response is different (``repeats_append=False``):
    Envoy removes each overwrite-header's existing values, then adds every value it was given,
    and drops append-headers there, so all values are sent as overwrites (e.g. two Set-Cookie).
    """
    options = []
    seen: set[str] = set()
    for name, value in headers:
        key = name.lower()
        repeat = key in seen and repeats_append
        seen.add(key)
        options.append(
            HeaderValueOption(
                header=HeaderValue(key=key, value=value),
                append=_APPEND if (append or repeat) else _OVERWRITE,
            )
        )
    return options


def ok_response(
    *,
    headers: Iterable[tuple[str, str]] = (),
    headers_to_remove: Iterable[str] = (),
    response_headers_to_add: Iterable[tuple[str, str]] = (),
    query_parameters_to_set: Iterable[tuple[str, str]] = (),
    query_parameters_to_remove: Iterable[str] = (),
    dynamic_metadata: Mapping[str, Any] | None = None,
) -> CheckResponse:
    # Filled in place: nested constructors copy each message and list into its parent, and a
    # Struct built apart is copied once more (6.0 -> 4.4 µs per allowed Check, same message).
    response = CheckResponse()
    response.status.SetInParent()  # code OK (0): an empty status, present
    ok = response.ok_response
    ok.SetInParent()
    ok.headers.extend(header_options(headers))
    ok.headers_to_remove.extend(headers_to_remove)
    ok.response_headers_to_add.extend(header_options(response_headers_to_add))
    ok.query_parameters_to_set.extend(
        [QueryParameter(key=k, value=v) for k, v in query_parameters_to_set]
    )
    ok.query_parameters_to_remove.extend(query_parameters_to_remove)
    if dynamic_metadata:
        response.dynamic_metadata.update(dynamic_metadata)
    return response


def denied_response(
    http_status: int,
    *,
    grpc_code: int = code_pb2.PERMISSION_DENIED,
    headers: Iterable[tuple[str, str]] = (),
    body: str = "",
    dynamic_metadata: Mapping[str, Any] | None = None,
) -> CheckResponse:
    denied = DeniedHttpResponse(
        status=HttpStatus(code=http_status),  # type: ignore[arg-type]
        headers=header_options(headers, repeats_append=False),
        body=body,
    )
    response = CheckResponse(status=status_pb2.Status(code=grpc_code), denied_response=denied)
    if dynamic_metadata:
        response.dynamic_metadata.update(dynamic_metadata)
    return response


def decision_response(
    decision: Decision,
    metadata: Mapping[str, Any],
    *,
    upstream: UpstreamMutations | None = None,
    dry_run: bool = False,
) -> CheckResponse:
    """A policy decision as opa-envoy-plugin maps it onto a CheckResponse.

    ``metadata`` (decision_id, tier, consumer) is merged over the policy's
    ``dynamic_metadata``, except that the policy may set ``tier``/``consumer`` itself; the
    decision id is always sidegate's. ``upstream`` holds the identity stage's header changes:
    its headers win over a policy header of the same name. A dry-run deny becomes an OK with no
    policy mutations, as opa-envoy-plugin's ``dry-run`` does; identity mutations still apply
    (stripping credentials and spoofable identity headers is not a policy decision).
    """
    merged = {**metadata, **decision.dynamic_metadata, "decision_id": metadata["decision_id"]}
    upstream = upstream or UpstreamMutations()
    if decision.allowed or dry_run:
        policy_applies = decision.allowed
        own = {name.lower() for name, _ in upstream.headers}
        headers = [
            (name, value)
            for name, value in (decision.headers if policy_applies else [])
            if name.lower() not in own
        ]
        return ok_response(
            headers=[*headers, *upstream.headers],
            headers_to_remove=[
                *upstream.headers_to_remove,
                *(decision.request_headers_to_remove if policy_applies else []),
            ],
            response_headers_to_add=decision.response_headers_to_add if policy_applies else [],
            query_parameters_to_set=decision.query_parameters_to_set if policy_applies else [],
            query_parameters_to_remove=[
                *upstream.query_parameters_to_remove,
                *(decision.query_parameters_to_remove if policy_applies else []),
            ],
            dynamic_metadata=merged,
        )
    return denied_response(
        decision.http_status or 403,
        headers=decision.headers,
        body=decision.body or "",
        dynamic_metadata=merged,
    )
