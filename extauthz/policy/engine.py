"""The engine contract: evaluate a decision path against an input document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sidegate.extauthz.policy.input_paths import PathTree


class _Undefined:
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Any = _Undefined()
"""The value of a decision path that produced no result (as OPA's 'undefined decision')."""


class PolicyError(Exception):
    """Evaluation failed (conflict, builtin error, engine outage). Never shown to clients."""

    def __init__(self, reason: str, *, outage: bool = False, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outage = outage
        # The metric label: evaluation, timeout, unavailable.
        self.kind = kind or ("unavailable" if outage else "evaluation")


@dataclass(slots=True)
class EvalResult:
    value: Any
    eval_seconds: float
    # Served from the embedded engine's decision cache (eval_seconds is then the lookup).
    cached: bool = False


class PolicyEngine(Protocol):
    """Evaluates ``path`` (``envoy/authz/allow``) against ``input_doc``; raises PolicyError."""

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> EvalResult: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    @property
    def input_needs(self) -> PathTree | None:
        """The input paths the engine's policies can read (see input_paths); None: all."""
        ...
