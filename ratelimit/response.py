"""Building RateLimitResponses: per-descriptor statuses, overall code, RateLimit-* headers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.core.v3.base_pb2 import HeaderValue
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.duration_pb2 import Duration

from ratelimit.config.model import Limit

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

    def to_status(self) -> rls_pb2.RateLimitResponse.DescriptorStatus:
        status = rls_pb2.RateLimitResponse.DescriptorStatus(
            code=self.code, limit_remaining=min(self.remaining, UINT32_MAX)
        )
        if self.limit is not None:
            status.current_limit.CopyFrom(
                rls_pb2.RateLimitResponse.RateLimit(
                    name=self.limit.name,
                    requests_per_unit=self.limit.requests_per_unit,
                    unit=self.limit.unit,
                )
            )
            status.duration_until_reset.CopyFrom(Duration(seconds=self.reset_seconds))
        return status


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
