"""Driving HTTP load with wrk (Debian package ``wrk``) and reading its result.

A Lua ``done()`` hook prints one machine-readable line with the request count, the error
counters (``status`` = non-2xx/3xx responses) and latency percentiles in microseconds; wrk keeps
no per-response hook, so it stays as cheap as plain wrk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError

_MARKER = "BENCH_JSON "
_DONE_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
    .. '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    "__MARKER__", summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""
# Headers a browser or API client sends; they make Envoy's CheckRequest a realistic size.
REQUEST_HEADERS = (
    "User-Agent: sidegate-bench/1 (wrk)",
    "Accept: application/json",
    "Accept-Encoding: gzip, deflate",
    "X-Client-Version: 2.14.1",
)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError(
            "wrk is not installed: the Envoy bench drives HTTP load with it "
            "(apt-get install -y wrk)"
        )
    return found


def run_wrk(url: str, *, duration_s: float, connections: int, threads: int,
            workdir: Path, timeout_s: float = 2.0) -> WrkResult:
    """One bounded wrk run against ``url`` (loopback only)."""
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"the bench only loads loopback addresses, not {url}")
    script = workdir / "bench_done.lua"
    if not script.exists():
        script.write_text(_DONE_SCRIPT.replace("__MARKER__", _MARKER))
    threads = max(1, min(threads, connections))
    argv = [wrk_binary(), "-t", str(threads), "-c", str(connections),
            "-d", f"{max(1, round(duration_s))}s", "--timeout", f"{timeout_s:g}s",
            "-s", str(script)]
    for header in REQUEST_HEADERS:
        argv += ["-H", header]
    argv.append(url)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=duration_s + timeout_s + 30)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk_output(proc.stdout)


def parse_wrk_output(stdout: str) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER):])
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                errors={k: data[k] for k in ("connect", "read", "write", "status", "timeout")},
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise BenchError(f"wrk printed no result line:\n{stdout}")
