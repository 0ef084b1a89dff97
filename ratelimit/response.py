"""Building RateLimitResponses: per-descriptor statuses, overall code, RateLimit-* headers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValue
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.struct_pb2 import Struct

from sidegate.ratelimit.config.model import Limit

Code = rls_pb2.RateLimitResponse.Code
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
UINT32_MAX = 4294967295


@dataclass(slots=True)
class DescriptorOutcome:
    """What one request descriptor got; ``limit`` None means no limit applied."""

    code: int = OK
    limit: Limit | None = None
    remaining: int = 0
    reset_seconds: int = 0
    quota_mode: bool = False

    def fill(self, status: rls_pb2.RateLimitResponse.DescriptorStatus) -> None:
        """Write into a status already in the response (no temporary messages to copy)."""
        status.code = self.code  # type: ignore[assignment]
        status.limit_remaining = min(self.remaining, UINT32_MAX)
        if self.limit is not None:
            current = status.current_limit
            current.requests_per_unit = self.limit.requests_per_unit
            current.unit = self.limit.unit  # type: ignore[assignment]
            if self.limit.name:
                current.name = self.limit.name
            status.duration_until_reset.seconds = self.reset_seconds


def unlimited_outcome() -> DescriptorOutcome:
    return DescriptorOutcome(code=OK, remaining=UINT32_MAX)


def overall_code(outcomes: Sequence[DescriptorOutcome], global_quota_mode: bool) -> int:
    """OVER_LIMIT when any non-quota descriptor is over, or when every quota one is."""
    quota = [o for o in outcomes if o.quota_mode or global_quota_mode]
    if any(o.code == OVER_LIMIT for o in outcomes if not (o.quota_mode or global_quota_mode)):
        return OVER_LIMIT
    if quota and all(o.code == OVER_LIMIT for o in quota):
        return OVER_LIMIT
    return OK


def limit_headers(
    outcomes: Sequence[DescriptorOutcome],
    names: tuple[str, str, str],
    global_quota_mode: bool,
) -> list[HeaderValue]:
    """RateLimit-Limit/Remaining/Reset for the most restrictive limited descriptor.

    A non-quota OVER_LIMIT descriptor wins; otherwise the lowest remaining.
    """
    limited = [o for o in outcomes if o.limit is not None]
    if not limited:
        return []
    over = [o for o in limited if o.code == OVER_LIMIT and not (o.quota_mode or global_quota_mode)]
    chosen = over[0] if over else min(limited, key=lambda o: o.remaining)
    assert chosen.limit is not None
    limit_name, remaining_name, reset_name = names
    return [
        HeaderValue(key=limit_name, value=str(chosen.limit.requests_per_unit)),
        HeaderValue(key=remaining_name, value=str(chosen.remaining)),
        HeaderValue(key=reset_name, value=str(chosen.reset_seconds)),
    ]


def dynamic_metadata(
    request: rls_pb2.RateLimitRequest, rule_metadata: Sequence[dict[str, Any] | None]
) -> Struct:
    """envoyproxy/ratelimit's RESPONSE_DYNAMIC_METADATA document (first rule value wins)."""
    merged: dict[str, Any] = {}
    for metadata in rule_metadata:
        for key, value in (metadata or {}).items():
            merged.setdefault(key, value)
    document: dict[str, Any] = {
        "domain": request.domain,
        "descriptors": [
            {"entries": [f"{e.key}={e.value}" for e in d.entries]} for d in request.descriptors
        ],
    }
    if request.hits_addend:
        document["hitsAddend"] = request.hits_addend
    if merged:
        document["metadata"] = merged
    struct = Struct()
    struct.update(document)
    return struct
