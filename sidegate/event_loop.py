"""``server.event_loop``: the asyncio event loop ``sidegate serve`` runs on (each worker its own).

uvloop (libuv) runs the same asyncio API with less CPU per callback than asyncio's own
loop; grpc.aio, aiohttp, redis.asyncio, signal handlers, executors and
``run_coroutine_threadsafe`` (the threads model's bridge) all work on it unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EventLoopUnavailable(Exception):
    """``server.event_loop: uvloop`` on a host where uvloop cannot be imported."""


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory ``asyncio.Runner`` gets for ``choice``; None is asyncio's own loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                f"server.event_loop: uvloop cannot be imported ({exc}); install it "
                "(pip install uvloop; not available on Windows) or set server.event_loop "
                "to auto or asyncio"
            ) from None
        return None
    return uvloop.new_event_loop


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop this coroutine runs on, for the start-up line."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.partition(".")[0] == "uvloop" else "asyncio"
