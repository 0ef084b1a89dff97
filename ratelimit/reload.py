"""Watching the rules directory by polling: file edits, new/removed files, ConfigMap swaps.

A Kubernetes ConfigMap volume swaps an ``..data`` symlink to a new timestamped directory; the
visible files are symlinks through it. The fingerprint follows every symlink to its target
(path, inode, size, mtime), so a swap changes it even when sizes and times match.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("sidegate.ratelimit")

Fingerprint = tuple[tuple[str, str, int, int, int], ...]


def fingerprint(directory: Path) -> Fingerprint:
    entries: list[tuple[str, str, int, int, int]] = []

    def walk(folder: Path) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            if name.startswith("."):
                continue
            path = folder / name
            try:
                real = os.path.realpath(path)
                stat = os.stat(real)
            except OSError:
                continue
            if os.path.isdir(real):
                walk(path)
                continue
            entries.append((str(path), real, stat.st_ino, stat.st_size, stat.st_mtime_ns))

    walk(directory)
    return tuple(entries)


class RuleWatcher:
    """Calls ``reload`` when the directory's fingerprint changes (checked every ``interval``)."""

    def __init__(self, directory: Path, reload: Callable[[], bool], interval: float) -> None:
        self.directory = directory
        self.reload = reload
        self.interval = interval
        self._seen = fingerprint(directory)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ratelimit-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def check(self, current: Fingerprint | None = None) -> bool:
        """Reload if anything changed; True when a reload ran (successful or not)."""
        if current is None:
            current = fingerprint(self.directory)
        if current == self._seen:
            return False
        # Remember it either way: a bad file is reported once, not on every poll.
        self._seen = current
        log.info("ratelimit_rules_changed", directory=str(self.directory))
        self.reload()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check(await asyncio.to_thread(fingerprint, self.directory))
            except Exception:  # a watcher must outlive any surprise in the filesystem
                log.exception("ratelimit_watch_failed")
