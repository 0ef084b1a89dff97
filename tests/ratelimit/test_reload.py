"""Hot reload: atomic swap, a bad file keeps the old rules, ConfigMap symlink swaps, counters."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sidegate.ratelimit import metrics
from sidegate.ratelimit.reload import rule_watcher
from tests.ratelimit.conftest import OK, OVER, ServiceFactory, descriptor, request

V1 = "domain: r\ndescriptors:\n  - key: k\n    rate_limit: {requests_per_unit: 3, unit: year}\n"
V2 = V1.replace("3", "5")


def loads(result: str) -> float:
    return metrics.CONFIG_LOADS.labels(result)._value.get()


async def test_counters_survive_when_only_numbers_change(make_service: ServiceFactory) -> None:
    # Token buckets: a refused request costs nothing (fixed windows are tested below).
    service = await make_service({"r.yaml": V1}, default_algorithm="token_bucket")
    req = request("r", [("k", "v")])
    assert [(await service.should_rate_limit(req)).overall_code for _ in range(4)] == \
        [OK, OK, OK, OVER]
    (service.settings.rules_dir / "r.yaml").write_text(V2)
    assert service.reload()
    # 3 used of now 5: exactly 2 more.
    answers = [await service.should_rate_limit(req) for _ in range(3)]
    assert [a.overall_code for a in answers] == [OK, OK, OVER]
    assert answers[0].statuses[0].current_limit.requests_per_unit == 5


async def test_fixed_window_counter_survives(make_service: ServiceFactory) -> None:
    service = await make_service({"r.yaml": V1}, default_algorithm="fixed_window")
    req = request("r", [("k", "v")])
    for _ in range(2):
        await service.should_rate_limit(req)
    (service.settings.rules_dir / "r.yaml").write_text(V2)
    assert service.reload()
    response = await service.should_rate_limit(req)
    assert response.statuses[0].limit_remaining == 2


async def test_bad_file_keeps_old_rules(make_service: ServiceFactory) -> None:
    service = await make_service({"r.yaml": V1})
    before = service.rules
    errors = loads("error")
    (service.settings.rules_dir / "other.yaml").write_text("domain: r\n")  # duplicate domain
    assert service.reload() is False
    assert service.rules is before
    assert loads("error") == errors + 1
    response = await service.should_rate_limit(request("r", descriptor([("k", "v")], hits=0)))
    assert response.statuses[0].current_limit.requests_per_unit == 3


def _configmap(root: Path, version: str, files: dict[str, str]) -> None:
    """Lay out a directory the way the kubelet projects a ConfigMap volume."""
    data = root / f"..{version}"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    link = root / "..data_tmp"
    link.symlink_to(data.name)
    os.replace(link, root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")


async def test_configmap_symlink_swap(tmp_path: Path, make_service: ServiceFactory) -> None:
    root = tmp_path / "cm"
    root.mkdir()
    _configmap(root, "2026_01_01_v1", {"r.yaml": V1})
    service = await make_service({}, rules_dir=root)
    reloads: list[bool] = []

    async def reload() -> bool:
        reloads.append(await service.reload_async())
        return reloads[-1]

    watcher = rule_watcher(root, reload, interval=3600)
    watcher.start()
    assert await watcher.check() is False  # nothing changed yet
    # Same size, same name: only the ..data target changes.
    _configmap(root, "2026_01_01_v2", {"r.yaml": V2})
    assert await watcher.check() is True
    assert reloads == [True]
    assert service.rules.files == (str(root / "r.yaml"),)  # ..data itself is never read twice
    response = await service.should_rate_limit(request("r", [("k", "v")]))
    assert response.statuses[0].current_limit.requests_per_unit == 5
    assert await watcher.check() is False
    await watcher.stop()


async def test_watcher_task_reloads(tmp_path: Path, make_service: ServiceFactory) -> None:
    service = await make_service({"r.yaml": V1})
    called: list[int] = []
    async def reload() -> None:
        called.append(1)

    watcher = rule_watcher(service.settings.rules_dir, reload, interval=0.01)
    watcher.start()
    try:
        (service.settings.rules_dir / "new.yaml").write_text("domain: n\n")
        for _ in range(500):  # bounded wait for the poller, no timing assertion
            if called:
                break
            await asyncio.sleep(0.01)
        assert called
    finally:
        await watcher.stop()
