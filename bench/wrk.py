"""Driving HTTP load with wrk (Debian package ``wrk``) and reading its result.

A Lua ``done()`` hook prints one machine-readable line with the request count, the error
counters (``status`` = non-2xx/3xx responses) and latency percentiles in microseconds; wrk keeps
no per-response hook, so it stays as cheap as plain wrk.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError

_MARKER = "BENCH_JSON "
# One script for every run. Without a rate, wrk's closed loop: each connection sends its next
# request as soon as the previous answer arrived. With ``RATE`` (requests/s per wrk thread) it
# paces like wrk2: request k is due at t0 + k/RATE; ``delay()`` holds a free connection until
# its slot, the request carries its due time in x-bench-t, the demo upstream echoes it, and the
# latency is measured from the due time, so a late send (every connection still waiting on a
# slow server) counts against the server (no coordinated omission). Tokens (one per line) and
# paths rotate per request.
_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
           int clock_gettime(int clk, bench_timespec *tp); ]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC: one clock for every wrk thread
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end
local TOKENS_FILE = "__TOKENS__"
local PATHS = {__PATHS__}
local RATE = __RATE__
local tokens = {}
if TOKENS_FILE ~= "" then
  for line in io.lines(TOKENS_FILE) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
end
local n = 0
threads = {}
setup = function(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end
init = function(args)
  n = (thread_index or 0) * 7919  -- each thread walks the tokens from its own offset
  lat, late, reserved, sent, t0 = {}, 0, 0, 0, nil
end
request = function()
  n = n + 1
  if #tokens > 0 then
    wrk.headers["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1]
  end
  if RATE > 0 then
    if reserved > sent then
      -- a paced send: the oldest slot delay() reserved and no request has used yet
      wrk.headers["x-bench-t"] = string.format("%d", t0 + math.floor(sent * 1000000 / RATE))
      sent = sent + 1
    else
      -- wrk builds one request per thread before any connection is paced: no slot of its own
      wrk.headers["x-bench-t"] = string.format("%d", now_us())
    end
  end
  return wrk.format(nil, PATHS[(n % #PATHS) + 1])
end
if RATE > 0 then
  delay = function()
    local now = now_us()
    if t0 == nil then t0 = now end
    local due = t0 + math.floor(reserved * 1000000 / RATE)
    reserved = reserved + 1
    local wait = due - now
    if wait < -1000 then late = late + 1 end  -- more than 1 ms behind its slot
    if wait <= 0 then return 0 end
    return math.ceil(wait / 1000)  -- never before its slot
  end
  response = function(status, headers, body)
    local due = headers["x-bench-t"]
    if due then lat[#lat + 1] = now_us() - tonumber(due) end
  end
end
done = function(summary, latency, requests)
  local all, late_total, scheduled = {}, 0, 0
  for _, thread in ipairs(threads) do
    local l = thread:get("lat")
    if l then for _, v in ipairs(l) do all[#all + 1] = v end end
    late_total = late_total + (thread:get("late") or 0)
    scheduled = scheduled + (thread:get("reserved") or 0)
  end
  table.sort(all)
  local function pct(p)
    if #all == 0 then return 0 end
    local i = math.ceil(#all * p / 100)
    if i < 1 then i = 1 end
    return all[i]
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
    .. '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,'
    .. '"paced":%d,"paced_p50_us":%d,"paced_p99_us":%d,"paced_p999_us":%d,'
    .. '"paced_max_us":%d,"late":%d,"scheduled":%d}\n',
    "__MARKER__", summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, #all, pct(50), pct(99), pct(99.9), pct(100),
    late_total, scheduled))
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
    p999_ms: float = 0.0
    # fixed-rate runs: latency from each request's scheduled send time (wrk2-style)
    paced: int = 0
    paced_p50_ms: float = 0.0
    paced_p99_ms: float = 0.0
    paced_p999_ms: float = 0.0
    paced_max_ms: float = 0.0
    late: int = 0  # requests sent more than 1 ms after their slot
    scheduled: int = 0

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


def wrk_script(workdir: Path, paths: tuple[str, ...], tokens_file: Path | None,
               rate_per_thread: float) -> Path:
    """The Lua script for one kind of run (written once per distinct kind)."""
    for value in (*paths, str(tokens_file or "")):
        if '"' in value or "\\" in value or "\n" in value:
            raise BenchError(f"unusable in the wrk script: {value!r}")
    text = (_SCRIPT.replace("__MARKER__", _MARKER)
            .replace("__TOKENS__", str(tokens_file or ""))
            .replace("__PATHS__", ", ".join(f'"{p}"' for p in paths))
            .replace("__RATE__", f"{rate_per_thread:g}"))
    name = f"bench-{hashlib.sha1(text.encode()).hexdigest()[:12]}.lua"
    script = workdir / name
    if not script.exists():
        script.write_text(text)
    return script


def run_wrk(url: str, *, duration_s: float, connections: int, threads: int,
            workdir: Path, timeout_s: float = 2.0, paths: tuple[str, ...] | None = None,
            tokens_file: Path | None = None, rate: float = 0.0) -> WrkResult:
    """One bounded wrk run against ``url`` (loopback only); ``rate`` > 0: fixed total
    requests/s (split over the wrk threads), latency measured from the schedule."""
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"the bench only loads loopback addresses, not {url}")
    base, _, first = url.partition("://")[2].partition("/")
    threads = max(1, min(threads, connections))
    script = wrk_script(workdir, paths or ("/" + first,), tokens_file,
                        rate / threads if rate > 0 else 0.0)
    url = f"http://{base}/"
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
                p999_ms=data["p999_us"] / 1000,
                paced=data["paced"],
                paced_p50_ms=data["paced_p50_us"] / 1000,
                paced_p99_ms=data["paced_p99_us"] / 1000,
                paced_p999_ms=data["paced_p999_us"] / 1000,
                paced_max_ms=data["paced_max_us"] / 1000,
                late=data["late"],
                scheduled=data["scheduled"],
            )
    raise BenchError(f"wrk printed no result line:\n{stdout}")
