"""Every command the README and docs/ show as runnable is run, so a false instruction fails CI.

A fenced block whose info string is ``sh runnable`` is extracted and run with bash
(``set -euo pipefail``) in a fresh directory laid out like the checkout a reader has: the
``examples/`` and ``policies/`` folders, and ``.venv`` pointing at the environment running the
tests (so ``.venv/bin/sidegate`` and a plain ``sidegate`` both work). Anything the block starts in
the background is stopped when it ends. A block that starts servers uses the documented default
ports, so it waits for them itself (as a reader would) and fails if they are taken.
Blocks meant for reading only stay plain ``sh``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FENCE = re.compile(r"^```sh runnable[^\n]*\n(?P<body>.*?)^```\s*$", re.M | re.S)
BLOCK_TIMEOUT_S = 180


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    text: str

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(REPO_ROOT)}:{self.line}"


def runnable_blocks() -> list[Block]:
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    blocks = []
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(doc, line, match["body"]))
    return blocks


def test_the_docs_mark_commands_as_runnable() -> None:
    # The test below must have something to run: a reader's first commands at least.
    assert any(b.doc.name == "README.md" for b in runnable_blocks())


def stop_group(pgid: int, patience_s: float = 30.0) -> None:
    """SIGTERM every process of the group, wait until none is left, SIGKILL what lingers."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def reader_checkout(workdir: Path) -> Path:
    for folder in ("examples", "policies"):
        shutil.copytree(REPO_ROOT / folder, workdir / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    (workdir / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return workdir


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.name)
def test_documented_commands_run_as_written(block: Block, tmp_path: Path) -> None:
    workdir = reader_checkout(tmp_path / "checkout")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("SIDEGATE_")
    }
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    script = "set -euo pipefail\n" + block.text
    # Output to a file, not a pipe: servers the block starts in the background keep a pipe
    # open, and waiting for its end would wait for them.
    log_path = tmp_path / "output.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_group(proc.pid)
            pytest.fail(
                f"{block.name}: still running after {BLOCK_TIMEOUT_S}s:\n"
                f"{log_path.read_text(errors='replace')[-4000:]}"
            )
        finally:
            # Servers the block put in the background die with it, and are gone (their ports
            # free) before the next block starts.
            stop_group(proc.pid)
    output = log_path.read_bytes()
    assert proc.returncode == 0, (
        f"{block.name} failed (exit {proc.returncode}):\n{block.text}\n--- output ---\n"
        f"{output.decode(errors='replace')[-4000:]}"
    )
