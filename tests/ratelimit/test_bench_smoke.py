"""bench/ratelimit_bench.py runs end to end (a few calls per case); never how fast anything is."""

from __future__ import annotations

import argparse

import pytest

from bench.ratelimit_bench import main_async


async def test_bench_runs(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await main_async(argparse.Namespace(runs=1, calls=20, concurrency=4, redis_url=redis_url))
    out = capsys.readouterr().out
    for case in ("sidegate memory token_bucket", "sidegate redis token_bucket",
                 "sidegate redis store only (1 EVALSHA)", "limits redis fixed_window"):
        assert case in out
    assert "3 descriptor(s): sidegate redis / limits fixed_window" in out
