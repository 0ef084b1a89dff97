"""Policy reload while Checks flow: the new rule applies, no request fails, a broken file keeps
the running bundle."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from sidegate.extauthz.factory import build_engine
from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.extauthz.service import AuthzService
from sidegate.extauthz.settings import AuthzSettings
from tests.policy.helpers import check_request, status_of
from tests.policy.test_embedded_engine import bump_mtime

POLICY = """package app
import rego.v1

default allow := false

allow if input.parsed_path[0] == "{open}"
"""


async def test_file_change_under_traffic(tmp_path):
    policy = tmp_path / "app.rego"
    policy.write_text(POLICY.format(open="old"))
    settings = AuthzSettings.model_validate(
        {
            "policy": {
                "directory": str(tmp_path),
                "default_path": "app/allow",
                "watch_interval": 0.02,
            }
        }
    )
    service = AuthzService(settings, build_engine(settings.policy))
    await service.start()
    statuses: Counter[tuple[str, int]] = Counter()
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            for path in ("/old", "/new"):
                response = await service.check(check_request(path))
                statuses[(path, status_of(response))] += 1
            await asyncio.sleep(0)

    async def until_new_rule_applies() -> None:
        for _ in range(1000):
            if status_of(await service.check(check_request("/new"))) == 200:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the changed policy never applied")

    workers = [asyncio.create_task(traffic()) for _ in range(4)]
    try:
        await asyncio.sleep(0.05)
        policy.write_text(POLICY.format(open="new"))
        bump_mtime(policy)
        await until_new_rule_applies()

        policy.write_text("package app\nallow if {{{\n")
        bump_mtime(policy)
        assert service.reload() is False  # SIGHUP path: refuses the broken file
        await asyncio.sleep(0.1)  # the watcher also sees it, and also keeps the old bundle
        assert status_of(await service.check(check_request("/new"))) == 200
        assert status_of(await service.check(check_request("/old"))) == 403
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await service.close()
    # Every answer was one policy's or the other's: no errors, no outage answers.
    assert set(statuses) <= {("/old", 200), ("/old", 403), ("/new", 200), ("/new", 403)}
    assert statuses[("/new", 200)] > 0 and statuses[("/old", 200)] > 0


def test_reload_from_another_thread_while_evaluating(tmp_path):
    policy = tmp_path / "app.rego"
    policy.write_text(POLICY.format(open="a"))
    engine = EmbeddedEngine(tmp_path, ["app/allow"])
    engine.load()
    failures: list[BaseException] = []
    results: Counter[object] = Counter()
    done = threading.Event()

    def evaluate_loop() -> None:
        try:
            while not done.is_set():
                results[engine.evaluate_json("app/allow", '{"parsed_path":["a"]}').value] += 1
        except BaseException as exc:  # the assertion below reports it
            failures.append(exc)

    thread = threading.Thread(target=evaluate_loop)
    thread.start()
    try:
        for i in range(20):
            policy.write_text(POLICY.format(open="a" if i % 2 else "b"))
            assert engine.reload() is True
    finally:
        done.set()
        thread.join(10)
    assert not failures
    assert set(results) <= {True, False}
