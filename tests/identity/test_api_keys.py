"""API keys: digests, records, the file store (reload, bad file), the verifier's checks."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from sidegate.extauthz.identity.api_keys.digest import KeyDigester, key_id, new_key
from sidegate.extauthz.identity.api_keys.file_store import (
    FileKeyStore,
    parse_key_file,
    write_key_file,
)
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.store import KeyStoreError, KeyStoreUnavailable
from sidegate.extauthz.identity.api_keys.verifier import ApiKeyVerifier
from sidegate.extauthz.identity.base import AuthnFailure, failure_code
from sidegate.extauthz.identity.source import CredentialLocation
from sidegate.extauthz.request_view import RequestView

NOW = 1_900_000_000.0


def make_view(
    headers: dict[str, str] | None = None,
    path: str = "/orders",
    host: str = "api.example.com",
    context_extensions: dict[str, str] | None = None,
) -> RequestView:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method = "GET"
    http.path = path
    http.host = host
    for name, value in (headers or {}).items():
        http.headers[name.lower()] = value
    for name, value in (context_extensions or {}).items():
        request.attributes.context_extensions[name] = value
    return RequestView.from_check_request(request)


def record(key: str, digester: KeyDigester | None = None, **fields: object) -> ApiKeyRecord:
    digester = digester or KeyDigester()
    return ApiKeyRecord.model_validate(
        {"digest": digester.digest(key), "consumer": "acme", "tier": "free", **fields}
    )


class MemoryStore:
    """A dict-backed store for verifier logic; file and Redis stores have their own tests."""

    kind = "memory"

    def __init__(self, *records: ApiKeyRecord, down: bool = False) -> None:
        self.records = {r.digest: r for r in records}
        self.down = down
        self.lookups: list[str] = []

    async def lookup(self, digest: str) -> ApiKeyRecord | None:
        self.lookups.append(digest)
        if self.down:
            raise KeyStoreUnavailable("redis key store: ConnectionError")
        return self.records.get(digest)

    async def add(self, record: ApiKeyRecord) -> None:
        self.records[record.digest] = record

    async def revoke(self, digest: str) -> bool:
        return self.records.pop(digest, None) is not None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def verifier(store: object, **kwargs: object) -> ApiKeyVerifier:
    kwargs.setdefault("clock", lambda: NOW)
    return ApiKeyVerifier(store, **kwargs)  # type: ignore[arg-type]


# --- digests ------------------------------------------------------------------------------------


def test_digest_is_sha256_hex_and_pepper_changes_it() -> None:
    plain = KeyDigester().digest("abc")
    assert plain == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    keyed = KeyDigester(b"pepper").digest("abc")
    assert keyed != plain and len(keyed) == 64
    assert KeyDigester(b"pepper").digest("abc") == keyed


def test_pepper_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_PEPPER", "s3cret")
    assert KeyDigester.from_env("SG_TEST_PEPPER").digest("k") == KeyDigester(b"s3cret").digest("k")
    monkeypatch.delenv("SG_TEST_PEPPER")
    with pytest.raises(KeyStoreError, match="SG_TEST_PEPPER"):
        KeyDigester.from_env("SG_TEST_PEPPER")


def test_new_keys_are_random_and_prefixed() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("sg_") and len(k) > 40 for k in keys)


def test_record_rejects_a_cleartext_key_as_digest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 lower-case hex"):
        ApiKeyRecord(digest="sg_not-a-digest", consumer="acme")
    # pasted into the file by mistake, the key must not reach the error (which is logged)
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - digest: sg_cleartext-key-pasted-here\n    consumer: acme\n")
    with pytest.raises(KeyStoreError) as caught:
        parse_key_file(path)
    assert "keys[0]: digest" in str(caught.value)
    assert "sg_cleartext-key-pasted-here" not in str(caught.value)


# --- verifier -----------------------------------------------------------------------------------


async def test_valid_key_per_tier() -> None:
    free_key, premium_key = new_key(), new_key()
    store = MemoryStore(
        record(free_key, tier="free", consumer="alice"),
        record(premium_key, tier="premium", consumer="bob", roles=["admin"], scopes=["a:read"]),
    )
    v = verifier(store)
    free = await v.verify(free_key, make_view({"x-api-key": free_key}))
    premium = await v.verify(premium_key, make_view({"x-api-key": premium_key}))
    assert (free.method, free.consumer, free.subject, free.tier) == (
        "api_key",
        "alice",
        "alice",
        "free",
    )
    assert (premium.consumer, premium.tier, premium.roles, premium.scopes) == (
        "bob",
        "premium",
        ("admin",),
        ("a:read",),
    )
    assert premium.claims["key_id"] == key_id(KeyDigester().digest(premium_key))
    assert premium_key not in repr(premium)


async def test_lookup_is_by_digest_never_by_key() -> None:
    key = new_key()
    store = MemoryStore(record(key))
    await verifier(store).verify(key, make_view({"x-api-key": key}))
    assert store.lookups == [KeyDigester().digest(key)]


async def test_peppered_store_needs_the_same_pepper() -> None:
    key = new_key()
    store = MemoryStore(record(key, KeyDigester(b"pepper")))
    ok = await verifier(store, digester=KeyDigester(b"pepper")).verify(key, make_view())
    assert ok.consumer == "acme"
    with pytest.raises(AuthnFailure, match="unknown"):
        await verifier(store).verify(key, make_view())


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"disabled": True}, "disabled"),
        ({"expires_at": datetime.fromtimestamp(NOW - 1, UTC)}, "expired"),
        ({"expires_at": datetime.fromtimestamp(NOW, UTC)}, "expired"),
        ({"services": ["billing"]}, "not valid for service 'orders'"),
    ],
)
async def test_rejected_records(fields: dict[str, object], reason: str) -> None:
    key = new_key()
    v = verifier(MemoryStore(record(key, **fields)))
    view = make_view({"x-api-key": key}, context_extensions={"service": "orders"})
    with pytest.raises(AuthnFailure) as caught:
        await v.verify(key, view)
    failure = caught.value
    assert reason in failure.reason
    assert failure.kind == "unauthenticated"
    assert failure.scheme == "ApiKey"
    assert key not in failure.reason and key not in failure.public_reason


async def test_unknown_and_revoked_keys() -> None:
    key = new_key()
    store = MemoryStore(record(key))
    v = verifier(store)
    with pytest.raises(AuthnFailure, match="unknown API key"):
        await v.verify(new_key(), make_view())
    assert (await v.verify(key, make_view())).consumer == "acme"
    assert await store.revoke(KeyDigester().digest(key))
    with pytest.raises(AuthnFailure, match="unknown API key"):
        await v.verify(key, make_view())


async def test_not_yet_expired_key_is_accepted() -> None:
    key = new_key()
    v = verifier(MemoryStore(record(key, expires_at=datetime.fromtimestamp(NOW + 60, UTC))))
    identity = await v.verify(key, make_view())
    assert identity.claims["exp"] == int(NOW + 60)


async def test_allowed_services_match_context_extension_then_host_when_configured() -> None:
    key = new_key()
    v = verifier(
        MemoryStore(record(key, services=["orders", "api.example.com"])),
        service_from_authority=True,
    )
    await v.verify(key, make_view(context_extensions={"service": "orders"}))
    await v.verify(key, make_view(host="api.example.com:8443"))
    with pytest.raises(AuthnFailure, match="not valid for service 'billing'"):
        await v.verify(key, make_view(context_extensions={"service": "billing"}))
    with pytest.raises(AuthnFailure, match=r"not valid for service 'other\.example\.com'"):
        await v.verify(key, make_view(host="other.example.com"))


async def test_two_different_keys_in_one_request_are_rejected() -> None:
    one, two = new_key(), new_key()
    v = verifier(
        MemoryStore(record(one), record(two)),
        locations=[
            CredentialLocation(header="x-api-key"),
            CredentialLocation(header="authorization", prefix="ApiKey "),
            CredentialLocation(query="api_key"),
        ],
    )
    cases = [
        make_view({"x-api-key": one, "authorization": f"ApiKey {two}"}),
        make_view({"x-api-key": one}, path=f"/orders?api_key={two}"),
        make_view({"x-api-key": f"{one},{two}"}),  # a repeated header, folded by Envoy
        make_view(path=f"/orders?api_key={one}&api_key={two}"),
    ]
    for view in cases:
        with pytest.raises(AuthnFailure, match="several different API keys") as caught:
            await v.verify(one, view)
        assert caught.value.public_reason == "duplicate API key"
        assert failure_code(caught.value) == "duplicate"
    # the same key in two places is one credential, not a duplicate
    same = make_view({"x-api-key": one, "authorization": f"ApiKey {one}"}, f"/o?api_key={one}")
    assert (await v.verify(one, same)).consumer == "acme"
    # a Bearer token beside the key is some other source's credential
    bearer = make_view({"x-api-key": one, "authorization": "Bearer abc.def.ghi"})
    assert (await v.verify(one, bearer)).consumer == "acme"


async def test_store_outage_is_unavailable_not_unauthenticated() -> None:
    key = new_key()
    with pytest.raises(AuthnFailure) as caught:
        await verifier(MemoryStore(record(key), down=True)).verify(key, make_view())
    assert caught.value.kind == "unavailable"


async def test_empty_key_is_rejected_without_lookup() -> None:
    store = MemoryStore()
    with pytest.raises(AuthnFailure, match="empty"):
        await verifier(store).verify("  ", make_view())
    assert store.lookups == []


async def test_keys_never_reach_logs() -> None:
    good, bad = new_key(), new_key()
    v = verifier(MemoryStore(record(good)))
    with structlog.testing.capture_logs() as logs:
        await v.verify(good, make_view({"x-api-key": good}))
        with pytest.raises(AuthnFailure) as caught:
            await v.verify(bad, make_view({"x-api-key": bad}))
    text = repr(logs) + repr(caught.value.args) + caught.value.reason
    assert good not in text and bad not in text


# --- file store ---------------------------------------------------------------------------------


def _write(path: Path, *records: ApiKeyRecord) -> None:
    write_key_file(path, records)
    # make the change visible to a stat-based watcher even within one mtime tick
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


async def test_file_store_loads_and_looks_up(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "keys.yaml"
    _write(path, record(key, tier="premium"))
    store = FileKeyStore(path, reload_interval=0)
    await store.start()
    found = await store.lookup(KeyDigester().digest(key))
    assert found is not None and found.tier == "premium"
    assert await store.lookup(KeyDigester().digest(new_key())) is None
    assert key not in path.read_text()
    await store.close()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("keys: [", "invalid YAML"),
        ("keys:\n  - consumer: a\n", "keys[0]: digest"),
        (f"keys:\n  - digest: {'a' * 64}\n    consumer: x\n    colour: red\n", "colour"),
        (
            f"keys:\n  - {{digest: {'a' * 64}, consumer: x}}\n  - {{digest: {'a' * 64}, "
            "consumer: y}\n",
            "duplicate digest",
        ),
        ("- just a list\n", "single 'keys' list"),
    ],
)
def test_bad_key_files_name_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(content)
    with pytest.raises(KeyStoreError) as caught:
        parse_key_file(path)
    assert problem in str(caught.value) and str(path) in str(caught.value)


async def test_missing_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="does not exist"):
        await FileKeyStore(tmp_path / "nope.yaml").start()


async def test_file_store_reloads_a_changed_file_and_keeps_old_keys_on_a_bad_one(
    tmp_path: Path,
) -> None:
    first, second = new_key(), new_key()
    path = tmp_path / "keys.yaml"
    _write(path, record(first))
    store = FileKeyStore(path, reload_interval=0)
    v = verifier(store)
    await v.start()
    assert (await v.verify(first, make_view())).consumer == "acme"

    _write(path, record(second, consumer="beta"))
    assert await store.reload_async()
    assert (await v.verify(second, make_view())).consumer == "beta"
    with pytest.raises(AuthnFailure, match="unknown"):
        await v.verify(first, make_view())

    path.write_text("keys: [ {digest: broken")
    with structlog.testing.capture_logs() as logs:
        assert not await store.reload_async()
    assert (await v.verify(second, make_view())).consumer == "beta"
    failed = [e for e in logs if e["event"] == "reload_failed"]
    assert failed and failed[0]["log_level"] == "warning" and failed[0]["file"] == str(path)

    path.unlink()
    assert not await store.reload_async()
    assert (await v.verify(second, make_view())).consumer == "beta"
    await v.close()


async def test_file_store_watcher_picks_up_changes_while_serving(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    path = tmp_path / "keys.yaml"
    _write(path, record(first))
    store = FileKeyStore(path, reload_interval=0.02)
    v = verifier(store)
    await v.start()
    try:
        _write(path, record(first), record(second, tier="premium"))
        digest = KeyDigester().digest(second)
        for _ in range(500):  # bounded: the watcher polls every 20 ms
            if await store.lookup(digest) is not None:
                break
            await asyncio.sleep(0.01)
        identity = await v.verify(second, make_view())
        assert identity.tier == "premium"
    finally:
        await v.close()


async def test_file_store_add_and_revoke(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    store = FileKeyStore(path, reload_interval=0)
    key = new_key()
    rec = record(key, expires_at=datetime.now(UTC) + timedelta(days=1), roles=["r"])
    await store.add(rec)
    with pytest.raises(KeyStoreError, match="already exists"):
        await store.add(rec)
    assert parse_key_file(path) == {rec.digest: rec}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert await store.revoke(rec.digest)
    assert not await store.revoke(rec.digest)
    assert parse_key_file(path) == {}
