"""One way to reload a component: prepare in a worker thread, install on the loop, never escape.

Each reloadable part (policy bundle, rule set, key file, static JWT keys) owns one ``Reloader``;
its watcher and SIGHUP both go through it, so two reloads of one part never overlap. Reading,
parsing and compiling run in a worker thread (a 20k-key file or a large policy bundle must not
stall the request path); installing the result is a reference swap on the loop. Any exception,
RecursionError and MemoryError included, is a failed reload: logged at warning with the file,
counted, the running version kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from prometheus_client import Counter

log = structlog.get_logger("sidegate.reload")

T = TypeVar("T")

RELOADS = Counter(
    "sidegate_reloads_total",
    "Reloads by component, trigger (watch, sighup, config) and result (success, failure)",
    ["component", "trigger", "result"],
)

SUCCESS = "success"
FAILURE = "failure"


@dataclass(slots=True)
class ReloadState:
    """What health reports about a component's files."""

    last_result: str | None = None  # None: never reloaded since start
    last_error: str | None = None
    last_success_at: float | None = None
    last_failure_at: float | None = None
    reloads: int = 0


class Reloader(Generic[T]):
    """``prepare`` (worker thread) returns the new version or raises; a ``False`` result is a
    failure the component already logged. ``install`` (loop) swaps it in."""

    def __init__(
        self,
        component: str,
        source: str,
        prepare: Callable[[], T],
        install: Callable[[T], Any] | None = None,
    ) -> None:
        self.component = component
        self.source = source
        self.prepare = prepare
        self.install = install
        self.state = ReloadState()
        self._lock: asyncio.Lock | None = None

    async def run(self, trigger: str = "watch") -> bool:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                prepared = await asyncio.to_thread(self.prepare)
                if prepared is False:
                    return self._failed(trigger, "rejected (see the previous log line)")
                if self.install is not None:
                    self.install(prepared)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RecursionError, MemoryError: still only a failed reload
                return self._failed(trigger, _describe(exc))
            self.state.last_result = SUCCESS
            self.state.last_error = None
            self.state.last_success_at = time.time()
            self.state.reloads += 1
            RELOADS.labels(self.component, trigger, SUCCESS).inc()
            return True

    def _failed(self, trigger: str, error: str) -> bool:
        self.state.last_result = FAILURE
        self.state.last_error = error
        self.state.last_failure_at = time.time()
        self.state.reloads += 1
        RELOADS.labels(self.component, trigger, FAILURE).inc()
        log.warning(
            "reload_failed",
            component=self.component,
            file=self.source,
            trigger=trigger,
            error=error,
            kept="previous version",
        )
        return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to process (RecursionError)"
    text = str(exc) or type(exc).__name__
    # Error texts name files and lines; a runaway one must not flood the log line.
    return text if len(text) <= 2000 else text[:2000] + "…"
