"""The one file watcher: polls a file or directory and calls back when anything in it changed.

Polling rather than inotify: it works the same on every filesystem and volume type, and a
Kubernetes ConfigMap volume swaps an ``..data`` symlink to a new timestamped directory, which
inotify on the visible paths does not report. The fingerprint follows every symlink to its
target (path, inode, size, mtime), so such a swap changes it even when sizes and times match.

The fingerprint is taken in a worker thread; the callback (a coroutine, usually a
``Reloader.run``) does its own off-loop work. Nothing the callback raises stops the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

import structlog

log = structlog.get_logger("sidegate.watch")

Entry = tuple[str, str, int, int, int]
Fingerprint = tuple[Entry, ...]


def fingerprint(root: Path, suffixes: Collection[str] | None = None) -> Fingerprint:
    """(path, real path, inode, size, mtime_ns) of ``root`` or of every file below it.

    Hidden names are skipped (a ConfigMap's ``..data`` and ``..2024_...`` entries are read
    through the visible symlinks). ``suffixes`` limits a directory walk to those file types.
    A missing root is the empty fingerprint.
    """
    entries: list[Entry] = []

    def add(path: Path) -> None:
        try:
            real = os.path.realpath(path)
            stat = os.stat(real)
        except OSError:
            return
        entries.append((str(path), real, stat.st_ino, stat.st_size, stat.st_mtime_ns))

    def walk(folder: Path, depth: int) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            if name.startswith("."):
                continue
            path = folder / name
            if os.path.isdir(path):
                if depth < 32:  # a symlink loop ends here rather than at the recursion limit
                    walk(path, depth + 1)
            elif suffixes is None or path.suffix in suffixes:
                add(path)

    if os.path.isdir(root):
        walk(root, 0)
    else:
        add(root)
    return tuple(entries)


class FileWatcher:
    """Calls ``on_change`` when the fingerprint of ``root`` changes (checked every ``interval``).

    The baseline is taken by ``start()``: load the files before starting the watcher, so a
    change made while loading is still seen as a change.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        on_change: Callable[[], Awaitable[object]],
        *,
        interval: float,
        suffixes: Collection[str] | None = None,
    ) -> None:
        self.name = name
        self.root = root
        self.on_change = on_change
        self.interval = interval
        self.suffixes = suffixes
        self._seen: Fingerprint | None = None
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, baseline: Fingerprint | None = None) -> None:
        self._seen = baseline if baseline is not None else fingerprint(self.root, self.suffixes)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> bool:
        """Poll once; True when a change was seen (the callback ran, successfully or not)."""
        current = await asyncio.to_thread(fingerprint, self.root, self.suffixes)
        self.polls += 1
        if current == self._seen:
            return False
        # Remember it either way: a bad file is reported once, not on every poll.
        self._seen = current
        log.info("files_changed", watcher=self.name, path=str(self.root))
        await self.on_change()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RecursionError, MemoryError included: keep watching
                log.warning(
                    "watch_failed",
                    watcher=self.name,
                    path=str(self.root),
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
