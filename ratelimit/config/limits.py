"""Parsing a ``rate_limit`` map (envoyproxy/ratelimit fields plus sidegate's extensions)."""

from __future__ import annotations

from typing import Any

from sidegate.ratelimit.config.errors import RuleConfigError
from sidegate.ratelimit.config.model import Algorithm, Limit, Rule
from sidegate.ratelimit.config.units import (
    UNIT_ENUM,
    UNIT_SECONDS,
    parse_unit,
    parse_window_ms,
    unit_for_window_ms,
)

_UINT32_MAX = 4294967295
_ALGORITHMS = ("token_bucket", "fixed_window")


def _type_error(file: str, field: str, value: Any, expected: str) -> RuleConfigError:
    return RuleConfigError(
        file,
        f"error loading config file: yaml: cannot unmarshal {value!r} into {expected} "
        f"(field '{field}')",
    )


def _uint(file: str, raw: dict[str, Any], field: str, default: int | None) -> int | None:
    value = raw.get(field, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT32_MAX:
        raise _type_error(file, field, value, "uint32")
    return value


def _bool(file: str, raw: dict[str, Any], field: str) -> bool:
    value = raw.get(field, False)
    if not isinstance(value, bool):
        raise _type_error(file, field, value, "bool")
    return value


def _str(file: str, raw: dict[str, Any], field: str) -> str:
    value = raw.get(field, "")
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _type_error(file, field, value, "string")
    return str(value)


def _one_limit(file: str, raw: dict[str, Any], default_algorithm: Algorithm, name: str) -> Limit:
    unit_text = raw.get("unit")
    window_text = raw.get("window")
    if window_text is not None:
        if unit_text is not None:
            raise RuleConfigError(file, "should not specify both unit and window")
        window_ms = parse_window_ms(window_text)
        if window_ms is None:
            raise RuleConfigError(file, f"invalid rate limit window '{window_text}'")
        unit = unit_for_window_ms(window_ms)
    else:
        unit_name = parse_unit(unit_text)
        if unit_name is None:
            raise RuleConfigError(file, f"invalid rate limit unit '{unit_text or ''}'")
        window_ms = UNIT_SECONDS[unit_name] * 1000
        unit = UNIT_ENUM[unit_name]
    requests = _uint(file, raw, "requests_per_unit", 0) or 0
    algorithm = raw.get("algorithm", default_algorithm)
    if algorithm not in _ALGORITHMS:
        raise RuleConfigError(file, f"invalid rate limit algorithm '{algorithm}'")
    if algorithm == "fixed_window" and window_ms % 1000:
        raise RuleConfigError(file, "fixed_window needs a window of whole seconds")
    burst = _uint(file, raw, "burst", None)
    if burst is not None and algorithm != "token_bucket":
        raise RuleConfigError(file, "burst applies only to algorithm token_bucket")
    return Limit(
        requests_per_unit=requests,
        window_ms=window_ms,
        unit=unit,
        algorithm=algorithm,
        burst=requests if burst is None else burst,
        name=name,
    )


def parse_rule(
    file: str,
    raw: Any,
    *,
    default_algorithm: Algorithm,
    stat_key: str,
    shadow_mode: bool = False,
    quota_mode: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Rule:
    if not isinstance(raw, dict):
        raise _type_error(file, "rate_limit", raw, "map")
    unlimited = _bool(file, raw, "unlimited")
    name = _str(file, raw, "name")
    many = raw.get("limits")
    if unlimited:
        if parse_unit(raw.get("unit")) is not None or raw.get("window") is not None or many:
            raise RuleConfigError(file, "should not specify rate limit unit when unlimited")
        limits: tuple[Limit, ...] = ()
    elif many is not None:
        if any(field in raw for field in ("unit", "window", "requests_per_unit", "burst")):
            raise RuleConfigError(
                file, "limits replaces requests_per_unit/unit/window/burst, not both"
            )
        if not isinstance(many, list) or not many:
            raise _type_error(file, "limits", many, "non-empty list")
        limits = tuple(_one_limit(file, item, default_algorithm, name) for item in many)
        identities = [limit.identity for limit in limits]
        if len(set(identities)) != len(identities):
            raise RuleConfigError(
                file, f"duplicate limit window in '{stat_key}': one limit per algorithm and window"
            )
    else:
        limits = (_one_limit(file, raw, default_algorithm, name),)
    replaces_raw = raw.get("replaces") or []
    if not isinstance(replaces_raw, list):
        raise _type_error(file, "replaces", replaces_raw, "list")
    replaces = []
    for entry in replaces_raw:
        replaced = _str(file, entry, "name")
        if replaced == "":
            raise RuleConfigError(file, "should not have an empty replaces entry")
        if replaced == name:
            raise RuleConfigError(file, "replaces should not contain name of same descriptor")
        replaces.append(replaced)
    return Rule(
        limits=limits,
        unlimited=unlimited,
        name=name,
        replaces=tuple(replaces),
        shadow_mode=shadow_mode,
        quota_mode=quota_mode,
        stat_key=stat_key,
        metadata=metadata,
    )
