"""The values of the rules beside a decision: what ``explain`` shows as "the rules that decided".

regopy has no explanation trace, so sidegate shows the next best thing: every rule of the
decision's package (``envoy/authz/*`` for ``envoy/authz/allow``) evaluated on the same input;
the ones that held are what decided. Used by ``sidegate explain`` and ``policy eval --explain``.
"""

from __future__ import annotations

from typing import Any

from sidegate.extauthz.policy.engine import UNDEFINED, PolicyEngine, PolicyError


async def package_rule_values(
    engine: PolicyEngine, path: str, document: dict[str, Any]
) -> dict[str, Any]:
    """``{entrypoint: value}`` for the defined rules of ``path``'s package; errors as text."""
    package = path.strip("/").rpartition("/")[0]
    values: dict[str, Any] = {}
    for entrypoint in sorted(getattr(engine, "entrypoints", ())):
        if entrypoint.rpartition("/")[0] != package:
            continue
        try:
            result = await engine.evaluate(entrypoint, document)
        except PolicyError as exc:
            values[entrypoint] = f"error: {exc.reason}"
            continue
        if result.value is not UNDEFINED:
            values[entrypoint] = result.value
    return values
