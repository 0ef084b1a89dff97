"""The rate-limit descriptors Envoy would send for a route, read from its config.

For ``sidegate explain --envoy envoy.yaml --route NAME``: the route (by its ``name``, else by
its match's prefix or path) and the domain of the rate-limit filter are looked up, and each
``rate_limits`` entry's actions are applied the way Envoy's router applies them
(``source/common/router/router_ratelimit.cc``): an entry whose action yields nothing produces no
descriptor. ``metadata`` actions read the dynamic metadata of sidegate's CheckResponse (Envoy's
``envoy.filters.http.ext_authz`` namespace). Supported actions: ``generic_key``,
``request_headers``, ``remote_address``, ``destination_cluster``, ``source_cluster``,
``header_value_match`` (exact, prefix, suffix, contains and present matchers), ``metadata`` /
``dynamic_metadata``; others are named in an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidegate.explain import METADATA_NAMESPACE, ExplainError

_HCM = "envoy.filters.network.http_connection_manager"
_RATELIMIT_FILTER = "envoy.filters.http.ratelimit"


@dataclass
class EnvoyRoute:
    name: str
    route: dict[str, Any]
    rate_limits: list[dict[str, Any]]
    domain: str | None

    @classmethod
    def load(cls, path: Path, wanted: str) -> EnvoyRoute:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ExplainError(f"{path}: cannot read the Envoy config: {exc}") from None
        seen: list[str] = []
        for manager in _managers(config):
            domain = _ratelimit_domain(manager)
            for host in manager.get("route_config", {}).get("virtual_hosts", []):
                for route in host.get("routes", []):
                    label = _label(route)
                    seen.append(label)
                    if wanted in (route.get("name"), label):
                        limits = route.get("route", {}).get("rate_limits") or host.get(
                            "rate_limits", []
                        )
                        return cls(label, route, list(limits), domain)
        raise ExplainError(
            f"{path}: no route named or matching {wanted!r} (routes: {', '.join(seen)})"
        )

    def descriptors(self, request: Any, metadata: dict[str, str]) -> list[list[tuple[str, str]]]:
        out = []
        for entry in self.rate_limits:
            entries = []
            for action in entry.get("actions", []):
                produced = self._apply(action, request, metadata)
                if produced is None:
                    entries = None
                    break
                entries.append(produced)
            if entries:
                out.append(entries)
        return out

    def _apply(
        self, action: dict[str, Any], request: Any, metadata: dict[str, str]
    ) -> tuple[str, str] | None:
        (kind, spec), = action.items()
        spec = spec or {}
        http = request.attributes.request.http
        headers = {k.lower(): v for k, v in http.headers.items()}
        headers.update({":path": http.path, ":method": http.method, ":authority": http.host})
        if kind == "generic_key":
            return spec.get("descriptor_key") or "generic_key", spec["descriptor_value"]
        if kind == "request_headers":
            value = headers.get(spec["header_name"].lower())
            return None if value is None else (spec["descriptor_key"], value)
        if kind == "remote_address":
            return "remote_address", request.attributes.source.address.socket_address.address
        if kind == "destination_cluster":
            return "destination_cluster", self.route.get("route", {}).get("cluster", "")
        if kind == "source_cluster":
            return "source_cluster", "envoy"
        if kind == "header_value_match":
            matched = all(_header_matches(m, headers) for m in spec.get("headers", []))
            if matched != spec.get("expect_match", True):
                return None
            return spec.get("descriptor_key") or "header_match", spec["descriptor_value"]
        if kind in ("metadata", "dynamic_metadata"):
            key = spec.get("metadata_key", {})
            value = None
            if key.get("key") == METADATA_NAMESPACE and spec.get("source", "DYNAMIC") == "DYNAMIC":
                path = [p["key"] for p in key.get("path", [])]
                value = metadata.get(path[0]) if len(path) == 1 else None
            if value is None:
                value = spec.get("default_value")
            return None if value is None else (spec["descriptor_key"], value)
        raise ExplainError(f"route {self.name}: rate-limit action {kind!r} is not supported")


def _managers(config: Any) -> list[dict[str, Any]]:
    found = []
    for listener in (config or {}).get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                if network_filter.get("name") == _HCM:
                    found.append(network_filter.get("typed_config", {}))
    return found


def _ratelimit_domain(manager: dict[str, Any]) -> str | None:
    for http_filter in manager.get("http_filters", []):
        if http_filter.get("name") == _RATELIMIT_FILTER:
            return http_filter.get("typed_config", {}).get("domain")
    return None


def _label(route: dict[str, Any]) -> str:
    if route.get("name"):
        return str(route["name"])
    match = route.get("match", {})
    for key in ("path", "prefix", "safe_regex"):
        if key in match:
            return str(match[key])
    return "?"


def _header_matches(matcher: dict[str, Any], headers: dict[str, str]) -> bool:
    value = headers.get(matcher["name"].lower())
    result: bool
    if "present_match" in matcher:
        result = (value is not None) == bool(matcher["present_match"])
    elif value is None:
        result = False
    elif "exact_match" in matcher:
        result = value == matcher["exact_match"]
    elif "prefix_match" in matcher:
        result = value.startswith(matcher["prefix_match"])
    elif "suffix_match" in matcher:
        result = value.endswith(matcher["suffix_match"])
    elif "contains_match" in matcher:
        result = matcher["contains_match"] in value
    elif "string_match" in matcher:
        rule = matcher["string_match"]
        result = (
            ("exact" not in rule or value == rule["exact"])
            and ("prefix" not in rule or value.startswith(rule["prefix"]))
            and ("suffix" not in rule or value.endswith(rule["suffix"]))
            and ("contains" not in rule or rule["contains"] in value)
        )
    else:
        raise ExplainError(f"header matcher {matcher} is not supported")
    return not result if matcher.get("invert_match") else result
