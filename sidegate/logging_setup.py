"""structlog as JSON lines on stdout: one object per event, cheap when a level is filtered.

The decision lines (one per Check and per ShouldRateLimit) are the request path's biggest
logging cost, so the chain is kept short and rendered with orjson (measured: ~46 → ~16-32 µs
per decision line, bench/README.md). ``server.log_allowed_sample_rate`` keeps only that share
of the *allowed* decision lines; denials, over-limit answers and errors are always logged.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

# event name -> (field, value) that marks the line as an allowed decision (the sampled kind)
_ALLOWED_LINES = {"check": ("decision", "allowed"), "should_rate_limit": ("code", "ok")}


def _dumps(value: Any, **kwargs: Any) -> bytes:
    try:
        return orjson.dumps(value, default=kwargs.get("default"))
    except (orjson.JSONEncodeError, TypeError):
        # orjson refuses what json accepts (integers over 64 bits, non-str keys): a log line
        # must never fail the call that writes it.
        return json.dumps(value, default=kwargs.get("default", repr)).encode()


class AllowedLineSampler:
    """Drops all but ``rate`` of the allowed decision lines (a structlog processor)."""

    def __init__(self, rate: float, draw: Any = random.random) -> None:
        self.rate = rate
        self._draw = draw

    def __call__(self, logger: Any, method: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        marker = _ALLOWED_LINES.get(event.get("event"))  # type: ignore[arg-type]
        if marker is None or event.get(marker[0]) != marker[1]:
            return event
        if self._draw() >= self.rate:
            raise structlog.DropEvent
        event["sample_rate"] = self.rate
        return event


def configure_logging(level: str = "info", allowed_sample_rate: float = 1.0) -> None:
    numeric = _LEVELS[level]
    processors: list[Any] = []
    if allowed_sample_rate < 1.0:
        # first, so a dropped line costs no timestamp and no rendering
        processors.append(AllowedLineSampler(allowed_sample_rate))
    processors += [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    binary = getattr(sys.stdout, "buffer", None)
    factory: Any
    if binary is not None:
        processors.append(structlog.processors.JSONRenderer(serializer=_dumps))
        factory = structlog.BytesLoggerFactory(binary)
    else:  # a text-only stdout (a test's capture): the same lines as text
        processors.append(structlog.processors.JSONRenderer(
            serializer=lambda value, **kw: _dumps(value, **kw).decode()))
        factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries (grpc, aiohttp, asyncio) log through stdlib logging: keep them on stderr.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
