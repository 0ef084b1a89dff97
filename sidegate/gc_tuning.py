"""Keeping Python's cyclic garbage collector off the request path's tail.

Measured under load (bench/README.md): a full (generation 2) collection walked ~90k objects —
the modules, compiled policies, protobuf descriptors and pydantic models built at start-up —
and paused the event loop for 46-60 ms every 10-20 s. Those objects live as long as the
process, so after start-up they are moved out of the collector's reach (``gc.freeze``) and
the older generations are collected less often. Every pause is observed in
``sidegate_gc_pause_seconds``, and one over 10 ms is logged (``gc_pause``).

The young threshold stays near the default: the request path leaves cyclic garbage (gRPC call
objects, futures), and with a threshold of 10,000 one young collection found ~9,800 such
objects and paused 63 ms under load; small young collections keep each pause short.
"""

from __future__ import annotations

import gc
import time

import structlog
from prometheus_client import Histogram

log = structlog.get_logger("sidegate.gc")

# gen0: objects allocated (minus freed) between young collections; default 700. gen1/gen2:
# how many younger collections trigger an older one; defaults 10/10.
THRESHOLDS = (1_000, 20, 20)
# A pause this long is logged as well as counted.
SLOW_PAUSE_S = 0.010

GC_PAUSE_SECONDS = Histogram(
    "sidegate_gc_pause_seconds",
    "Cyclic garbage collector pauses, by generation",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
_children = [GC_PAUSE_SECONDS.labels(str(g)) for g in range(3)]
# perf_counter() when the running collection started; None: unknown
_started: list[float | None] = [None]


def _observe(phase: str, info: dict[str, int]) -> None:
    try:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        if _started[0] is None:
            return
        pause = time.perf_counter() - _started[0]
        generation = info.get("generation", 2)
        _children[generation].observe(pause)
        if pause >= SLOW_PAUSE_S:
            log.warning("gc_pause", generation=generation, pause_ms=round(pause * 1000, 2),
                        collected=info.get("collected", 0))
    except RecursionError:
        # A collection can start deep in a recursive call (json.loads of a hostile body of
        # thousands of "["), with no stack left for this callback: the pause goes unobserved,
        # rather than printed as an "Exception ignored" traceback per collection.
        _started[0] = None


def tune_after_startup() -> None:
    """Call once everything long-lived (services, policies, rules) is built."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
    log.debug("gc_tuned", frozen=gc.get_freeze_count(), thresholds=THRESHOLDS)
