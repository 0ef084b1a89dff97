"""``sidegate init DIR``: a starter deployment that runs as it is written.

DIR/sidegate.yaml   the example config, its paths pointing into DIR
DIR/policies/       the shipped Rego policies with their tests (``sidegate policy test``)
DIR/ratelimit/      the example rate-limit domains: tiers free, premium, default
DIR/api-keys.yaml   two NEW random API keys (tiers free and premium), digests only
DIR/envoy.yaml      Envoy wired to sidegate (ext_authz + rate limit)

Everything is copied from the package data (``sidegate.examples``, ``sidegate.policies``), so
the starter and the shipped examples cannot drift apart. The keys are generated here and printed
once on stdout: a starter that anyone can deploy must not accept keys published in a README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from sidegate.common.exit_codes import INPUT_ERROR, OK
from sidegate.extauthz.identity.api_keys.digest import KeyDigester, key_id, new_key
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.resources import shipped_examples, shipped_policies

# The demo consumers: their tiers are the ones examples/ratelimit/sidegate.yaml gives quotas.
STARTER_KEYS = (
    {"consumer": "demo-free", "tier": "free", "roles": ("reader",), "scopes": ("hello:read",)},
    {"consumer": "demo-premium", "tier": "premium", "roles": ("reader", "writer"),
     "scopes": ("hello:read", "hello:write")},
)
WRITTEN = ("sidegate.yaml", "envoy.yaml", "api-keys.yaml", "policies", "ratelimit")

_CONFIG_HEADER = """\
# sidegate starter deployment, written by `sidegate init`. Paths are relative to this file.
#   sidegate check-config sidegate.yaml
#   sidegate serve --config sidegate.yaml
#   envoy -c envoy.yaml --disable-hot-restart
#   curl -i -H "x-api-key: $FREE_KEY" localhost:10000/hello          # 200, tier free
#   curl -i localhost:10000/hello                                    # 401, no key
#   curl -i -H "x-api-key: $FREE_KEY" localhost:10000/admin/panel    # 403, policy
#   (6 x /hello with $FREE_KEY within a minute)                      # the 6th is 429
"""

_KEYS_HEADER = """\
# API keys of this deployment: only SHA-256 digests are stored, never the keys.
# Written by `sidegate init`, which printed the keys once. More keys:
#   sidegate keys add --consumer NAME --tier TIER --store file:api-keys.yaml
# sidegate re-reads this file when it changes.
"""


class InitError(Exception):
    pass


def _starter_config() -> str:
    """examples/sidegate.yaml, its header replaced and its policy path pointing into DIR."""
    text = (shipped_examples() / "sidegate.yaml").read_text()
    body = text.split("\nserver:", 1)
    if len(body) != 2 or "directory: ../policies" not in body[1]:
        raise InitError("the shipped examples/sidegate.yaml has an unexpected shape")
    return _CONFIG_HEADER + "server:" + body[1].replace(
        "directory: ../policies", "directory: policies"
    )


def _key_file(keys: list[tuple[str, ApiKeyRecord]]) -> str:
    entries: list[dict[str, Any]] = []
    for _, record in keys:
        entry = {"digest": record.digest, "consumer": record.consumer}
        entry.update(record.model_dump(mode="json", exclude_defaults=True))
        entries.append(entry)
    return _KEYS_HEADER + yaml.safe_dump({"keys": entries}, sort_keys=False)


def _copy_tree(source: Path, target: Path, suffixes: tuple[str, ...]) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


def write_starter(directory: Path, *, force: bool = False) -> list[tuple[str, ApiKeyRecord]]:
    """Write the starter into ``directory``; returns the new (key, record) pairs."""
    existing = [name for name in WRITTEN if (directory / name).exists()]
    if existing and not force:
        raise InitError(f"{directory}: would overwrite {', '.join(existing)} (use --force)")
    config = _starter_config()
    digester = KeyDigester()
    keys = []
    for spec in STARTER_KEYS:
        key = new_key()
        keys.append((key, ApiKeyRecord(
            digest=digester.digest(key), description=f"starter key, tier {spec['tier']}",
            **spec,
        )))
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("policies", "ratelimit"):
        if force:
            shutil.rmtree(directory / name, ignore_errors=True)
    _copy_tree(shipped_policies(), directory / "policies", (".rego", ".json", ".yaml"))
    _copy_tree(shipped_examples() / "ratelimit", directory / "ratelimit", (".yaml",))
    shutil.copyfile(shipped_examples() / "envoy.yaml", directory / "envoy.yaml")
    (directory / "sidegate.yaml").write_text(config)
    key_file = directory / "api-keys.yaml"
    key_file.write_text(_key_file(keys))
    os.chmod(key_file, 0o600)
    return keys


def _cmd_init(args: argparse.Namespace) -> int:
    try:
        keys = write_starter(args.directory, force=args.force)
    except (InitError, OSError) as exc:
        print(f"sidegate: {exc}", file=sys.stderr)
        return INPUT_ERROR
    # stdout: the keys alone, one "TIER KEY" line each (scriptable); shown only this once.
    for key, record in keys:
        print(f"{record.tier} {key}")
    config = args.directory / "sidegate.yaml"
    print(
        f"sidegate: wrote {', '.join(WRITTEN)} to {args.directory}\n"
        f"sidegate: the API keys above (tier, key) are shown only once; "
        f"{len(keys)} digests are in {args.directory / 'api-keys.yaml'} "
        f"(key_ids {', '.join(key_id(r.digest) for _, r in keys)})\n"
        f"sidegate: next: sidegate serve --config {config}  and  "
        f"envoy -c {args.directory / 'envoy.yaml'} --disable-hot-restart",
        file=sys.stderr,
    )
    return OK


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    init = subparsers.add_parser(
        "init", help="write a starter deployment (config, policies, rules, keys, envoy.yaml)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    init.add_argument("directory", type=Path, help="where to write it (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite the files init writes")
    init.set_defaults(handler=_cmd_init)
