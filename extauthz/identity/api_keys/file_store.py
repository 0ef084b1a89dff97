"""API keys from a YAML file, reloaded when it changes; a bad file keeps the previous set.

File shape::

    keys:
      - digest: <64 hex>          # sidegate keys hash KEY
        consumer: acme
        tier: premium
        roles: [reader]
        scopes: [orders:read]
        services: [orders]        # optional: valid only for these route services
        expires_at: 2030-01-01T00:00:00Z
        disabled: false
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import ValidationError

from sidegate.common.file_watcher import FileWatcher, Fingerprint, fingerprint
from sidegate.common.reloading import Reloader
from sidegate.common.yaml_loader import YamlError, load_yaml_file
from sidegate.extauthz.identity import metrics
from sidegate.extauthz.identity.api_keys.key_file_edit import (
    edit_key_file,
    find_entry,
    new_entry,
    update_entry,
)
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.store import KeyStoreError

log = structlog.get_logger("sidegate.identity.api_keys")


def parse_key_file(path: Path) -> dict[str, ApiKeyRecord]:
    """Read and validate the whole file; raise KeyStoreError rather than return a partial set."""
    try:
        loaded = load_yaml_file(path)
    except YamlError as exc:
        raise KeyStoreError(str(exc)) from None
    document = loaded.data
    if document is None:
        document = {"keys": []}
    if not isinstance(document, Mapping) or set(document) - {"keys"}:
        raise KeyStoreError(f"{path}: expected a mapping with a single 'keys' list")
    entries = document.get("keys") or []
    if not isinstance(entries, list):
        raise KeyStoreError(f"{path}: 'keys' must be a list")
    records: dict[str, ApiKeyRecord] = {}
    for index, entry in enumerate(entries):
        try:
            record = ApiKeyRecord.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}"
                for err in exc.errors()
            )
            line = loaded.line_of(("keys", index))
            raise KeyStoreError(f"{path}:{line}: keys[{index}]: {problems}") from None
        if record.digest in records:
            line = loaded.line_of(("keys", index))
            raise KeyStoreError(f"{path}:{line}: keys[{index}]: duplicate digest")
        records[record.digest] = record
    return records


def _dump(records: Iterable[ApiKeyRecord]) -> str:
    entries: list[dict[str, Any]] = []
    for record in records:
        entry = record.model_dump(mode="json", exclude_defaults=True)
        entry["digest"] = record.digest
        entry["consumer"] = record.consumer
        entries.append(entry)
    return yaml.safe_dump({"keys": entries}, sort_keys=False)


def write_key_file(path: Path, records: Iterable[ApiKeyRecord]) -> None:
    """Write a whole new file (tests, benchmarks); ``sidegate keys`` edits in place instead.

    Replaces the file atomically (temp file + rename), so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(_dump(records))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class FileKeyStore:
    """Holds the parsed file in memory; lookups are a dict access by digest.

    Reloads (the shared file watcher, SIGHUP) parse in a worker thread through one Reloader
    and swap the dict on the loop; a bad or missing file keeps the previous set.
    """

    kind = "file"

    def __init__(self, path: Path, *, reload_interval: float = 2.0) -> None:
        self.path = path
        self.reload_interval = reload_interval
        self._records: dict[str, ApiKeyRecord] = {}
        self._loaded = False
        self._baseline: Fingerprint | None = None
        self.watcher: FileWatcher | None = None
        self.reloader: Reloader[dict[str, ApiKeyRecord]] = Reloader(
            "api_key_file", str(path), self._parse_for_reload, self._install
        )

    @property
    def size(self) -> int:
        return len(self._records)

    def load(self) -> None:
        """Initial load: a bad file is fatal here (startup must name the problem)."""
        baseline = fingerprint(self.path)
        if not baseline:
            raise KeyStoreError(f"{self.path}: API key file does not exist")
        self._records = parse_key_file(self.path)
        self._baseline = baseline
        self._loaded = True
        metrics.API_KEYS_LOADED.labels("file").set(len(self._records))

    def _parse_for_reload(self) -> dict[str, ApiKeyRecord]:
        try:
            if not self.path.exists():
                raise KeyStoreError(f"{self.path}: API key file missing")
            return parse_key_file(self.path)
        except Exception as exc:
            metrics.API_KEY_RELOADS.labels("error").inc()
            log.warning(
                "api key file rejected, keeping previous keys",
                error=str(exc)[:2000],
                keys=len(self._records),
            )
            raise

    def _install(self, records: dict[str, ApiKeyRecord]) -> None:
        # One reference swap: a concurrent lookup sees the old set or the new, never a mix.
        self._records = records
        metrics.API_KEY_RELOADS.labels("ok").inc()
        metrics.API_KEYS_LOADED.labels("file").set(len(records))
        log.info("api key file reloaded", path=str(self.path), keys=len(records))

    async def reload_async(self, trigger: str = "watch") -> bool:
        """Re-read the file off the loop; True when a new set was installed."""
        return await self.reloader.run(trigger)

    async def lookup(self, digest: str) -> ApiKeyRecord | None:
        return self._records.get(digest)

    # --- CLI writes: in-place edits that keep the file's comments and layout -------------

    def _validate_written(self, tmp: Path) -> None:
        try:
            parse_key_file(tmp)
        except KeyStoreError as exc:
            raise KeyStoreError(str(exc).replace(str(tmp), str(self.path))) from None

    async def list_records(self) -> list[ApiKeyRecord]:
        return list(parse_key_file(self.path).values()) if self.path.exists() else []

    async def add(self, record: ApiKeyRecord) -> None:
        records = parse_key_file(self.path) if self.path.exists() else {}
        if record.digest in records:
            raise KeyStoreError(f"{self.path}: a key with this digest already exists")
        entry = new_entry(record)
        edit_key_file(self.path, lambda keys: keys.append(entry), self._validate_written)

    async def update(self, record: ApiKeyRecord) -> None:
        """Replace the stored record with the same digest (disable, enable, expire)."""

        def change(keys: Any) -> None:
            index = find_entry(keys, record.digest)
            if index is None:
                raise KeyStoreError(f"{self.path}: no key with key_id={record.digest[:12]}")
            update_entry(keys[index], record)

        parse_key_file(self.path)  # refuse to edit a file the server would reject
        edit_key_file(self.path, change, self._validate_written)

    async def revoke(self, digest: str) -> bool:
        if not self.path.exists() or digest not in parse_key_file(self.path):
            return False

        def change(keys: Any) -> None:
            index = find_entry(keys, digest)
            if index is not None:
                del keys[index]

        edit_key_file(self.path, change, self._validate_written)
        return True

    def debug_state(self) -> dict[str, object]:
        return {"type": "file", "path": str(self.path), "keys": len(self._records)}

    async def start(self) -> None:
        if not self._loaded:
            self.load()
        if self.reload_interval > 0 and self.watcher is None:
            self.watcher = FileWatcher(
                "api_key_file", self.path, self.reload_async, interval=self.reload_interval
            )
            self.watcher.start(self._baseline)

    async def close(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            await watcher.stop()
