"""Every async test in this directory runs on asyncio's loop and on uvloop, the two loops
``sidegate serve`` runs on (``server.event_loop``): uvloop's transports are not asyncio's
classes, and code written against one must be shown to work on the other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
