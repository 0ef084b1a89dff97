"""HTTP load through a real Envoy: null baseline vs sidegate, per filter case and server model.

For every round, case and backend a fresh Envoy (the bench variant of examples/envoy.yaml) is
started in front of the already-running backend, warmed up, then loaded with wrk for a fixed
duration. A run only counts when every response was 2xx and Envoy's counters agree with wrk:
each request was authorised (``ext_authz.ok``) and/or rate-limited (``ratelimit.ok``) exactly
once, and nothing was denied, limited, failed open or errored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import Backend, BenchError, Envoy, null_label
from bench.stats import Spread, paired_ratios, spread, table
from bench.wrk import run_wrk

CASE_LABELS = {
    "none": "Envoy alone (no filters)",
    "authz": "ext_authz only",
    "ratelimit": "rate limit only",
    "both": "ext_authz + rate limit",
}
# Envoy emits both filters' counters under the route's target cluster ("upstream").
_AUTHZ = "cluster.upstream.ext_authz."
_RATELIMIT = "cluster.upstream.ratelimit."
_MUST_BE_ZERO = {
    "authz": [_AUTHZ + s for s in ("denied", "error", "failure_mode_allowed", "disabled")],
    "ratelimit": [_RATELIMIT + s for s in ("error", "over_limit", "failure_mode_allowed")],
    "http": ["http.ingress.downstream_rq_4xx", "http.ingress.downstream_rq_5xx"],
}


@dataclass(frozen=True)
class EnvoyBenchOptions:
    runs: int = 3
    duration_s: float = 10.0
    warmup_s: float = 2.0
    connections: int = 32
    wrk_threads: int = 2
    envoy_concurrency: int = 1
    cases: tuple[str, ...] = ("authz", "ratelimit", "both")
    path: str = "/bench"
    # the workload (bench/workload.py): paths and tokens rotated per request, extra descriptors
    workload: str = "anonymous"
    paths: tuple[str, ...] = ("/bench",)
    tokens_file: Path | None = None
    extra_descriptors: bool = False
    # fixed-rate runs: total requests/s (0: closed loop, as fast as the server answers)
    rate: float = 0.0


@dataclass
class EnvoyRun:
    round: int
    case: str
    backend: str
    rps: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    counters: dict[str, int] = field(default_factory=dict)
    workload: str = "anonymous"
    rate: float = 0.0  # fixed-rate run: the target req/s (0: closed loop)
    p999_ms: float = 0.0
    # fixed-rate runs: latency from the scheduled send time, and sends behind schedule
    paced_p50_ms: float = 0.0
    paced_p99_ms: float = 0.0
    paced_p999_ms: float = 0.0
    paced_max_ms: float = 0.0
    late_share: float = 0.0
    problem: str = ""  # set when verification failed: the run is reported, not counted
    # CPU time per request (µs, all threads): steadier than req/s on a shared machine, since
    # it does not depend on the share of the cores the process got.
    backend_cpu_us_per_req: float = 0.0
    envoy_cpu_us_per_req: float = 0.0

    @property
    def valid(self) -> bool:
        return not self.problem


def _delta(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def verify_run(case: str, requests: int, wrk_errors: dict[str, int], before: dict[str, int],
               after: dict[str, int], connections: int) -> dict[str, int]:
    """Raise BenchError unless the run is trustworthy; return the counters checked.

    wrk stops with up to one request in flight per connection: Envoy may have finished
    those (counted by Envoy, not by wrk), hence the tolerance of ``connections``.
    """
    if requests == 0:
        raise BenchError(f"[{case}] wrk completed no request")
    bad = {k: v for k, v in wrk_errors.items() if v}
    if bad:
        raise BenchError(f"[{case}] wrk saw errors (status = non-2xx responses): {bad}")
    checked: dict[str, int] = {}
    expected = ["http.ingress.downstream_rq_2xx"]
    zero = list(_MUST_BE_ZERO["http"])
    if case in ("authz", "both"):
        expected.append(_AUTHZ + "ok")
        zero += _MUST_BE_ZERO["authz"]
    if case in ("ratelimit", "both"):
        expected.append(_RATELIMIT + "ok")
        zero += _MUST_BE_ZERO["ratelimit"]
    problems = []
    for name in expected:
        count = checked[name] = _delta(before, after, name)
        if not requests <= count <= requests + connections:
            problems.append(f"{name} = {count} (expected {requests}..{requests + connections})")
    for name in zero:
        count = checked[name] = _delta(before, after, name)
        if count:
            problems.append(f"{name} = {count} (expected 0)")
    if problems:
        raise BenchError(f"[{case}] Envoy's counters disagree with wrk's {requests} requests: "
                         + "; ".join(problems))
    return checked


def run_one(workdir: Path, case: str, backend: Backend | None, backend_port: int,
            opts: EnvoyBenchOptions, round_index: int) -> EnvoyRun:
    """One measured run; a run whose counters do not add up comes back with ``problem`` set."""
    label = "envoy" if backend is None else backend.label
    envoy = Envoy(workdir, case, backend_port, opts.envoy_concurrency, opts.extra_descriptors)
    envoy.start()
    try:
        url = f"http://127.0.0.1:{envoy.port}{opts.path}"
        common = {"connections": opts.connections, "threads": opts.wrk_threads,
                  "workdir": workdir, "paths": opts.paths, "tokens_file": opts.tokens_file,
                  "rate": opts.rate}
        if opts.warmup_s > 0:
            run_wrk(url, duration_s=opts.warmup_s, **common)  # type: ignore[arg-type]
        # wrk leaves up to one request per connection in flight when it stops: wait until
        # Envoy has finished them so they count in neither window.
        before = envoy.settled_counters()
        cpu_before = _cpu(envoy, backend)
        result = run_wrk(url, duration_s=opts.duration_s, **common)  # type: ignore[arg-type]
        cpu_after = _cpu(envoy, backend)
        after = envoy.settled_counters()
        envoy.child.check_alive()
        if backend is not None:
            backend.child.check_alive()
        problem = ""
        counters: dict[str, int] = {}
        try:
            counters = verify_run(case, result.requests, result.errors, before, after,
                                  opts.connections)
        except BenchError as exc:
            problem = str(exc)
    except BenchError as exc:
        logs = f"--- envoy log tail ---\n{envoy.child.tail(1500)}"
        if backend is not None:
            logs += f"\n--- {label} log tail ---\n{backend.child.tail(2500)}"
        raise BenchError(f"{label}, round {round_index}: {exc}\n{logs}") from None
    finally:
        envoy.stop()
    return EnvoyRun(
        round=round_index, case=case, backend=label,
        rps=result.rps, requests=result.requests, p50_ms=result.p50_ms, p90_ms=result.p90_ms,
        p99_ms=result.p99_ms, max_ms=result.max_ms, counters=counters, problem=problem,
        workload=opts.workload, rate=opts.rate, p999_ms=result.p999_ms,
        paced_p50_ms=result.paced_p50_ms, paced_p99_ms=result.paced_p99_ms,
        paced_p999_ms=result.paced_p999_ms, paced_max_ms=result.paced_max_ms,
        late_share=result.late / result.scheduled if result.scheduled else 0.0,
        backend_cpu_us_per_req=_per_request(cpu_after[1] - cpu_before[1], result.requests),
        envoy_cpu_us_per_req=_per_request(cpu_after[0] - cpu_before[0], result.requests),
    )


def _cpu(envoy: Envoy, backend: Backend | None) -> tuple[float, float]:
    return envoy.child.cpu_seconds(), 0.0 if backend is None else backend.cpu_seconds()


def _per_request(cpu_s: float, requests: int) -> float:
    return cpu_s * 1e6 / requests if requests else 0.0


def run_envoy_bench(workdir: Path, backends: Sequence[Backend], opts: EnvoyBenchOptions,
                    progress: Callable[[str], None] = print,
                    round_offset: int = 0) -> list[EnvoyRun]:
    """Rounds outermost, so every backend of a case sees roughly the same machine load."""
    if not backends:
        raise BenchError("no backend to benchmark")
    runs: list[EnvoyRun] = []
    for round_index in range(1 + round_offset, opts.runs + 1 + round_offset):
        for case in opts.cases:
            targets: list[Backend | None] = [None] if case == "none" else list(backends)
            for backend in targets:
                port = (backend or backends[0]).grpc_port
                run = run_one(workdir, case, backend, port, opts, round_index)
                runs.append(run)
                progress(_progress_line(run))
    return runs


def _progress_line(run: EnvoyRun) -> str:
    head = f"  round {run.round} {run.workload:<10} {run.case:<9} {run.backend:<22}"
    if run.rate:
        body = (f" @{run.rate:>5.0f}/s: {run.rps:>7,.0f} req/s  p50 {run.paced_p50_ms:6.2f}"
                f"  p99 {run.paced_p99_ms:7.2f}  p99.9 {run.paced_p999_ms:7.2f} ms"
                f"  late {run.late_share:6.1%}")
    else:
        body = (f" {run.rps:>9,.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms"
                f"  server CPU {run.backend_cpu_us_per_req:5.0f} us/req")
    return head + body + (f"  REJECTED: {run.problem}" if run.problem else "")


@dataclass(frozen=True)
class CaseSummary:
    case: str
    backend: str
    rps: Spread
    p50_ms: Spread
    p99_ms: Spread
    cpu_us: Spread
    vs_null: Spread | None  # sidegate / null with the same server model, paired per round
    workload: str = "anonymous"
    rate: float = 0.0
    p999_ms: Spread | None = None
    late_share: Spread | None = None
    # fixed-rate runs: sidegate's p99 minus null's p99 (ms), paired per round
    p99_added_ms: Spread | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("vs_null", "p999_ms", "late_share", "p99_added_ms"):
            value = getattr(self, name)
            data[name] = None if value is None else value.as_dict()
        return data


def _metric(run: EnvoyRun, metric: str) -> float:
    return float(getattr(run, metric))


def _by_round(runs: Sequence[EnvoyRun], key: tuple[str, float, str], backend: str,
              metric: str = "rps") -> dict[int, float]:
    return {r.round: _metric(r, metric) for r in runs
            if (r.workload, r.rate, r.case) == key and r.backend == backend and r.valid}


def summarize(runs: Sequence[EnvoyRun]) -> list[CaseSummary]:
    """Medians over the valid runs only; fixed-rate runs report latency from the schedule."""
    out = []
    runs = [r for r in runs if r.valid]
    keys = list(dict.fromkeys((r.workload, r.rate, r.case, r.backend) for r in runs))
    for workload, rate, case, backend in keys:
        key = (workload, rate, case)
        mine = [r for r in runs if (r.workload, r.rate, r.case, r.backend) == (*key, backend)]
        vs_null = added = None
        if backend.startswith("sidegate"):
            null = null_label(backend)
            vs_null = paired_ratios(_by_round(runs, key, backend), _by_round(runs, key, null))
            vs_null = vs_null if vs_null.n else None
            if rate:
                mine_p99 = _by_round(runs, key, backend, "paced_p99_ms")
                null_p99 = _by_round(runs, key, null, "paced_p99_ms")
                deltas = [mine_p99[r] - null_p99[r] for r in mine_p99 if r in null_p99]
                added = spread(deltas) if deltas else None
        p = "paced_" if rate else ""
        out.append(CaseSummary(
            case=case, backend=backend, rps=spread([r.rps for r in mine]),
            p50_ms=spread([_metric(r, p + "p50_ms") for r in mine]),
            p99_ms=spread([_metric(r, p + "p99_ms") for r in mine]),
            cpu_us=spread([r.backend_cpu_us_per_req for r in mine]), vs_null=vs_null,
            workload=workload, rate=rate,
            p999_ms=spread([_metric(r, p + "p999_ms") for r in mine]),
            late_share=spread([r.late_share * 100 for r in mine]) if rate else None,
            p99_added_ms=added,
        ))
    return out


def model_comparison(runs: Sequence[EnvoyRun], kind: str = "sidegate",
                     metric: str = "rps") -> dict[str, Spread]:
    """threads / aio per workload and case for one backend kind, paired per round (req/s or
    CPU/request); closed-loop runs only."""
    out = {}
    valid = [r for r in runs if r.valid and not r.rate]
    for workload, case in dict.fromkeys((r.workload, r.case) for r in valid):
        def by_round(model: str, workload: str = workload, case: str = case) -> dict[int, float]:
            return {r.round: (r.rps if metric == "rps" else r.backend_cpu_us_per_req)
                    for r in valid if (r.workload, r.case) == (workload, case)
                    and r.backend == f"{kind}/{model}"}

        ratio = paired_ratios(by_round("threads"), by_round("aio"))
        if ratio.n:
            out[f"{workload} {CASE_LABELS.get(case, case)}"] = ratio
    return out


def render(summaries: Sequence[CaseSummary], runs: Sequence[EnvoyRun]) -> str:
    lines: list[str] = []
    for workload in dict.fromkeys(s.workload for s in summaries):
        closed = [s for s in summaries if s.workload == workload and not s.rate]
        paced = [s for s in summaries if s.workload == workload and s.rate]
        if closed:
            rows = [
                [CASE_LABELS.get(s.case, s.case), s.backend, s.rps.fmt(), s.p50_ms.fmt(2),
                 s.p99_ms.fmt(2), "-" if s.p999_ms is None else s.p999_ms.fmt(1),
                 "-" if s.backend == "envoy" else s.cpu_us.fmt(),
                 "-" if s.vs_null is None else s.vs_null.fmt(2)]
                for s in closed
            ]
            lines += [f"[{workload}] closed loop (as fast as answered)", table(
                ["case", "server", "req/s median (min-max)", "p50 ms", "p99 ms", "p99.9 ms",
                 "server CPU us/req", "sidegate/null same model"], rows), ""]
        if paced:
            rows = [
                [f"{s.rate:,.0f}/s", CASE_LABELS.get(s.case, s.case), s.backend, s.rps.fmt(),
                 s.p50_ms.fmt(2), s.p99_ms.fmt(2),
                 "-" if s.p999_ms is None else s.p999_ms.fmt(1),
                 "-" if s.late_share is None else s.late_share.fmt(1),
                 "-" if s.p99_added_ms is None else s.p99_added_ms.fmt(1)]
                for s in paced
            ]
            lines += [f"[{workload}] fixed rate (latency from each request's scheduled time)",
                      table(["rate", "case", "server", "achieved req/s", "p50 ms", "p99 ms",
                             "p99.9 ms", "late %", "p99 minus null p99, ms"], rows), ""]
    rejected = [r for r in runs if not r.valid]
    for r in rejected:
        lines.append(f"REJECTED round {r.round} {r.workload} {r.case} {r.backend}: {r.problem}")
    if rejected:
        lines.append("")
    for kind in ("sidegate", "null"):
        cpu = model_comparison(runs, kind, "cpu")
        for case, ratio in model_comparison(runs, kind).items():
            lines.append(f"{kind}: threads/aio, {case}: "
                         f"req/s {ratio.fmt(2)}, CPU per request {cpu[case].fmt(2)}")
    return "\n".join(lines).rstrip()
