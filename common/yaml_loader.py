"""The one YAML loader for every file sidegate reads (config, rule files, key files, data files).

PyYAML's ``safe_load`` is safe against code execution but not against the file itself: a second
key silently replaces the first, an alias bomb ("billion laughs") is cheap to construct but every
walk over it (line index, validation) expands it, deep nesting raises RecursionError, and bad
bytes raise UnicodeDecodeError. Here each of those is a ``YamlError`` naming the file and line.

The document is composed once; the node tree gives both the data and the line of every key path
(what config errors point at).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Aliases may add at most this many nodes to a document beyond the nodes written in it: far
# above any real use of anchors, far below what an alias bomb needs (every later walk over the
# data, such as validation, sees the expanded size).
MAX_ALIAS_EXPANSION = 100_000
MAX_DEPTH = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(Exception):
    """A file that is not acceptable YAML; ``str()`` is ``file:line: problem``."""

    def __init__(self, source: str, problem: str, line: int | None = None) -> None:
        self.source = source
        self.problem = problem
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class YamlDocument:
    data: Any
    # The composed tree, kept for ``line_of``: lines are looked up when an error needs one
    # rather than indexed up front (a 20k-key file would need hundreds of thousands of entries).
    node: yaml.Node | None = None

    def line_of(self, path: Sequence[Any]) -> int | None:
        """The line (1-based) of a key path such as ``("ratelimit", "redis", "url")``, or of
        its nearest ancestor present in the document. A key points at its key's line."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        line, child = key_node.start_mark.line + 1, value_node
                        # the last match wins, as in the constructed mapping (merge keys)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    child = node.value[part]
                    line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line


class _DuplicateKeys:
    """Refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    _source: str

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            # Checked before merge keys (``<<``) are flattened: a key overriding a merged one
            # is YAML's intended use, two explicit keys are a mistake.
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=False)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: PyYAML reports it
                if first is not None:
                    raise YamlError(
                        self._source, f"duplicate key {key!r} (first defined at line {first})", line
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Loader(_DuplicateKeys, yaml.SafeLoader):
    """The pure-Python loader, used when PyYAML was built without libyaml."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self._source = source
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # Checked while composing: PyYAML's composer recurses once per level and would hit
        # Python's recursion limit long before _check_shape could run.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlError(
                    self._source, f"nested deeper than {MAX_DEPTH} levels", mark.line + 1
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _CLoader(_DuplicateKeys, yaml.CSafeLoader):  # type: ignore[misc]
    """libyaml's scanner and composer (several times faster on a 20k-key file, fewer objects
    per node); depth is checked on the composed tree, flow nesting before parsing."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self._source = source


_LOADER: type[_Loader] | type[_CLoader] = _CLoader if yaml.__with_libyaml__ else _Loader


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_shape(root: yaml.Node, source: str) -> None:
    """Depth and alias expansion; a plain walk when no node is reached twice (no aliases)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    mapping, sequence = yaml.MappingNode, yaml.SequenceNode
    while stack:
        node, depth = stack.pop()
        key = id(node)
        if key in seen:
            return _check_shape_with_aliases(root, source)
        seen.add(key)
        if depth > MAX_DEPTH:
            raise YamlError(
                source, f"nested deeper than {MAX_DEPTH} levels", node.start_mark.line + 1
            )
        kind = type(node)
        if kind is mapping:
            for pair in node.value:
                stack.append((pair[0], depth + 1))
                stack.append((pair[1], depth + 1))
        elif kind is sequence:
            stack.extend((child, depth + 1) for child in node.value)
    return None


def _check_shape_with_aliases(root: yaml.Node, source: str) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or that aliases expand by more than
    MAX_ALIAS_EXPANSION nodes.

    Sizes and depths are memoised per distinct node, so this is linear in the nodes written,
    however large the expansion would be.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    distinct = 0
    # Post-order without recursion: aliases make the tree a DAG of any fan-out.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        distinct += 1
        depth = 1 + max((depths[id(c)] for c in children), default=0)
        if depth > MAX_DEPTH:
            deepest = node
            while True:  # report the line where the nesting goes too deep
                below = [c for c in _children(deepest) if depths.get(id(c), 0) >= MAX_DEPTH]
                if not below:
                    break
                deepest = below[0]
            raise YamlError(
                source, f"nested deeper than {MAX_DEPTH} levels", deepest.start_mark.line + 1
            )
        depths[id(node)] = depth
        total = 1 + sum(sizes[id(c)] for c in children)
        if total - distinct > MAX_ALIAS_EXPANSION:
            raise YamlError(
                source,
                f"aliases expand the document by more than {MAX_ALIAS_EXPANSION:,} nodes "
                "(an alias bomb?); refused",
                node.start_mark.line + 1,
            )
        sizes[id(node)] = total


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(
            source, f"not UTF-8 text (invalid byte 0x{raw[exc.start]:02x})", line
        ) from None


_BRACKETS = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str, source: str) -> None:
    """Refuse deeply nested flow collections before PyYAML's scanner sees them.

    Its simple-key lookahead makes ``[[[[...`` quadratic (3,000 levels take seconds), so the
    composer's depth check comes too late. Brackets inside quoted strings are counted too:
    an over-approximation that only matters past MAX_DEPTH * 4 unbalanced opening brackets.
    """
    depth = 0
    for match in _BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH * 4:
                line = text.count("\n", 0, match.start()) + 1
                raise YamlError(source, f"nested deeper than {MAX_DEPTH} levels", line)
        elif depth:
            depth -= 1


def parse_yaml(text: str | bytes, source: str) -> YamlDocument:
    """Parse one YAML document; every problem is a YamlError naming ``source`` and the line."""
    if isinstance(text, bytes):
        text = _decode(text, source)
    _check_flow_depth(text, source)
    loader: _Loader | _CLoader | None = None
    try:
        loader = _LOADER(text, source)  # the reader refuses control characters right here
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None, None)
        _check_shape(node, source)
        data = loader.construct_document(node)
    except YamlError:
        raise
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise YamlError(
            source, f"invalid YAML: control character {exc.character!r} is not allowed", line
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(
            source, f"invalid YAML: {problem}", mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise YamlError(source, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(source, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(data, node)


def load_yaml_file(path: Path) -> YamlDocument:
    """Read and parse ``path``; unreadable files are a YamlError too."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise YamlError(str(path), "file not found") from None
    except IsADirectoryError:
        raise YamlError(str(path), "is a directory, not a file") from None
    except OSError as exc:
        raise YamlError(str(path), f"cannot read: {exc.strerror or exc}") from None
    return parse_yaml(raw, str(path))
