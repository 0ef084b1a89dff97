"""A fresh virtualenv holding the built wheel, with its dependencies borrowed, not reinstalled.

Installing the wheel with full dependency resolution takes minutes here (grpcio, regopy,
cryptography, ... are unpacked again); the test environment already holds exactly those
distributions. So the fresh venv (no ``--system-site-packages``: nothing else of the test
environment is visible) gets one ``.pth`` line naming an *overlay* directory, made of symlinks to
the files of the wheel's declared dependencies only, followed transitively through
``Requires-Dist`` (markers and extras evaluated) in the test environment. The wheel itself is
installed by pip with ``--no-deps --no-index``; every declared requirement is checked to be
satisfied at an allowed version (what ``pip check`` does). A dependency the code imports but
the wheel does not declare is absent from the overlay, so the serve test fails as it would for
a user.

``SIDEGATE_WHEEL_FULL_INSTALL=1`` installs the wheel the plain way instead (pip resolves and
installs every dependency from the configured index): slower, and what a user does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

# What the build must not copy from a checkout (a developer's venv, caches, old builds).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache",
    ".ruff_cache", "bench/results",
)


def build_wheel(workdir: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the checkout (an in-tree build would leave
    ``build/`` and ``*.egg-info`` in the developer's tree)."""
    source = workdir / "src"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCE)
    dist = workdir / "dist"
    # Without build isolation (setuptools>=68 is in the test extra): an isolated build
    # installs setuptools afresh each time, which took 40 s of this test's time here.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(source)])
    wheels = sorted(dist.glob("sidegate-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def wheel_metadata(wheel: Path) -> tuple[list[str], list[str]]:
    """(Requires-Dist lines, RECORD paths) of a wheel file."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        requires = Parser().parsestr(archive.read(meta).decode()).get_all("Requires-Dist") or []
        rows = archive.read(record).decode().splitlines()
    return requires, [row.rsplit(",", 2)[0] for row in rows if row]


def dependency_closure(requires: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions the requirements reach, transitively (test environment)."""
    found: dict[str, metadata.Distribution] = {}
    pending: list[tuple[str, frozenset[str]]] = [(line, frozenset()) for line in requires]
    while pending:
        line, extras = pending.pop()
        requirement = Requirement(line)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})
        ):
            continue
        name = canonicalize_name(requirement.name)
        dist = metadata.distribution(requirement.name)
        # What ``pip check`` would say, without its seconds of start-up.
        assert requirement.specifier.contains(dist.version, prereleases=True), (
            f"{line}: the test environment has {dist.version}"
        )
        first_visit = name not in found
        found[name] = dist
        wanted = frozenset(requirement.extras)
        if first_visit or wanted:
            pending.extend((sub, wanted) for sub in dist.requires or [])
    return found


def build_overlay(dists: dict[str, metadata.Distribution], overlay: Path) -> None:
    overlay.mkdir()
    for dist in dists.values():
        if dist.files is None:
            raise AssertionError(f"{dist.metadata['Name']} has no RECORD: cannot borrow it")
        for file in dist.files:
            parts = Path(str(file)).parts
            if not parts or parts[0] == ".." or parts[0].endswith(".pth"):
                continue  # console scripts live outside site-packages; .pth runs only there
            target = overlay / parts[0]
            if not target.exists():
                target.symlink_to(Path(str(dist.locate_file(parts[0]))))


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stderr}"
    return result


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user who activated only the fresh venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / relative


def make_venv(workdir: Path, wheel: Path) -> Path:
    """A fresh venv with the wheel installed (see the module docstring)."""
    venv = workdir / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python]
    if os.environ.get("SIDEGATE_WHEEL_FULL_INSTALL") == "1":
        run([*pip, "install", "-q", str(wheel)])
        return venv
    requires, _ = wheel_metadata(wheel)
    overlay = workdir / "deps"
    build_overlay(dependency_closure(requires), overlay)
    (site_packages(venv) / "_sidegate_test_dependencies.pth").write_text(f"{overlay}\n")
    run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return venv
