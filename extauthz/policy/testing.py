"""``sidegate policy test``: run the ``test_*`` rules of ``*_test.rego`` files, as ``opa test``.

A test passes when its rule is ``true``; ``false`` or undefined fails it; an evaluation error
is an error. Rules are evaluated in worker subprocesses, one per test file: rego-cpp 1.5.2
can crash the process (a whole-input mock ``with input as {...}`` over a rule that calls
another rule crashes every query of the interpreter that holds it), and a crash must be
reported as that test's error, not end the run (see ``run_tests``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from sidegate.extauthz.policy import rego_native
from sidegate.extauthz.policy.builtins_check import unsupported_calls
from sidegate.extauthz.policy.embedded import (
    PolicyCompileError,
    compile_policies,
    new_interpreter,
)
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError
from sidegate.extauthz.policy.sources import PolicySourceError, read_sources

# Results are framed with this prefix: rego-cpp prints its own diagnostics to stdout.
_FRAME = "\x1esidegate-test\x1f"
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class TestCase:
    file: str
    package: str
    rule: str

    @property
    def ref(self) -> str:
        return f"data.{self.package}.{self.rule}"


@dataclass(frozen=True, slots=True)
class TestResult:
    case: TestCase
    outcome: str  # PASS, FAIL, ERROR
    detail: str = ""
    seconds: float = 0.0


def discover(directory: Path) -> list[TestCase]:
    sources = read_sources(directory, require_policies=False)
    cases = []
    for module in sources.test_modules:
        for rule in sorted(module.rule_names()):
            if rule.startswith("test_"):
                cases.append(TestCase(str(module.path), module.package, rule))
    return cases


# --- the worker (runs in a subprocess) ------------------------------------------------------


def _worker(directory: Path, file: str, rule: str, commands: TextIO, results: IO[str]) -> None:
    """Evaluate test refs read from ``commands`` with the policies and one test module loaded
    (only ``rule`` of it, when given)."""
    sources = read_sources(directory, require_policies=False)
    module = next(m for m in sources.test_modules if str(m.path) == file)
    if rule:
        module = module.with_only_test(rule)
    interpreter = new_interpreter(sources, [module])
    results.write(f"{_FRAME}{json.dumps({'ready': True})}\n")
    results.flush()
    for line in commands:
        ref = line.strip()
        if not ref:
            continue
        started = time.perf_counter()
        try:
            value = rego_native.query_ref(interpreter, ref)
            outcome = "PASS" if value is True else "FAIL"
            detail = "" if value is True else f"got {_show(value)}"
        except PolicyError as exc:
            outcome, detail = "ERROR", exc.reason
        message = {
            "ref": ref,
            "outcome": outcome,
            "detail": detail,
            "seconds": time.perf_counter() - started,
        }
        results.write(f"{_FRAME}{json.dumps(message)}\n")
        results.flush()


def _show(value: object) -> str:
    return "undefined" if value is UNDEFINED else json.dumps(value)[:200]


# --- the runner -----------------------------------------------------------------------------


class _Worker:
    def __init__(self, directory: Path, file: str, rule: str = "") -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable, "-m", "sidegate.extauthz.policy.testing", "--worker", str(directory)
        ]
        self.proc = subprocess.Popen(
            [*command, file, rule],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.messages: queue.Queue[dict[str, object] | None] = queue.Queue()
        self.noise: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_FRAME):
                self.messages.put(json.loads(line[len(_FRAME) :]))
            elif line.strip():
                self.noise.append(line.rstrip())
        self.messages.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                self.noise.append(line.rstrip())

    def send(self, ref: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(ref + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict[str, object] | None:
        """The next message; None when the worker died or timed out (then it is killed)."""
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            message = None
        if message is None:
            self.kill()
        return message

    def died_how(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "timed out"
        if code < 0:
            return f"policy engine crashed (signal {-code})"
        tail = "; ".join(self.noise[-3:])
        return f"worker exited with status {code}" + (f": {tail}" if tail else "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()


def _run_in_worker(
    directory: Path, cases: list[TestCase], timeout: float, *, isolated: bool
) -> Iterator[TestResult]:
    """Run ``cases`` (one file's) in one worker; stop at the first crash, yielding it."""
    worker = _Worker(directory, cases[0].file, cases[0].rule if isolated else "")
    try:
        if worker.receive(timeout) is None:
            reason = worker.died_how()
            for case in cases:
                yield TestResult(case, "ERROR", reason)
            return
        for case in cases:
            worker.send(case.ref)
            started = time.perf_counter()
            message = worker.receive(timeout)
            if message is None:
                yield TestResult(case, "ERROR", worker.died_how(), time.perf_counter() - started)
                return
            yield TestResult(
                case,
                str(message["outcome"]),
                str(message["detail"]),
                float(message["seconds"]),  # type: ignore[arg-type]
            )
    finally:
        worker.close()


def run_tests(
    directory: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cases: list[TestCase] | None = None,
) -> Iterator[TestResult]:
    """Yield one result per test rule, in file then rule order.

    Each file runs in one worker with only that test module loaded. A crash takes the whole
    interpreter down, whichever rule triggered it, so after a crash every test of that file
    is rerun alone, its file stripped of the other test rules: the crash lands on its cause.
    """
    by_file: dict[str, list[TestCase]] = {}
    for case in discover(directory) if cases is None else cases:
        by_file.setdefault(case.file, []).append(case)
    for cases in by_file.values():
        results = list(_run_in_worker(directory, cases, timeout, isolated=False))
        if all(r.outcome != "ERROR" or "crashed" not in r.detail for r in results):
            yield from results
            continue
        for case in cases:
            yield from _run_in_worker(directory, [case], timeout, isolated=True)


# Exit codes as ``opa test``: 0 all passed, 1 the policies or paths could not be loaded,
# 2 a test failed or errored.
EXIT_OK, EXIT_LOAD_ERROR, EXIT_FAILED = 0, 1, 2


@contextlib.contextmanager
def staged(paths: Sequence[Path]) -> Iterator[tuple[Path, dict[str, str]]]:
    """One directory holding ``paths`` (directories and single files, like ``opa test``'s
    arguments), and how to name its files in the report: a lone directory is used as it is;
    anything else is copied into a temporary directory (policy files are small, and the
    directory walk does not follow links)."""
    if len(paths) == 1 and paths[0].is_dir():
        yield paths[0], {}
        return
    with tempfile.TemporaryDirectory(prefix="sidegate-policy-test-") as tmp:
        names: dict[str, str] = {}
        for index, path in enumerate(paths):
            if not path.exists():
                raise PolicySourceError(f"{path}: no such file or directory")
            copy = Path(tmp) / f"{index}-{path.name}"
            if path.is_dir():
                shutil.copytree(path, copy)
            else:
                shutil.copyfile(path, copy)
            names[str(copy)] = str(path)
        yield Path(tmp), names


def _shown(text: str, names: dict[str, str]) -> str:
    """``text`` (a file name, or a message starting with one) under the user's path."""
    for copy, original in names.items():
        if text.startswith(copy) and text[len(copy) : len(copy) + 1] in ("", "/", ":"):
            return original + text[len(copy) :]
    return text


def report(
    paths: Path | Sequence[Path],
    out: TextIO,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    verbose: bool = True,
    run: str | None = None,
    err: TextIO | None = None,
) -> int:
    """Print results like ``opa test`` (every test with ``verbose``, else failures only) and
    a summary; ``run`` (a regular expression) selects tests by their ``data.pkg.test_x`` name.
    Load errors go to ``err`` (default: ``out``)."""
    err = out if err is None else err
    if isinstance(paths, Path):
        paths = [paths]
    try:
        pattern = re.compile(run) if run else None
    except re.error as exc:
        print(f"error: --run {run!r}: {exc}", file=err)
        return EXIT_LOAD_ERROR
    try:
        with staged(paths) as (directory, names):
            return _report(directory, names, out, err, timeout, verbose, pattern)
    except (PolicySourceError, PolicyCompileError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_LOAD_ERROR


def _report(
    directory: Path,
    names: dict[str, str],
    out: TextIO,
    err: TextIO,
    timeout: float,
    verbose: bool,
    pattern: re.Pattern[str] | None,
) -> int:
    sources = read_sources(directory, require_policies=False)
    # What the engine cannot evaluate is a load error, in test files too: a test would pass on
    # the undefined it produces. Policies that do not compile are one load error (exit 1, as
    # opa test), not one error per test.
    problems = unsupported_calls(sources.modules)
    if problems:
        for problem in problems:
            print(f"error: {_shown(str(problem), names)}", file=err)
        return EXIT_LOAD_ERROR
    if sources.policy_modules:
        compile_policies(directory, ())
    cases = [c for c in discover(directory) if pattern is None or pattern.search(c.ref)]
    if not cases:
        where = ", ".join(names.values()) or str(directory)
        print(f"{where}: no test_* rules in *_test.rego files", file=err)
        return EXIT_LOAD_ERROR
    counts = {"PASS": 0, "FAIL": 0, "ERROR": 0}
    current_file = ""
    for result in run_tests(directory, timeout=timeout, cases=cases):
        counts[result.outcome] += 1
        if not verbose and result.outcome == "PASS":
            continue
        if result.case.file != current_file:
            current_file = result.case.file
            print(f"{_shown(current_file, names)}:", file=out)
        line = f"{result.case.ref}: {result.outcome} ({result.seconds * 1000:.1f}ms)"
        if result.detail:
            line += f"\n  {result.detail}"
        print(line, file=out)
    print("-" * 80, file=out)
    total = sum(counts.values())
    for outcome in ("PASS", "FAIL", "ERROR"):
        if counts[outcome]:
            print(f"{outcome}: {counts[outcome]}/{total}", file=out)
    return EXIT_OK if counts["PASS"] == total else EXIT_FAILED


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.stdin, sys.stdout)
    else:
        raise SystemExit(report(Path(sys.argv[1] if len(sys.argv) > 1 else "policies"), sys.stdout))
