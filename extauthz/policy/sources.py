"""What a policy directory holds: Rego modules, data documents, and the rules they define.

Read once per (re)load into an immutable snapshot, so compiling never re-reads a file that
changed half-way, and the watcher can compare fingerprints cheaply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidegate.common.file_watcher import Fingerprint
from sidegate.common.file_watcher import fingerprint as common_fingerprint
from sidegate.common.yaml_loader import YamlError, load_yaml_file
from sidegate.extauthz.policy import nesting

DATA_SUFFIXES = frozenset({".json", ".yaml", ".yml"})
POLICY_SUFFIXES = frozenset({".rego"}) | DATA_SUFFIXES
TEST_SUFFIX = "_test.rego"

_PACKAGE = re.compile(r"^package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)
# A rule head starts at column 0 (opa fmt style): `name`, `default name`, then `:=`, `=`, `if`,
# `contains`, `[`, `{` or the end of the line. Functions (`name(`) are not decision paths.
_RULE_HEAD = re.compile(
    r"^(?:default\s+)?([A-Za-z_]\w*)(?=\s*(?::=|=|\bif\b|\bcontains\b|\[|\{|$))", re.MULTILINE
)
_KEYWORDS = frozenset({"package", "import", "default", "else", "not", "some", "every", "with"})


def check_nesting(path: Path, text: str) -> None:
    """Refuse a module nested deeper than nesting.MAX_NESTING before any parser sees it: rego-cpp
    would hold the GIL on it for long, or recurse out of its stack (linear time)."""
    try:
        nesting.check_rego(text)
    except nesting.TooDeep as exc:
        line = text.count("\n", 0, exc.offset) + 1
        col = exc.offset - (text.rfind("\n", 0, exc.offset) + 1) + 1
        raise PolicySourceError(f"{path}:{line}:{col}: {exc}") from None


class PolicySourceError(Exception):
    """A policy directory cannot be read; the message names the file."""


@dataclass(frozen=True, slots=True)
class RegoModule:
    path: Path
    text: str
    package: str
    package_offset: int = 0

    @property
    def is_test(self) -> bool:
        return self.path.name.endswith(TEST_SUFFIX)

    def rule_names(self) -> set[str]:
        return {m for m in _RULE_HEAD.findall(self.text) if m not in _KEYWORDS}

    def with_only_test(self, rule: str) -> RegoModule:
        """This module with every other ``test_*`` rule blanked out (line numbers kept).

        A rule spans from its head at column 0 to the next line that starts another statement;
        indented lines, comments and a closing ``}`` at column 0 belong to it (opa fmt style).
        """
        lines = self.text.split("\n")
        keep = True
        for index, line in enumerate(lines):
            head = _RULE_HEAD.match(line)
            name = head.group(1) if head else ""
            if name in _KEYWORDS:
                pass  # an `else` line continues the rule it belongs to
            elif head or line.startswith(("package", "import")):
                keep = not name.startswith("test_") or name == rule
            if not keep:
                lines[index] = ""
        return RegoModule(self.path, "\n".join(lines), self.package, self.package_offset)

    def location(self, offset: int) -> str:
        """``file:line:col`` of a character offset (rego-cpp reports offsets)."""
        before = self.text[:offset]
        line = before.count("\n") + 1
        col = offset - (before.rfind("\n") + 1) + 1
        return f"{self.path}:{line}:{col}"


@dataclass(frozen=True, slots=True)
class PolicySources:
    directory: Path
    modules: tuple[RegoModule, ...]
    data: tuple[tuple[Path, dict[str, Any]], ...]
    fingerprint: Fingerprint

    @property
    def policy_modules(self) -> tuple[RegoModule, ...]:
        return tuple(m for m in self.modules if not m.is_test)

    @property
    def test_modules(self) -> tuple[RegoModule, ...]:
        return tuple(m for m in self.modules if m.is_test)

    def rule_paths(self, *, include_tests: bool = False) -> frozenset[str]:
        """Every ``pkg/path/rule`` a route may select as its decision path."""
        paths = set()
        for module in self.modules:
            if module.is_test and not include_tests:
                continue
            prefix = module.package.replace(".", "/")
            paths.update(f"{prefix}/{name}" for name in module.rule_names())
        return frozenset(paths)

    def module_for(self, name: str) -> RegoModule | None:
        for module in self.modules:
            if str(module.path) == name:
                return module
        return None


def _candidate_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        and (p.suffix == ".rego" or p.suffix in DATA_SUFFIXES)
    )


def fingerprint(directory: Path) -> Fingerprint:
    """What the shared file watcher compares, taken before the files are read."""
    return common_fingerprint(directory, POLICY_SUFFIXES)


def _read_data(path: Path) -> dict[str, Any]:
    if path.suffix != ".json":
        try:
            doc = load_yaml_file(path).data
        except YamlError as exc:
            raise PolicySourceError(f"cannot read data file: {exc}") from None
    else:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            # ValueError covers bad UTF-8 too
            raise PolicySourceError(f"{path}: cannot read data file: {exc}") from None
        except RecursionError:
            raise PolicySourceError(
                f"{path}: data nested deeper than {nesting.MAX_NESTING} levels"
            ) from None
    try:
        nesting.check_value(doc)
    except (RecursionError, nesting.TooDeep):
        raise PolicySourceError(
            f"{path}: data nested deeper than {nesting.MAX_NESTING} levels"
        ) from None
    if not isinstance(doc, dict):
        raise PolicySourceError(f"{path}: a data file must hold an object")
    return doc


def read_sources(directory: Path, *, require_policies: bool = True) -> PolicySources:
    """Snapshot ``directory``: every ``*.rego`` (tests included) and JSON/YAML data file."""
    if not directory.is_dir():
        raise PolicySourceError(f"{directory}: policy directory does not exist")
    stamp = fingerprint(directory)
    modules = []
    data = []
    for path in _candidate_files(directory):
        if path.suffix in DATA_SUFFIXES:
            data.append((path, _read_data(path)))
            continue
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicySourceError(f"{path}: cannot read policy: {exc}") from exc
        check_nesting(path, text)
        match = _PACKAGE.search(text)
        if match is None:
            raise PolicySourceError(f"{path}:1:1: no package declaration")
        modules.append(RegoModule(path, text, match.group(1), match.start()))
    if require_policies and not any(not m.is_test for m in modules):
        raise PolicySourceError(f"{directory}: no .rego files")
    return PolicySources(directory, tuple(modules), tuple(data), stamp)
