"""Reloading the rule set: the shared file watcher over the rules directory, the shared reloader.

Rule files are read and parsed in a worker thread (``Reloader``); the new RuleSet is swapped in
on the loop. A Kubernetes ConfigMap's ``..data`` symlink swap is seen by the common fingerprint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from sidegate.common.file_watcher import FileWatcher
from sidegate.common.reloading import Reloader
from sidegate.ratelimit import metrics
from sidegate.ratelimit.config.errors import RuleConfigError
from sidegate.ratelimit.config.loader import RULE_SUFFIXES, load_from_settings
from sidegate.ratelimit.config.model import RuleSet

if TYPE_CHECKING:
    from sidegate.ratelimit.service import RateLimitService

log = structlog.get_logger("sidegate.ratelimit")

COMPONENT = "ratelimit_rules"


def rule_watcher(
    directory: Path, on_change: Callable[[], Awaitable[object]], interval: float
) -> FileWatcher:
    return FileWatcher(COMPONENT, directory, on_change, interval=interval, suffixes=RULE_SUFFIXES)


def rule_reloader(service: RateLimitService) -> Reloader[RuleSet]:
    def prepare() -> RuleSet:
        try:
            return load_from_settings(service.settings)
        except RuleConfigError as exc:
            metrics.CONFIG_LOADS.labels("error").inc()
            log.error("ratelimit_reload_failed", error=str(exc))
            raise

    return Reloader(COMPONENT, str(service.settings.rules_dir), prepare, service.install_rules)
