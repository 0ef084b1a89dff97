"""``sidegate keys``: create, hash and revoke API keys. Only digests are ever stored.

sidegate keys add --consumer acme --tier premium --store file:keys.yaml
sidegate keys hash -            # reads the key from stdin, keeping it out of shell history
sidegate keys revoke --key - --store redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sidegate.extauthz.identity.api_keys.digest import KeyDigester, key_id, new_key
from sidegate.extauthz.identity.api_keys.file_store import FileKeyStore
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.redis_store import DEFAULT_PREFIX, RedisKeyStore
from sidegate.extauthz.identity.api_keys.store import KeyStore, KeyStoreError, KeyStoreUnavailable

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class CliError(Exception):
    pass


def parse_expiry(value: str, *, now: datetime | None = None) -> datetime:
    """``30d`` / ``12h`` / ``90m`` from now, or an ISO 8601 date-time (UTC when no offset)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(value.strip())
    if match:
        return now + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
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


def cmd_add(args: argparse.Namespace) -> int:
    digester = KeyDigester.from_env(args.pepper_env)
    key = new_key(args.key_prefix)
    record = ApiKeyRecord(
        digest=digester.digest(key),
        consumer=args.consumer,
        tier=args.tier,
        roles=_split(args.roles),
        scopes=_split(args.scopes),
        services=_split(args.services),
        expires_at=parse_expiry(args.expires) if args.expires else None,
        description=args.description or "",
    )
    store = open_store(args.store, prefix=args.redis_prefix)
    asyncio.run(_with_store(store, lambda s: s.add(record)))
    # The key goes to stdout alone (scriptable); it exists nowhere else from now on.
    print(key)
    print(
        f"stored key_id={key_id(record.digest)} consumer={record.consumer} tier={record.tier} "
        f"in {args.store}; the key above is shown only once",
        file=sys.stderr,
    )
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    print(KeyDigester.from_env(args.pepper_env).digest(_read_key(args.key)))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if args.key is not None:
        digest = KeyDigester.from_env(args.pepper_env).digest(_read_key(args.key))
    else:
        digest = args.digest.strip().lower()
    store = open_store(args.store, prefix=args.redis_prefix)
    removed = asyncio.run(_with_store(store, lambda s: s.revoke(digest)))
    if not removed:
        print(f"sidegate: no key with key_id={key_id(digest)} in {args.store}", file=sys.stderr)
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


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = subparsers.add_parser("keys", help="create, hash and revoke API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    add = actions.add_parser("add", help="create a random key, print it once, store its digest")
    add.add_argument("--consumer", required=True)
    add.add_argument("--tier", required=True)
    add.add_argument("--roles", nargs="+", metavar="ROLE", help="space or comma separated")
    add.add_argument("--scopes", nargs="+", metavar="SCOPE")
    add.add_argument("--services", nargs="+", metavar="SERVICE", help="default: every service")
    add.add_argument("--expires", help="30d, 12h, or an ISO 8601 date-time")
    add.add_argument("--description", help="free text, stored beside the digest")
    add.add_argument("--key-prefix", default="sg_", help="prefix of the generated key (sg_)")
    _store_options(add)
    _pepper_option(add)
    add.set_defaults(handler=_guarded(cmd_add))

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
