"""``sidegate keys``: create, list, disable, rotate and revoke API keys. Only digests are stored.

sidegate keys add --consumer acme --tier premium --store file:keys.yaml
sidegate keys list --store redis://127.0.0.1:6379/0
sidegate keys disable --key-id 4701d7a2cf1a --store file:keys.yaml
sidegate keys rotate --consumer acme --grace 7d --store file:keys.yaml
sidegate keys hash -            # reads the key from stdin, keeping it out of shell history
sidegate keys revoke --key - --store redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from sidegate.extauthz.identity.api_keys.digest import KeyDigester, key_id, new_key
from sidegate.extauthz.identity.api_keys.file_store import FileKeyStore
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.redis_store import DEFAULT_PREFIX, RedisKeyStore
from sidegate.extauthz.identity.api_keys.store import KeyStore, KeyStoreError, KeyStoreUnavailable

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_KEY_ID = re.compile(r"^[0-9a-f]{8,64}$")

# The tiers of the loaded rate-limit rules, given a sidegate config path (None: the embedded
# default); None when they cannot be known. The process registers it (sidegate/cli.py): this
# package does not import the rate-limit package.
TierLookup = Callable[[Path | None], "set[str] | None"]
_tier_lookup: TierLookup | None = None


def set_tier_lookup(lookup: TierLookup | None) -> None:
    global _tier_lookup
    _tier_lookup = lookup


class CliError(Exception):
    pass


def parse_duration(value: str, option: str) -> timedelta:
    match = _DURATION.match(value.strip())
    if not match:
        raise CliError(f"{option}: {value!r} is not a duration (30s, 15m, 12h, 7d, 2w)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_expiry(value: str, *, now: datetime | None = None) -> datetime:
    """``30d`` / ``12h`` / ``90m`` from now, or an ISO 8601 date-time (UTC when no offset)."""
    now = now or datetime.now(UTC)
    if _DURATION.match(value.strip()):
        return now + parse_duration(value, "--expires")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--expires: {value!r} is neither a duration (30d) nor ISO 8601") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def open_store(spec: str, *, prefix: str = DEFAULT_PREFIX) -> KeyStore:
    """``file:PATH`` or a Redis URL (``redis://``, ``rediss://``, ``unix://``)."""
    if spec.startswith("file:"):
        path = spec.removeprefix("file:")
        if not path:
            raise CliError("--store file: needs a path (file:keys.yaml)")
        return FileKeyStore(Path(path), reload_interval=0)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisKeyStore(spec, prefix=prefix, cache_ttl=0, negative_cache_ttl=0)
    raise CliError(f"--store: {spec!r} is neither file:PATH nor a redis:// URL")


def store_name(store: KeyStore) -> str:
    """How messages name a store: the file path, or host:port/db (never a password)."""
    if isinstance(store, FileKeyStore):
        return f"file:{store.path}"
    return getattr(store, "label", store.kind)


def _read_key(value: str) -> str:
    key = sys.stdin.readline().strip() if value == "-" else value.strip()
    if not key:
        raise CliError("empty key")
    return key


def _split(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return tuple(dict.fromkeys(out))


async def _with_store(store: KeyStore, action):  # type: ignore[no-untyped-def]
    try:
        return await action(store)
    finally:
        await store.close()


def _run(args: argparse.Namespace, action):  # type: ignore[no-untyped-def]
    return asyncio.run(_with_store(open_store(args.store, prefix=args.redis_prefix), action))


def _record(**fields) -> ApiKeyRecord:  # type: ignore[no-untyped-def]
    """A validated record; pydantic's complaint becomes one line naming the option."""
    try:
        return ApiKeyRecord(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "record"
        problem = err["msg"].removeprefix("Value error, ")
        raise CliError(f"--{field.replace('_', '-')}: {problem}") from None


def warn_unknown_tier(tier: str, config: Path | None) -> None:
    """Warn (stderr) when no loaded rate-limit rule names this tier: likely a typo, and such
    a key silently gets the default tier's quota."""
    if _tier_lookup is None:
        return
    try:
        tiers = _tier_lookup(config)
    except Exception as exc:  # the key is still valid; say why the check was skipped
        print(f"sidegate keys: warning: rate-limit tiers not checked: {exc}", file=sys.stderr)
        return
    if tiers is not None and tier not in tiers:
        known = ", ".join(sorted(tiers)) or "none"
        where = config or "the embedded default config"
        print(
            f"sidegate keys: warning: tier {tier!r} appears in no rate-limit rule of {where} "
            f"(tiers there: {known}); the key gets the default tier's quota",
            file=sys.stderr,
        )


def _future_expiry(value: str | None, now: datetime) -> datetime | None:
    if not value:
        return None
    expires_at = parse_expiry(value, now=now).replace(microsecond=0)
    if expires_at <= now:
        raise CliError(f"--expires: {expires_at.isoformat()} is in the past")
    return expires_at


def _announce(key: str, record: ApiKeyRecord, store: str, verb: str = "stored") -> None:
    # The key goes to stdout alone (scriptable); it exists nowhere else from now on.
    print(key)
    print(
        f"{verb} key_id={key_id(record.digest)} consumer={record.consumer} tier={record.tier} "
        f"in {store}; the key above is shown only once",
        file=sys.stderr,
    )


def cmd_add(args: argparse.Namespace) -> int:
    digester = KeyDigester.from_env(args.pepper_env)
    now = datetime.now(UTC)
    expires_at = _future_expiry(args.expires, now)
    key = new_key(args.key_prefix)
    record = _record(
        digest=digester.digest(key),
        consumer=args.consumer,
        tier=args.tier,
        roles=_split(args.roles),
        scopes=_split(args.scopes),
        services=_split(args.services),
        expires_at=expires_at,
        description=args.description or "",
        created_at=now.replace(microsecond=0),
    )
    store = open_store(args.store, prefix=args.redis_prefix)
    warn_unknown_tier(record.tier, args.config)
    asyncio.run(_with_store(store, lambda s: s.add(record)))
    _announce(key, record, store_name(store))
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    print(KeyDigester.from_env(args.pepper_env).digest(_read_key(args.key)))
    return 0


def _status(record: ApiKeyRecord, now: datetime) -> str:
    if record.disabled:
        return "disabled"
    if record.expired(now.timestamp()):
        return "expired"
    return "active"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def cmd_list(args: argparse.Namespace) -> int:
    records = _run(args, lambda s: s.list_records())
    if args.consumer:
        records = [r for r in records if r.consumer == args.consumer]
    records.sort(key=lambda r: (r.consumer, r.created_at or datetime.min.replace(tzinfo=UTC)))
    now = datetime.now(UTC)
    if args.json:
        for r in records:
            row = {
                "key_id": key_id(r.digest),
                "consumer": r.consumer,
                "tier": r.tier,
                "services": list(r.services),
                "created_at": _when(r.created_at) if r.created_at else None,
                "expires_at": _when(r.expires_at) if r.expires_at else None,
                "disabled": r.disabled,
                "status": _status(r, now),
            }
            print(json.dumps(row))
        return 0
    header = ("KEY_ID", "CONSUMER", "TIER", "SERVICES", "CREATED", "EXPIRES", "STATUS")
    rows = [header] + [
        (
            key_id(r.digest),
            r.consumer,
            r.tier,
            ",".join(r.services) or "*",
            _when(r.created_at),
            _when(r.expires_at),
            _status(r, now),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _select(records: list[ApiKeyRecord], args: argparse.Namespace) -> list[ApiKeyRecord]:
    """The records an operator named with --key, --digest, --key-id or --consumer."""
    if getattr(args, "key", None) is not None:
        digest = KeyDigester.from_env(args.pepper_env).digest(_read_key(args.key))
        chosen = [r for r in records if r.digest == digest]
    elif getattr(args, "digest", None) is not None:
        chosen = [r for r in records if r.digest == args.digest.strip().lower()]
    elif getattr(args, "key_id", None) is not None:
        prefix = args.key_id.strip().lower()
        if not _KEY_ID.match(prefix):
            raise CliError("--key-id: at least 8 hex digits of the digest (as keys list shows)")
        chosen = [r for r in records if r.digest.startswith(prefix)]
        if len(chosen) > 1:
            raise CliError(f"--key-id {prefix} matches {len(chosen)} keys; give more digits")
    else:
        chosen = [r for r in records if r.consumer == args.consumer]
    if not chosen:
        raise CliError("no matching key in the store")
    return chosen


def _set_disabled(disabled: bool) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        async def change(store: KeyStore) -> list[ApiKeyRecord]:
            chosen = _select(await store.list_records(), args)
            for record in chosen:
                if record.disabled != disabled:
                    await store.update(record.model_copy(update={"disabled": disabled}))
            return chosen

        verb = "disabled" if disabled else "enabled"
        for record in _run(args, change):
            kid = key_id(record.digest)
            print(f"{verb} key_id={kid} consumer={record.consumer}", file=sys.stderr)
        return 0

    return command


def cmd_rotate(args: argparse.Namespace) -> int:
    """A new key with the old key's consumer, tier, roles, scopes and services; with
    ``--grace`` the old key(s) expire that long from now (``--grace 0s``: at once)."""
    digester = KeyDigester.from_env(args.pepper_env)
    now = datetime.now(UTC)
    grace = parse_duration(args.grace, "--grace") if args.grace is not None else None
    expires_at = _future_expiry(args.expires, now)
    key = new_key(args.key_prefix)

    async def rotate(store: KeyStore) -> tuple[ApiKeyRecord, list[ApiKeyRecord]]:
        records = [r for r in await store.list_records() if r.consumer == args.consumer]
        if args.key_id:
            records = _select(records, args)
        old = [r for r in records if _status(r, now) == "active"]
        if not old:
            raise CliError(f"consumer {args.consumer!r} has no active key to rotate")
        shapes = {(r.tier, r.roles, r.scopes, r.services) for r in old}
        if len(shapes) > 1:
            ids = ", ".join(key_id(r.digest) for r in old)
            raise CliError(
                f"consumer {args.consumer!r} has active keys with different tiers, roles, "
                f"scopes or services ({ids}): pick one with --key-id"
            )
        template = old[0]
        fresh = _record(
            digest=digester.digest(key),
            consumer=template.consumer,
            tier=template.tier,
            roles=template.roles,
            scopes=template.scopes,
            services=template.services,
            expires_at=expires_at,
            description=template.description,
            created_at=now.replace(microsecond=0),
        )
        await store.add(fresh)
        if grace is not None:
            until = (now + grace).replace(microsecond=0)
            for record in old:
                if record.expires_at is None or record.expires_at > until:
                    await store.update(record.model_copy(update={"expires_at": until}))
        return fresh, old

    store = open_store(args.store, prefix=args.redis_prefix)
    fresh, old = asyncio.run(_with_store(store, rotate))
    _announce(key, fresh, store_name(store), verb="rotated: stored")
    for record in old:
        fate = (
            f"expires at {_when(now + grace)}" if grace is not None else "stays valid (no --grace)"
        )
        print(f"old key_id={key_id(record.digest)} {fate}", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if args.key is not None:
        digest = KeyDigester.from_env(args.pepper_env).digest(_read_key(args.key))
    else:
        digest = args.digest.strip().lower()
    store = open_store(args.store, prefix=args.redis_prefix)
    removed = asyncio.run(_with_store(store, lambda s: s.revoke(digest)))
    if not removed:
        print(
            f"sidegate: no key with key_id={key_id(digest)} in {store_name(store)}",
            file=sys.stderr,
        )
        return 1
    print(f"revoked key_id={key_id(digest)}", file=sys.stderr)
    return 0


def _guarded(handler):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CliError, KeyStoreError, KeyStoreUnavailable, ValueError) as exc:
            print(f"sidegate keys: {exc}", file=sys.stderr)
            return 1

    return run


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", required=True, help="file:PATH (YAML key file) or redis://HOST:PORT/DB"
    )
    parser.add_argument(
        "--redis-prefix", default=DEFAULT_PREFIX, help=f"Redis key prefix ({DEFAULT_PREFIX})"
    )


def _pepper_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pepper-env",
        metavar="NAME",
        help="environment variable holding the pepper (HMAC-SHA256 digests; same as config)",
    )


def _new_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--expires", help="30d, 12h, or an ISO 8601 date-time (not in the past)")
    parser.add_argument("--key-prefix", default="sg_", help="prefix of the generated key (sg_)")


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = subparsers.add_parser("keys", help="create, list, disable, rotate and revoke API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    add = actions.add_parser("add", help="create a random key, print it once, store its digest")
    add.add_argument("--consumer", required=True)
    add.add_argument("--tier", required=True)
    add.add_argument("--roles", nargs="+", metavar="ROLE", help="space or comma separated")
    add.add_argument("--scopes", nargs="+", metavar="SCOPE")
    add.add_argument("--services", nargs="+", metavar="SERVICE", help="default: every service")
    add.add_argument("--description", help="free text, stored beside the digest")
    add.add_argument(
        "--config",
        type=Path,
        help="sidegate config whose rate-limit rules should know the tier (default: embedded)",
    )
    _new_key_options(add)
    _store_options(add)
    _pepper_option(add)
    add.set_defaults(handler=_guarded(cmd_add))

    list_ = actions.add_parser("list", help="the stored keys (never the keys themselves)")
    list_.add_argument("--consumer", help="only this consumer's keys")
    list_.add_argument("--json", action="store_true", help="one JSON object per line")
    _store_options(list_)
    list_.set_defaults(handler=_guarded(cmd_list))

    for name, disabled in (("disable", True), ("enable", False)):
        toggle = actions.add_parser(name, help=f"{name} keys without deleting them")
        which = toggle.add_mutually_exclusive_group(required=True)
        which.add_argument("--key", help="the key ('-' reads stdin)")
        which.add_argument("--digest", help="the key's digest")
        which.add_argument("--key-id", help="the key_id (digest prefix, 8+ hex) keys list shows")
        which.add_argument("--consumer", help="every key of this consumer")
        _store_options(toggle)
        _pepper_option(toggle)
        toggle.set_defaults(handler=_guarded(_set_disabled(disabled)))

    rotate = actions.add_parser(
        "rotate", help="issue a new key for a consumer; optionally expire the old one(s)"
    )
    rotate.add_argument("--consumer", required=True)
    rotate.add_argument("--key-id", help="rotate this key of the consumer (if it has several)")
    rotate.add_argument(
        "--grace",
        metavar="DURATION",
        help="the old key(s) expire this long from now (15m, 7d; 0s: at once); "
        "default: they stay valid until revoked",
    )
    _new_key_options(rotate)
    _store_options(rotate)
    _pepper_option(rotate)
    rotate.set_defaults(handler=_guarded(cmd_rotate))

    hash_ = actions.add_parser("hash", help="print the digest of a key ('-' reads stdin)")
    hash_.add_argument("key")
    _pepper_option(hash_)
    hash_.set_defaults(handler=_guarded(cmd_hash))

    revoke = actions.add_parser("revoke", help="remove a key from a store")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="the key ('-' reads stdin)")
    which.add_argument("--digest", help="the key's digest (sidegate keys hash)")
    _store_options(revoke)
    _pepper_option(revoke)
    revoke.set_defaults(handler=_guarded(cmd_revoke))
