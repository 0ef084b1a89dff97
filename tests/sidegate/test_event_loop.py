"""``server.event_loop``: the setting, the choice ``auto`` makes, a clear error when uvloop is
asked for and missing, and ``sidegate serve`` on each loop through the front door (both
services, Redis, the admin port, SIGHUP reload, SIGTERM drain; both server models on uvloop)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import uvloop

from sidegate.cli import main
from sidegate.common.exit_codes import INPUT_ERROR, RUNTIME_ERROR
from sidegate.config import ConfigError, load_config
from sidegate.event_loop import EventLoopUnavailable, loop_factory, running_loop_name
from tests.harness import SidegateProcess
from tests.sidegate.process_helpers import (
    RULES_V1,
    RULES_V2,
    check,
    events,
    rate_limit,
    sighup_and_wait,
)


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import uvloop`` fails, as on a host without it."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


def _config_file(tmp_path: Path, choice: str) -> Path:
    path = tmp_path / "sidegate.yaml"
    path.write_text(f"server:\n  event_loop: {choice}\n")
    return path


def test_setting_defaults_to_auto_and_accepts_only_known_loops(tmp_path: Path) -> None:
    assert load_config(None).server.event_loop == "auto"
    for choice in ("auto", "asyncio", "uvloop"):
        assert load_config(_config_file(tmp_path, choice)).server.event_loop == choice
    with pytest.raises(ConfigError) as caught:
        load_config(_config_file(tmp_path, "libuv"))
    assert "sidegate.yaml:2: server.event_loop:" in str(caught.value)


def test_auto_is_uvloop_when_installed_and_asyncio_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert loop_factory("auto") is None
    assert loop_factory("asyncio") is None


def test_running_loop_name_tells_the_loops_apart() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(_name()) == "uvloop"
    with asyncio.Runner() as runner:
        assert runner.run(_name()) == "asyncio"


async def _name() -> str:
    return running_loop_name()


def test_uvloop_asked_for_but_missing_names_the_key(no_uvloop: None) -> None:
    with pytest.raises(EventLoopUnavailable, match=r"^server\.event_loop: uvloop cannot be"):
        loop_factory("uvloop")


def test_serve_and_check_config_refuse_a_missing_uvloop(
    tmp_path: Path, no_uvloop: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path, "uvloop")
    assert main(["serve", "--config", str(path)]) == RUNTIME_ERROR
    err = capsys.readouterr().err
    assert err.startswith("sidegate: server.event_loop: uvloop cannot be imported"), err
    assert "set server.event_loop to auto or asyncio" in err
    assert main(["check-config", str(path)]) == INPUT_ERROR
    assert "sidegate: server.event_loop: uvloop cannot be imported" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "choice", "running"),
    [
        ("aio", "uvloop", "uvloop"),
        ("threads", "uvloop", "uvloop"),  # the LoopBridge: run_coroutine_threadsafe on uvloop
        ("aio", "auto", "uvloop"),
        ("aio", "asyncio", "asyncio"),
    ],
)
def test_serve_answers_reloads_and_drains_on_its_loop(
    tmp_path: Path, redis_url: str, model: str, choice: str, running: str
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES_V1)
    config = {
        "server": {"model": model, "event_loop": choice},
        "authz": {"identity": {"anonymous": [{"path_prefixes": ["/"]}]}},
        "ratelimit": {
            "backend": "redis",
            "rules_dir": str(rules),
            "reload": {"watch": False},
            "redis": {"url": redis_url, "key_prefix": f"loop-{os.getpid()}-{model}-{choice}:"},
        },
    }
    proc = SidegateProcess(tmp_path, config)
    proc.start()  # ready: the admin port (aiohttp) answers /readyz
    try:
        assert events(proc, "starting")[0]["event_loop"] == running
        port = proc.grpc_port
        assert check(port).status.code == 0
        limit = rate_limit(port, "test", [("k", "v")]).statuses[0].current_limit
        assert limit.requests_per_unit == 1  # answered from Redis
        (rules / "test.yaml").write_text(RULES_V2)
        sighup_and_wait(proc)  # the reload reads the files in an executor
        limit = rate_limit(port, "test", [("k", "v")]).statuses[0].current_limit
        assert limit.requests_per_unit == 7
        assert check(port).status.code == 0
        proc.signal(signal.SIGTERM)
        assert proc.proc is not None and proc.proc.wait(30) == 0, proc.output()
        assert events(proc, "draining") and events(proc, "stopped")
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()
