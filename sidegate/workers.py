"""``server.workers: N``: N serving processes on one gRPC address, one event loop each.

The Python service is CPU-bound on one core per process (regopy holds the GIL while it
evaluates), so more cores need more processes. The supervisor (the ``sidegate serve`` the
user started) launches N workers, each a fresh ``sidegate serve`` of the same config marked
by ``SIDEGATE_WORKER_INDEX``; they bind ``grpc_address`` with SO_REUSEPORT, so the kernel
spreads incoming connections between them. Fresh interpreters, not ``fork``: gRPC's core
threads do not survive a fork. Worker 0 also serves the admin address (health, readiness,
metrics of that worker). SIGTERM/SIGINT/SIGHUP are forwarded to every worker; a worker that
exits on its own stops the others (the supervisor exits non-zero, for systemd or Kubernetes
to restart it): a half-running sidegate would answer some connections and not others.

Quotas stay exact because the config refuses N > 1 with in-memory buckets (settings.py):
with Redis every worker takes from the same buckets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORKER_ENV = "SIDEGATE_WORKER_INDEX"
_POLL_S = 0.1


def worker_index() -> int | None:
    """This process's worker number, or None when it is not a worker of a supervisor."""
    value = os.environ.get(WORKER_ENV, "")
    return int(value) if value.isdigit() else None


def serves_admin() -> bool:
    return worker_index() in (None, 0)


def run_workers(
    config_path: Path | None, count: int, grace_period_s: float, flags: Sequence[str] = ()
) -> int:
    """Start ``count`` workers and supervise them until they have all exited."""
    argv = [sys.executable, "-m", "sidegate", "serve", *flags]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            env = {**os.environ, WORKER_ENV: str(index)}
            workers.append(subprocess.Popen(argv, env=env))
        return _supervise(workers, received, grace_period_s)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(workers: list[subprocess.Popen[bytes]], received: list[int],
               grace_period_s: float) -> int:
    stopping_since: float | None = None
    failed = False
    while True:
        while received:
            signum = received.pop(0)
            if signum == signal.SIGHUP:
                _send(workers, signal.SIGHUP)
            elif stopping_since is None:
                stopping_since = time.monotonic()
                _send(workers, signal.SIGTERM)
        codes = [w.poll() for w in workers]
        if all(code is not None for code in codes):
            if failed or any(codes):
                return next((c for c in codes if c), 1)
            return 0
        if stopping_since is None and any(code is not None for code in codes):
            # A worker stopped by itself (crash, start-up error): stop them all.
            failed = True
            print(f"sidegate: worker exited with {codes}; stopping the others", file=sys.stderr)
            stopping_since = time.monotonic()
            _send(workers, signal.SIGTERM)
        if stopping_since is not None and time.monotonic() - stopping_since > grace_period_s + 5:
            _send(workers, signal.SIGKILL)
            failed = True
        time.sleep(_POLL_S)


def _send(workers: list[subprocess.Popen[bytes]], signum: int) -> None:
    for worker in workers:
        if worker.poll() is None:
            try:
                worker.send_signal(signum)
            except ProcessLookupError:
                pass
