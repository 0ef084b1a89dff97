"""Editing a YAML key file in place for the CLI: comments, order and layout survive.

``ruamel.yaml``'s round-trip mode keeps comments, key order, flow lists and quoting of the
entries it is not asked to change, and the file's indentation is guessed and reused. Only
``sidegate keys`` writes through here; the serving process reads with the strict loader in
``file_store.parse_key_file``, which also checks every result before it replaces the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.store import KeyStoreError

T = TypeVar("T")
# entry keys in the order a new entry is written (the order of examples/api-keys.yaml)
_FIELD_ORDER = (
    "digest", "consumer", "tier", "roles", "scopes", "services",
    "expires_at", "disabled", "created_at", "description",
)  # fmt: skip
_LISTS = ("roles", "scopes", "services")
_HEADER = "# API keys (digests only): see `sidegate keys --help`.\n"


def entry_fields(record: ApiKeyRecord) -> dict[str, Any]:
    """What a record writes: every non-default field, times as ISO 8601 strings."""
    data = record.model_dump(mode="json", exclude_defaults=True)
    data["digest"], data["consumer"] = record.digest, record.consumer
    return {name: data[name] for name in _FIELD_ORDER if name in data}


def _value(name: str, value: Any) -> Any:
    if name in _LISTS:
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()  # [a, b], as written by hand
        return seq
    return value


def new_entry(record: ApiKeyRecord) -> CommentedMap:
    entry = CommentedMap()
    for name, value in entry_fields(record).items():
        entry[name] = _value(name, value)
    return entry


def update_entry(entry: CommentedMap, record: ApiKeyRecord) -> None:
    """Rewrite only the fields whose *meaning* changed; the others keep their spelling
    (an unquoted timestamp stays unquoted, ``tier: default`` stays) and their comments."""
    current = ApiKeyRecord.model_validate({k: _plain(v) for k, v in entry.items()})
    wanted = entry_fields(record)
    for name in _FIELD_ORDER:
        if name == "digest" or getattr(current, name) == getattr(record, name):
            continue
        if name not in wanted:
            entry.pop(name, None)
        elif name in entry:
            entry[name] = _value(name, wanted[name])
        else:
            position = sum(1 for k in entry if k in _FIELD_ORDER and _before(k, name))
            entry.insert(position, name, _value(name, wanted[name]))


def _before(a: str, b: str) -> bool:
    return _FIELD_ORDER.index(a) < _FIELD_ORDER.index(b)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def find_entry(entries: CommentedSeq, digest: str) -> int | None:
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and str(entry.get("digest", "")).strip().lower() == digest:
            return index
    return None


def _load(path: Path) -> tuple[YAML, Any]:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    if not path.exists() or not path.read_text().strip():
        document = CommentedMap()
        document["keys"] = CommentedSeq()
        document.yaml_set_start_comment(_HEADER.strip("# \n"))
        yaml.indent(mapping=2, sequence=4, offset=2)
        return yaml, document
    try:
        document, indent, block_seq_indent = load_yaml_guess_indent(path.read_text())
    except YAMLError as exc:
        raise KeyStoreError(f"{path}: invalid YAML: {exc}") from None
    # guessed: the column of an entry's keys (indent) and of its dash (offset)
    offset = block_seq_indent or 0
    indent = max(indent or 2, offset + 2)
    yaml.indent(mapping=max(2, indent - offset), sequence=indent, offset=offset)
    if document.get("keys") is None:
        document["keys"] = CommentedSeq()
    return yaml, document


def edit_key_file(
    path: Path, change: Callable[[CommentedSeq], T], validate: Callable[[Path], object]
) -> T:
    """Apply ``change`` to the file's ``keys`` list and replace the file atomically.

    The new text is written to a temporary file beside it, ``validate``d (the serving
    process's own parser), fsynced, then renamed over the file; the file's mode is kept
    (0600 for a new file). A change that would leave an invalid file raises and writes nothing.
    """
    yaml, document = _load(path)
    result = change(document["keys"])
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        validate(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return result
