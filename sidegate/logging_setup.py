"""structlog as JSON lines on stdout: one object per event, cheap when a level is filtered."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class _Current:
    """Whatever ``sys.stdout``/``sys.stderr`` is at each write: loggers cached on first use
    outlive a stream that a test harness swapped in and closed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()


def configure_logging(level: str = "info", *, to_stderr: bool = False) -> None:
    """JSON lines on stdout (``serve``: its logs are its output), or on stderr for the tools,
    whose stdout carries only their result."""
    stream: TextIO = _Current("stderr" if to_stderr else "stdout")  # type: ignore[assignment]
    numeric = _LEVELS[level]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        # Tools are short-lived and may run in-process (tests): bind nothing for good.
        cache_logger_on_first_use=not to_stderr,
    )
    # Libraries (grpc, aiohttp, asyncio) log through stdlib logging: keep them on stderr.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
