"""The one file watcher and the one reloader: off the loop, never escaping, never dying."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from sidegate.common.file_watcher import FileWatcher, fingerprint
from sidegate.common.reloading import Reloader
from sidegate.extauthz.identity.api_keys import file_store
from sidegate.extauthz.identity.api_keys.digest import KeyDigester
from sidegate.extauthz.identity.api_keys.file_store import FileKeyStore, write_key_file
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.policy.embedded import EmbeddedEngine

POLICY = "package app\nimport rego.v1\n\ndefault allow := false\n\nallow if input.x == {x}\n"
DEEP_REGO = "package deep\nimport rego.v1\n\nx := " + "[" * 3000 + "]" * 3000 + "\n"


def reloads(component: str, trigger: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "sidegate_reloads_total", {"component": component, "trigger": trigger, "result": result}
    )
    return value or 0.0


def bump(path: Path) -> None:
    """Make a rewrite visible to the stat fingerprint even within one mtime tick."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def configmap(root: Path, version: str, files: dict[str, str]) -> None:
    """Kubernetes' atomic writer: a timestamped dir, ``..data`` swapped to it by rename."""
    data = root / f"..{version}"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")


def test_fingerprint_sees_a_configmap_swap_of_a_single_file(tmp_path: Path) -> None:
    configmap(tmp_path, "v1", {"keys.yaml": "keys: []\n"})
    before = fingerprint(tmp_path / "keys.yaml")
    configmap(tmp_path, "v2", {"keys.yaml": "keys: []\n"})  # same size, same visible name
    assert fingerprint(tmp_path / "keys.yaml") != before
    assert fingerprint(tmp_path / "missing.yaml") == ()
    # a directory walk reads the visible names only, never ..data a second time
    assert [entry[0] for entry in fingerprint(tmp_path)] == [str(tmp_path / "keys.yaml")]


async def test_watcher_outlives_a_callback_that_raises(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\n")
    calls: list[int] = []

    async def on_change() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RecursionError("maximum recursion depth exceeded")

    watcher = FileWatcher("test", path, on_change, interval=0.01)
    watcher.start()
    try:
        with capture_logs() as logs:
            for round_ in (1, 2):
                path.write_text(f"a: {round_ + 1}\n")
                bump(path)
                for _ in range(1000):  # bounded wait for the poller; no timing assertion
                    if len(calls) >= round_:
                        break
                    await asyncio.sleep(0.01)
        assert len(calls) == 2
        assert watcher.alive
        assert any(e["event"] == "watch_failed" and e["log_level"] == "warning" for e in logs)
    finally:
        await watcher.stop()
    assert not watcher.alive


async def test_reloader_prepares_off_the_loop_and_installs_on_it() -> None:
    loop_thread = threading.current_thread()
    seen: dict[str, threading.Thread] = {}
    released = threading.Event()

    def prepare() -> str:
        seen["prepare"] = threading.current_thread()
        # Waits for the loop: would deadlock (and fail on the timeout) if run on the loop.
        assert released.wait(30)
        return "v2"

    installed: list[str] = []

    def install(value: str) -> None:
        seen["install"] = threading.current_thread()
        installed.append(value)

    reloader: Reloader[str] = Reloader("test_component", "f.yaml", prepare, install)
    task = asyncio.create_task(reloader.run("sighup"))
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_soon(released.set)
    assert await task
    assert seen["prepare"] is not loop_thread and seen["install"] is loop_thread
    assert installed == ["v2"]
    assert reloader.state.last_result == "success"


@pytest.mark.parametrize(
    "error", [RecursionError("deep"), MemoryError(), ValueError("bad"), False]
)
async def test_any_failure_is_a_counted_warning_and_keeps_the_old_version(
    error: BaseException | bool,
) -> None:
    def prepare() -> object:
        if error is False:
            return False
        raise error  # type: ignore[misc]

    installed: list[object] = []
    reloader: Reloader[object] = Reloader("test_failing", "bad.yaml", prepare, installed.append)
    before = reloads("test_failing", "watch", "failure")
    with capture_logs() as logs:
        assert await reloader.run() is False
    assert installed == []
    assert reloads("test_failing", "watch", "failure") == before + 1
    warning = next(e for e in logs if e["event"] == "reload_failed")
    assert warning["log_level"] == "warning" and warning["file"] == "bad.yaml"
    assert reloader.state.last_result == "failure" and reloader.state.last_error


async def test_a_3000_deep_rego_array_is_a_failed_reload_and_the_watcher_lives_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.rego").write_text(POLICY.format(x=1))
    engine = EmbeddedEngine(tmp_path, watch_interval=0.02, cache_decisions=False)
    await engine.start()
    try:
        assert (await engine.evaluate("app/allow", {"x": 1})).value is True
        (tmp_path / "deep.rego").write_text(DEEP_REGO)
        # SIGHUP's path: never raises, old bundle kept
        assert await engine.reload_async("sighup") is False
        assert engine.reloader.state.last_result == "failure"
        assert (await engine.evaluate("app/allow", {"x": 1})).value is True
        assert engine.watcher is not None and engine.watcher.alive
        # the watcher saw the same change, failed the same way, and still picks up a good one
        (tmp_path / "deep.rego").unlink()
        (tmp_path / "app.rego").write_text(POLICY.format(x=2))
        bump(tmp_path / "app.rego")
        for _ in range(3000):  # bounded wait for the watcher; no timing assertion
            if (await engine.evaluate("app/allow", {"x": 2})).value is True:
                break
            await asyncio.sleep(0.01)
        assert (await engine.evaluate("app/allow", {"x": 2})).value is True
        assert engine.watcher.alive
    finally:
        await engine.close()


async def test_key_file_reload_parses_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.yaml"
    digest = KeyDigester().digest("sg_first_key_0001")
    write_key_file(path, [ApiKeyRecord(digest=digest, consumer="a")])
    store = FileKeyStore(path, reload_interval=0)
    await store.start()
    threads: list[threading.Thread] = []
    original = file_store.parse_key_file

    def spy(p: Path) -> dict[str, ApiKeyRecord]:
        threads.append(threading.current_thread())
        return original(p)

    monkeypatch.setattr(file_store, "parse_key_file", spy)
    # written directly: yaml.safe_dump of 20k records costs more than the reload under test
    path.write_text(
        "keys:\n" + "".join(f"  - {{digest: '{i:064x}', consumer: c{i}}}\n" for i in range(20_000))
    )
    assert await store.reload_async("sighup")
    assert store.size == 20_000
    assert threads and all(t is not threading.current_thread() for t in threads)
    await store.close()


def test_policy_nesting_is_bounded_before_any_parser_sees_it(tmp_path: Path) -> None:
    from sidegate.extauthz.policy.nesting import MAX_NESTING
    from sidegate.extauthz.policy.sources import PolicySourceError, read_sources

    ok = 'package ok\n\n# [[[[ in a comment\nx := "[[[[{{{{ in a string"\ny := ' + (
        "[" * MAX_NESTING + "]" * MAX_NESTING
    ) + "\n"
    (tmp_path / "ok.rego").write_text(ok)
    assert read_sources(tmp_path).modules
    (tmp_path / "deep.rego").write_text(DEEP_REGO)
    with pytest.raises(
        PolicySourceError, match=rf"deep.rego:4:\d+: nested deeper than {MAX_NESTING} levels"
    ):
        read_sources(tmp_path)
