"""API keys through the identity pipeline (config → verifier → upstream mutations) and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidegate.cli import main as sidegate_main
from sidegate.extauthz.identity.api_keys.digest import KeyDigester
from sidegate.extauthz.identity.api_keys.file_store import parse_key_file, write_key_file
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.base import AuthnFailure, failure_code
from sidegate.extauthz.identity.pipeline import IdentityPipeline
from sidegate.extauthz.identity.settings import IdentitySettings
from sidegate.extauthz.keys_cli import parse_expiry
from tests.conftest import REPO_ROOT
from tests.identity.test_api_keys import make_view

FREE_KEY = "sg_free-demo-key-0000000000000000000000000"
PREMIUM_KEY = "sg_premium-demo-key-00000000000000000000000"


def pipeline(tmp_path: Path, **source: Any) -> IdentityPipeline:
    keys = tmp_path / "keys.yaml"
    if not keys.exists():
        d = KeyDigester()
        write_key_file(
            keys,
            [
                ApiKeyRecord(digest=d.digest(FREE_KEY), consumer="alice", tier="free"),
                ApiKeyRecord(digest=d.digest(PREMIUM_KEY), consumer="bob", tier="premium"),
            ],
        )
    config = {
        "sources": [
            {
                "name": "keys",
                "type": "api_key",
                "store": {"type": "file", "path": "keys.yaml", "reload_interval": 0},
                **source,
            }
        ],
    }
    settings = IdentitySettings.model_validate(config, context={"base_dir": tmp_path})
    return IdentityPipeline(settings)


async def test_default_header_and_tiers(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    await p.start()
    try:
        free = await p.authenticate(make_view({"x-api-key": FREE_KEY}))
        premium = await p.authenticate(make_view({"x-api-key": PREMIUM_KEY}))
        assert (free.source, free.consumer, free.tier) == ("keys", "alice", "free")
        assert (premium.consumer, premium.tier) == ("bob", "premium")
        with pytest.raises(AuthnFailure) as caught:
            await p.authenticate(make_view({"x-api-key": "sg_unknown"}))
        assert caught.value.scheme == "ApiKey"
        assert failure_code(caught.value) == "unknown"
        # no key at all: 401 challenge with the source's scheme
        with pytest.raises(AuthnFailure) as caught:
            await p.authenticate(make_view())
        assert caught.value.scheme == "ApiKey"
    finally:
        await p.close()


async def test_query_and_authorization_locations_and_duplicates(tmp_path: Path) -> None:
    p = pipeline(
        tmp_path,
        also_accept=[{"header": "authorization", "prefix": "ApiKey "}, {"query": "api_key"}],
    )
    await p.start()
    try:
        by_query = await p.authenticate(make_view(path=f"/x?api_key={FREE_KEY}"))
        by_auth = await p.authenticate(make_view({"authorization": f"ApiKey {PREMIUM_KEY}"}))
        assert (by_query.tier, by_auth.tier) == ("free", "premium")
        with pytest.raises(AuthnFailure) as caught:
            await p.authenticate(
                make_view({"x-api-key": FREE_KEY}, path=f"/x?api_key={PREMIUM_KEY}")
            )
        assert failure_code(caught.value) == "duplicate"
        with pytest.raises(AuthnFailure):
            await p.authenticate(
                make_view({"x-api-key": FREE_KEY, "authorization": f"ApiKey {PREMIUM_KEY}"})
            )
    finally:
        await p.close()


async def test_hide_credentials_strips_every_location(tmp_path: Path) -> None:
    p = pipeline(
        tmp_path,
        hide_credentials=True,
        also_accept=[{"header": "authorization", "prefix": "ApiKey "}, {"query": "api_key"}],
    )
    await p.start()
    try:
        view = make_view({"x-api-key": FREE_KEY})
        identity = await p.authenticate(view)
        mutations = p.upstream_mutations(identity, view)
        assert set(mutations.headers_to_remove) == {"x-api-key", "authorization"}
        assert mutations.query_parameters_to_remove == ["api_key"]
    finally:
        await p.close()
    kept = pipeline(tmp_path)
    await kept.start()
    try:
        view = make_view({"x-api-key": FREE_KEY})
        mutations = kept.upstream_mutations(await kept.authenticate(view), view)
        assert "x-api-key" not in mutations.headers_to_remove
    finally:
        await kept.close()


async def test_service_restriction_from_route_extension(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    write_key_file(
        keys,
        [
            ApiKeyRecord(
                digest=KeyDigester().digest(FREE_KEY),
                consumer="alice",
                tier="free",
                services=("orders",),
            )
        ],
    )
    p = pipeline(tmp_path)
    await p.start()
    try:
        ok = make_view({"x-api-key": FREE_KEY}, context_extensions={"service": "orders"})
        assert (await p.authenticate(ok)).consumer == "alice"
        other = make_view({"x-api-key": FREE_KEY}, context_extensions={"service": "billing"})
        with pytest.raises(AuthnFailure) as caught:
            await p.authenticate(other)
        assert failure_code(caught.value) == "wrong_service"
    finally:
        await p.close()


def test_config_errors_are_precise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="store"):
        IdentitySettings.model_validate({"sources": [{"name": "k", "type": "api_key"}]})
    with pytest.raises(ValueError, match="redis"):
        IdentitySettings.model_validate(
            {"sources": [{"name": "k", "type": "api_key", "store": {"type": "redis", "url": "x"}}]}
        )


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_add_prints_key_once_and_stores_only_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.yaml"
    argv = [
        "keys", "add", "--consumer", "acme", "--tier", "premium", "--roles", "reader,writer",
        "--scopes", "orders:read", "--services", "orders", "billing", "--expires", "30d",
        "--store", f"file:{path}",
    ]  # fmt: skip
    assert sidegate_main(argv) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("sg_") and len(out.splitlines()) == 1
    assert key not in err and key not in path.read_text()
    (record,) = parse_key_file(path).values()
    assert record.digest == KeyDigester().digest(key)
    assert (record.consumer, record.tier) == ("acme", "premium")
    assert record.roles == ("reader", "writer")
    assert record.services == ("orders", "billing")
    assert record.expires_at is not None

    assert sidegate_main(["keys", "hash", key]) == 0
    assert capsys.readouterr().out.strip() == record.digest

    assert sidegate_main(["keys", "revoke", "--key", key, "--store", f"file:{path}"]) == 0
    assert parse_key_file(path) == {}
    assert (
        sidegate_main(["keys", "revoke", "--digest", record.digest, "--store", f"file:{path}"]) == 1
    )
    assert "no key" in capsys.readouterr().err


def test_cli_pepper_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_CLI_PEPPER", "pep")
    assert sidegate_main(["keys", "hash", "abc", "--pepper-env", "SG_CLI_PEPPER"]) == 0
    assert capsys.readouterr().out.strip() == KeyDigester(b"pep").digest("abc")
    assert sidegate_main(["keys", "hash", "abc", "--pepper-env", "SG_UNSET_PEPPER"]) == 1
    assert "SG_UNSET_PEPPER" in capsys.readouterr().err
    bad_store = ["keys", "add", "--consumer", "a", "--tier", "t", "--store", "ftp://x"]
    assert sidegate_main(bad_store) == 1
    assert "neither file:PATH nor a redis:// URL" in capsys.readouterr().err
    bad_expiry = [*bad_store[:-1], f"file:{tmp_path / 'k.yaml'}", "--expires", "soon"]
    assert sidegate_main(bad_expiry) == 1
    assert "--expires" in capsys.readouterr().err
    assert not (tmp_path / "k.yaml").exists()


def test_parse_expiry() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_expiry("12h", now=now) == now + timedelta(hours=12)
    assert parse_expiry("2031-02-03T04:05:06Z") == datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert parse_expiry("2031-02-03").tzinfo is UTC


def test_cli_as_a_process_reads_the_key_from_stdin(tmp_path: Path) -> None:
    """The installed entry point, the key piped in (so it never sits in argv or history)."""
    result = subprocess.run(
        [sys.executable, "-m", "sidegate", "keys", "hash", "-"],
        input="sg_piped-key\n",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    assert result.stdout.strip() == KeyDigester().digest("sg_piped-key")


def test_example_key_file_is_valid() -> None:
    records = parse_key_file(REPO_ROOT / "examples" / "api-keys.yaml")
    assert sorted(r.tier for r in records.values()) == ["free", "premium"]
    text = (REPO_ROOT / "examples" / "api-keys.yaml").read_text()
    demo = yaml.safe_load(text)
    assert all(set(entry) >= {"digest", "consumer", "tier"} for entry in demo["keys"])
