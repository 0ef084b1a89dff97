"""``sidegate keys`` list / disable / enable / rotate and the checks of ``add``, on a file store
(edited in place: comments and layout survive) and on a real Redis."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from sidegate.cli import main as sidegate_main
from sidegate.extauthz.identity.api_keys.digest import KeyDigester, key_id
from sidegate.extauthz.identity.api_keys.file_store import FileKeyStore, parse_key_file
from sidegate.extauthz.identity.api_keys.redis_store import RedisKeyStore, store_label
from sidegate.extauthz.identity.api_keys.store import KeyStoreUnavailable
from sidegate.extauthz.identity.api_keys.verifier import ApiKeyVerifier
from sidegate.extauthz.identity.base import AuthnFailure, failure_code
from tests.conftest import REPO_ROOT, free_port
from tests.identity.test_api_keys import make_view

EXAMPLE_KEYS = REPO_ROOT / "examples" / "api-keys.yaml"
FREE_KEY = "sg_demo_free_0123456789abcdef"
FREE_ID = key_id(KeyDigester().digest(FREE_KEY))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A copy of the tracked example (never edit examples/api-keys.yaml itself)."""
    path = tmp_path / "api-keys.yaml"
    shutil.copy(EXAMPLE_KEYS, path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = sidegate_main(["keys", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def verdict(path: Path, key: str) -> str:
    """'ok' or the failure code a file-store verifier gives this key."""
    store = FileKeyStore(path, reload_interval=0)
    store.load()
    try:
        await ApiKeyVerifier(store).verify(key, make_view())
    except AuthnFailure as failure:
        return failure_code(failure)
    return "ok"


# --- file store: the edits keep the file ------------------------------------------------------


def test_add_appends_and_keeps_comments_and_layout(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = key_file.read_text()
    code, out, _ = run(
        capsys, "add", "--consumer", "acme", "--tier", "premium", "--roles", "a,b",
        "--store", f"file:{key_file}",
    )  # fmt: skip
    assert code == 0
    after = key_file.read_text()
    assert after.startswith(before)  # comments, order, flow lists, indentation untouched
    added = yaml.safe_load(after[len(before) :].replace("  - ", "- ", 1).replace("\n    ", "\n  "))
    assert added[0]["consumer"] == "acme" and added[0]["roles"] == ["a", "b"]
    assert out.strip() not in after
    assert asyncio.run(verdict(key_file, out.strip())) == "ok"


def test_revoke_removes_only_that_entry(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = key_file.read_text()
    code, _, _ = run(capsys, "revoke", "--key", FREE_KEY, "--store", f"file:{key_file}")
    assert code == 0
    after = key_file.read_text()
    entry_start = before.index("  - digest: 4701")
    entry_end = before.index("  - digest: 4b13")
    assert after == before[:entry_start] + before[entry_end:]


def test_disable_then_enable_restores_the_file_exactly(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = key_file.read_text()
    assert run(capsys, "disable", "--key-id", FREE_ID, "--store", f"file:{key_file}")[0] == 0
    assert "disabled: true" in key_file.read_text()
    assert asyncio.run(verdict(key_file, FREE_KEY)) == "disabled"
    code, _, err = run(capsys, "enable", "--key", FREE_KEY, "--store", f"file:{key_file}")
    assert code == 0 and f"enabled key_id={FREE_ID}" in err
    assert key_file.read_text() == before
    assert asyncio.run(verdict(key_file, FREE_KEY)) == "ok"


def test_list_shows_everything_but_the_key(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "add", "--consumer", "acme", "--tier", "premium", "--services", "orders",
        "--expires", "30d", "--store", f"file:{key_file}",
    )  # fmt: skip
    new_key = out.strip()
    run(capsys, "disable", "--consumer", "demo-premium", "--store", f"file:{key_file}")
    code, out, _ = run(capsys, "list", "--store", f"file:{key_file}")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "KEY_ID", "CONSUMER", "TIER", "SERVICES", "CREATED", "EXPIRES", "STATUS",
    ]  # fmt: skip
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["acme"][2:4] == ["premium", "orders"] and rows["acme"][-1] == "active"
    assert rows["acme"][4].startswith(str(datetime.now(UTC).year))
    assert rows["demo-free"][2:] == ["free", "*", "-", "-", "active"]
    assert rows["demo-premium"][-1] == "disabled"
    assert new_key not in out and FREE_KEY not in out

    store = f"file:{key_file}"
    code, out, _ = run(capsys, "list", "--json", "--consumer", "acme", "--store", store)
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["key_id"] == key_id(KeyDigester().digest(new_key))
    assert (row["services"], row["disabled"], row["status"]) == (["orders"], False, "active")
    assert set(row) == {
        "key_id", "consumer", "tier", "services", "created_at", "expires_at", "disabled", "status",
    }  # fmt: skip


def test_rotate_with_grace(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "rotate", "--consumer", "demo-free", "--grace", "2h", "--store", f"file:{key_file}"
    )
    assert code == 0, err
    fresh = out.strip()
    assert fresh.startswith("sg_") and fresh not in err
    records = {r.consumer + ":" + key_id(r.digest): r for r in parse_key_file(key_file).values()}
    old = records[f"demo-free:{FREE_ID}"]
    new = records[f"demo-free:{key_id(KeyDigester().digest(fresh))}"]
    # the new key copies the old one's tier, roles and scopes
    assert (new.tier, new.roles, new.scopes) == (old.tier, old.roles, old.scopes)
    assert new.expires_at is None and new.created_at is not None
    assert old.expires_at is not None
    left = old.expires_at - datetime.now(UTC)
    assert timedelta(hours=1, minutes=50) < left <= timedelta(hours=2)
    assert asyncio.run(verdict(key_file, fresh)) == "ok"
    assert asyncio.run(verdict(key_file, FREE_KEY)) == "ok"  # still within the grace period
    assert f"old key_id={FREE_ID} expires at" in err


def test_rotate_without_grace_keeps_and_with_zero_grace_ends_the_old_key(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"file:{key_file}"
    assert run(capsys, "rotate", "--consumer", "demo-free", "--store", store)[0] == 0
    assert asyncio.run(verdict(key_file, FREE_KEY)) == "ok"
    # two active keys now, same attributes: rotating again ends both
    code, out, _ = run(
        capsys, "rotate", "--consumer", "demo-free", "--grace", "0s", "--store", store
    )
    assert code == 0
    assert asyncio.run(verdict(key_file, FREE_KEY)) == "expired"
    assert asyncio.run(verdict(key_file, out.strip())) == "ok"


def test_rotate_refusals(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"file:{key_file}"
    code, _, err = run(capsys, "rotate", "--consumer", "nobody", "--store", store)
    assert code == 1 and "no active key" in err
    run(capsys, "add", "--consumer", "demo-free", "--tier", "premium", "--store", store)
    code, _, err = run(capsys, "rotate", "--consumer", "demo-free", "--store", store)
    assert code == 1 and "--key-id" in err and FREE_ID in err
    code, out, _ = run(
        capsys, "rotate", "--consumer", "demo-free", "--key-id", FREE_ID, "--store", store
    )
    assert code == 0
    assert parse_key_file(key_file)[KeyDigester().digest(out.strip())].tier == "free"


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--tier", "", "empty"),
        ("--tier", "   ", "empty"),
        ("--consumer", " \t", "empty"),
        ("--consumer", "acme\nx-evil: 1", "control character U+000A"),
        ("--tier", "free\x00", "control character U+0000"),
        ("--consumer", "\x1b[31macme", "control character U+001B"),
        ("--consumer", "acme\u202e", "control character U+202E"),
        ("--roles", "a\rb", "control character U+000D"),
        ("--expires", "2001-01-01T00:00:00Z", "in the past"),
        ("--expires", "0s", "in the past"),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(
    key_file: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, problem: str
) -> None:
    before = key_file.read_text()
    argv = {"--consumer": "acme", "--tier": "free"}
    argv[option] = value
    flat = [part for pair in argv.items() for part in pair]
    code, out, err = run(capsys, "add", *flat, "--store", f"file:{key_file}")
    assert code == 1
    assert problem in err and out == ""
    assert key_file.read_text() == before


def test_add_warns_about_a_tier_no_rule_knows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"file:{tmp_path / 'k.yaml'}"
    config = str(REPO_ROOT / "examples" / "sidegate.yaml")
    code, _, err = run(capsys, "add", "--consumer", "a", "--tier", "premum", "--config", config,
                       "--store", store)  # fmt: skip
    assert code == 0  # a warning: the key is stored
    assert "warning: tier 'premum' appears in no rate-limit rule" in err
    assert "premium" in err  # the known tiers are listed
    code, _, err = run(capsys, "add", "--consumer", "b", "--tier", "premium", "--config", config,
                       "--store", store)  # fmt: skip
    assert code == 0 and "warning" not in err
    # without --config: the embedded default's rules
    assert "warning: tier 'gold'" in run(capsys, "add", "--consumer", "c", "--tier", "gold",
                                         "--store", store)[2]  # fmt: skip
    # rate limiting switched off: nothing to compare with, no warning
    off = tmp_path / "off.yaml"
    off.write_text(f"ratelimit: {{enabled: false}}\nauthz: {{policy: {{directory: "
                   f"{REPO_ROOT / 'policies'}}}}}\n")  # fmt: skip
    err = run(capsys, "add", "--consumer", "d", "--tier", "gold", "--config", str(off),
              "--store", store)[2]  # fmt: skip
    assert "warning" not in err
    # an unreadable config does not block the key, and says why nothing was checked
    err = run(capsys, "add", "--consumer", "e", "--tier", "gold", "--config",
              str(tmp_path / "missing.yaml"), "--store", store)[2]  # fmt: skip
    assert "tiers not checked" in err
    assert len(parse_key_file(tmp_path / "k.yaml")) == 5


def test_a_broken_file_is_not_edited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("# keep me\nkeys:\n  - digest: nothex\n    consumer: a\n")
    before = path.read_text()
    for argv in (
        ["add", "--consumer", "a", "--tier", "free"],
        ["disable", "--consumer", "a"],
        ["list"],
    ):
        code, _, err = run(capsys, *argv, "--store", f"file:{path}")
        assert code == 1 and str(path) in err and "keys[0]" in err
    assert path.read_text() == before


def test_key_id_selection_errors(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"file:{key_file}"
    assert "8 hex" in run(capsys, "disable", "--key-id", "47", "--store", store)[2]
    assert "no matching key" in run(capsys, "disable", "--key-id", "00000000", "--store", store)[2]


# --- Redis store ---------------------------------------------------------------------------------


async def test_redis_list_disable_enable_rotate(
    redis_url: str, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    prefix = f"test:{request.node.name}:"
    opts = ["--store", redis_url, "--redis-prefix", prefix]

    async def keys(*argv: str) -> tuple[int, str, str]:
        # the CLI runs its own event loop: run it in a thread
        code = await asyncio.to_thread(sidegate_main, ["keys", *argv, *opts])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await keys("add", "--consumer", "acme", "--tier", "free", "--services", "orders")
    assert code == 0
    first = out.strip()
    code, out, _ = await keys("list")
    (row,) = out.splitlines()[1:]
    assert row.split()[1:4] == ["acme", "free", "orders"] and row.split()[-1] == "active"
    assert first not in out

    store = RedisKeyStore(redis_url, prefix=prefix, cache_ttl=0, negative_cache_ttl=0)
    verifier = ApiKeyVerifier(store)
    view = make_view(context_extensions={"service": "orders"})
    try:
        assert (await verifier.verify(first, view)).consumer == "acme"
        assert (await keys("disable", "--key", first))[0] == 0
        with pytest.raises(AuthnFailure) as caught:
            await verifier.verify(first, view)
        assert failure_code(caught.value) == "disabled"
        assert (await keys("list", "--json"))[1].count('"disabled": true') == 1
        assert (await keys("enable", "--consumer", "acme"))[0] == 0
        assert (await verifier.verify(first, view)).consumer == "acme"

        code, out, _ = await keys("rotate", "--consumer", "acme", "--grace", "1h")
        assert code == 0
        second = out.strip()
        assert (await verifier.verify(second, view)).tier == "free"
        old = await store.lookup(KeyDigester().digest(first))
        assert old is not None and old.expires_at is not None
        # Redis drops the old entry by itself when the grace period ends
        ttl = await store.client.ttl(prefix + KeyDigester().digest(first))
        assert 3500 < ttl <= 3601
        rows = (await keys("list", "--json"))[1].splitlines()
        assert sorted(json.loads(r)["expires_at"] is not None for r in rows) == [False, True]
    finally:
        await verifier.close()


async def test_redis_errors_name_the_store_never_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://admin:s3cret-pw@127.0.0.1:{port}/3"
    assert store_label(url) == f"redis key store 127.0.0.1:{port}/3"
    assert store_label("unix:///run/redis.sock?db=1") == "redis key store /run/redis.sock"
    store = RedisKeyStore(url, cache_ttl=0, negative_cache_ttl=0, timeout=0.5)
    try:
        with pytest.raises(KeyStoreUnavailable) as caught:
            await store.lookup("0" * 64)
        message = str(caught.value)
        assert f"127.0.0.1:{port}/3" in message and "s3cret" not in message
    finally:
        await store.close()
    code = await asyncio.to_thread(sidegate_main, ["keys", "list", "--store", url])
    err = capsys.readouterr().err
    assert code == 1
    assert f"redis key store 127.0.0.1:{port}/3" in err and "s3cret" not in err


def test_check_config_warns_about_key_tiers_no_rule_knows(
    tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((REPO_ROOT / "examples" / "sidegate.yaml").read_text())
    config["authz"]["policy"]["directory"] = str(REPO_ROOT / "policies")
    config["ratelimit"]["rules_dir"] = str(REPO_ROOT / "examples" / "ratelimit")
    config["authz"]["identity"]["sources"][0]["store"]["path"] = str(key_file)
    path = tmp_path / "sidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    assert sidegate_main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err  # free and premium are both in the rules
    code, out, _ = run(capsys, "add", "--consumer", "x", "--tier", "gold", "--store",
                       f"file:{key_file}")  # fmt: skip
    assert code == 0
    assert sidegate_main(["check-config", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert "sources[0] ('demo-keys')" in err
    assert f"tier 'gold' of key_id {key_id(KeyDigester().digest(out.strip()))}" in err


def test_hand_written_spelling_survives_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fields an edit does not change keep their spelling: an unquoted timestamp, an
    upper-case digest, a spelled-out default tier, trailing comments."""
    path = tmp_path / "k.yaml"
    digest = KeyDigester().digest(FREE_KEY)
    path.write_text(
        "keys:\n"
        "  # partner acme\n"
        f"  - digest: {digest.upper()}   # upper case\n"
        "    consumer: acme\n"
        "    tier: default            # spelled out\n"
        "    expires_at: 2030-01-01T00:00:00Z\n"
        "    roles: [a]\n"
    )
    before = path.read_text()
    assert run(capsys, "disable", "--consumer", "acme", "--store", f"file:{path}")[0] == 0
    assert path.read_text() == before + "    disabled: true\n"
    assert run(capsys, "enable", "--key", FREE_KEY, "--store", f"file:{path}")[0] == 0
    assert path.read_text() == before
