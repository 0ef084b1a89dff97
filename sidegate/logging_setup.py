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


class _Current:
    """Whatever ``sys.stdout``/``sys.stderr`` is at each write: loggers cached on first use
    outlive a stream that a test harness swapped in and closed. Rendered lines are bytes
    (orjson), written to the stream's binary buffer, or decoded for a text-only stream (a
    test's capture)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, data: bytes | str) -> int:
        stream = getattr(sys, self.name)
        if isinstance(data, bytes):
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                return int(buffer.write(data))
            data = data.decode()
        return int(stream.write(data))

    def flush(self) -> None:
        getattr(sys, self.name).flush()


def configure_logging(
    level: str = "info", allowed_sample_rate: float = 1.0, *, to_stderr: bool = False
) -> None:
    """JSON lines on stdout (``serve``: its logs are its output), or on stderr for the tools,
    whose stdout carries only their result."""
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
    processors.append(structlog.processors.JSONRenderer(serializer=_dumps))
    factory = structlog.BytesLoggerFactory(_Current("stderr" if to_stderr else "stdout"))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        # Tools are short-lived and may run in-process (tests): bind nothing for good.
        cache_logger_on_first_use=not to_stderr,
    )
    # Libraries (grpc, aiohttp, asyncio) log through stdlib logging: keep them on stderr.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
