"""Seeded config fuzz: mutated sidegate.yaml, rule files and key files through ``check-config``.

Every case must end with exit 0 or 1 and a message (never a traceback, never another code), and
stay within 5 s of CPU and 200 MB. CPU is measured per case with the process clock and memory as
the growth of peak RSS, both immune to how busy the machine is; a few cases also run through the
front door in a subprocess under a kernel CPU limit.
"""

from __future__ import annotations

import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidegate.cli import main
from tests.conftest import REPO_ROOT

SEED = 20261201
CASES = 330
MAX_CPU_S = 5.0
MAX_RSS_GROWTH_KIB = 200 * 1024

EXAMPLES = REPO_ROOT / "examples"
TARGETS = ("sidegate.yaml", "ratelimit/sidegate.yaml", "api-keys.yaml")

SCALARS = [
    "null", "~", "true", "no", "0", "-1", "1e309", "99999999999999999999999", "0x1F", "''",
    '"\\u0000"', "[]", "{}", "[1, [2, [3]]]", "{a: {b: {c: d}}}", "*undefined_alias", "&a x",
    "!!binary aGVsbG8=", "!!python/object:os.system x", "2026-01-01", "'../../../../etc/passwd'",
    "\"\\xff\"", "|\n  block", "? complex\n: key", "!!set {a, b}", "- item",
]


def _lines(text: str) -> list[str]:
    return text.split("\n")


def flip_byte(rng: random.Random, raw: bytes) -> bytes:
    if not raw:
        return raw
    i = rng.randrange(len(raw))
    return raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :]


def insert_bytes(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randrange(len(raw) + 1)
    junk = rng.choice([b"\xff\xfe", b"\x00", b"\t", b":", b"- ", b"{", b"[", b"&a ", b"*a", b"\r"])
    return raw[:i] + junk + raw[i:]


def truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randrange(len(raw) + 1)]


def duplicate_line(rng: random.Random, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return b"\n".join(lines)


def delete_line(rng: random.Random, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def reindent(rng: random.Random, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    i = rng.randrange(len(lines))
    lines[i] = (b"  " * rng.randrange(4)) + lines[i].lstrip(b" ")
    return b"\n".join(lines)


def replace_value(rng: random.Random, raw: bytes) -> bytes:
    lines = raw.decode("utf-8", "replace").split("\n")
    candidates = [
        i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")
    ]
    if not candidates:
        return raw
    i = rng.choice(candidates)
    key, _, _ = lines[i].partition(": ")
    lines[i] = f"{key}: {rng.choice(SCALARS)}"
    return "\n".join(lines).encode()


def deep_nesting(rng: random.Random, raw: bytes) -> bytes:
    depth = rng.choice([50, 500, 5000])
    return raw + b"\nzz: " + b"[" * depth + b"]" * depth + b"\n"


def alias_bomb(rng: random.Random, raw: bytes) -> bytes:
    bomb = ['lol0: &l0 ["x","x","x","x","x","x","x","x","x"]'] + [
        f"lol{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)
    ]
    return raw + b"\n" + "\n".join(bomb).encode() + b"\n"


def swap_lines(rng: random.Random, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    flip_byte, insert_bytes, truncate, duplicate_line, delete_line, reindent, replace_value,
    replace_value, replace_value, deep_nesting, alias_bomb, swap_lines,
]


def workspace(root: Path) -> Path:
    """examples/ copied with a one-rule policy beside it (sidegate.yaml says ../policies): the
    fuzz is about the YAML files, and compiling the shipped policies 300 times is not."""
    ws = root / "ws"
    shutil.copytree(EXAMPLES, ws / "examples", ignore=shutil.ignore_patterns("__init__.py"))
    (ws / "policies" / "envoy").mkdir(parents=True)
    (ws / "policies" / "envoy" / "authz.rego").write_text(
        "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if true\n"
    )
    return ws / "examples"


def mutate(rng: random.Random, raw: bytes) -> bytes:
    for _ in range(rng.choice([1, 1, 2, 3])):
        raw = rng.choice(MUTATORS)(rng, raw)
    return raw


def test_the_unmutated_examples_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    examples = workspace(tmp_path)
    assert main(["check-config", str(examples / "sidegate.yaml")]) == 0, capsys.readouterr().err


def test_mutated_configs_rule_files_and_key_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = workspace(tmp_path)
    originals = {name: (examples / name).read_bytes() for name in TARGETS}
    rng = random.Random(SEED)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = {0: 0, 1: 0}
    worst_cpu = 0.0
    for case in range(CASES):
        target = TARGETS[case % len(TARGETS)]
        for name, raw in originals.items():
            (examples / name).write_bytes(raw)
        mutated = mutate(rng, originals[target])
        (examples / target).write_bytes(mutated)
        started = time.process_time()
        try:
            code = main(["check-config", str(examples / "sidegate.yaml")])
        except BaseException as exc:  # the test's report: which case escaped, and how
            raise AssertionError(f"case {case} ({target}) raised {exc!r}:\n{mutated!r}") from exc
        cpu = time.process_time() - started
        worst_cpu = max(worst_cpu, cpu)
        out = capsys.readouterr()
        assert code in (0, 1), (case, target, code, out.err)
        outcomes[code] += 1
        if code == 1:
            assert out.err.startswith("sidegate: "), (case, target, out.err)
            assert "Traceback" not in out.err
        else:
            assert out.out.strip().endswith(": ok")
        assert cpu < MAX_CPU_S, (case, target, cpu, mutated[:300])
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert rss_growth < MAX_RSS_GROWTH_KIB, rss_growth
    # the fuzz exercised both outcomes (a mutation can leave a file valid)
    assert outcomes[1] > CASES // 2 and outcomes[0] > 0, outcomes


def test_a_few_mutations_through_the_front_door(tmp_path: Path) -> None:
    examples = workspace(tmp_path)
    rng = random.Random(SEED + 1)
    originals = {name: (examples / name).read_bytes() for name in TARGETS}

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (int(MAX_CPU_S) + 10,) * 2)

    for case in range(3):
        target = TARGETS[case % len(TARGETS)]
        for name, raw in originals.items():
            (examples / name).write_bytes(raw)
        mutator = [alias_bomb, deep_nesting, insert_bytes][case % 3]
        (examples / target).write_bytes(mutator(rng, originals[target]))
        proc = subprocess.run(
            [sys.executable, "-m", "sidegate", "check-config", str(examples / "sidegate.yaml")],
            capture_output=True, text=True, preexec_fn=limits, timeout=300,
        )
        assert proc.returncode in (0, 1), (case, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
        if proc.returncode == 1:
            # gRPC's C core may add its own log lines (E1201 12:00:00 ... epoll_wait) to stderr
            assert "\nsidegate: " in "\n" + proc.stderr, proc.stderr
