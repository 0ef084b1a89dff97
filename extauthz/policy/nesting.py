"""A bound on how deeply policy and data files may nest, checked before anything recurses.

rego-cpp, the JSON and YAML parsers and the JSON reading of decisions all recurse once per
level: a 3,000-deep array in a ``.rego`` or ``data.json`` raised RecursionError out of the
compile (or deeper in C). Real policies and data nest a few levels; anything past
``MAX_NESTING`` is refused as a compile error that names the file and line.
"""

from __future__ import annotations

from typing import Any

from sidegate.extauthz.policy.input_paths import Token, Unresolvable, tokenize

MAX_NESTING = 100

_OPEN = "([{"
_CLOSE = ")]}"


class TooDeep(Exception):
    """Nesting beyond MAX_NESTING; ``offset``: the character that opens the level too many."""

    def __init__(self, why: str, offset: int = 0) -> None:
        super().__init__(why)
        self.offset = offset


def check_tokens(tokens: list[Token], limit: int = MAX_NESTING) -> None:
    """Raise TooDeep at the first bracket that opens level ``limit + 1``."""
    depth = 0
    for token in tokens:
        if token.kind != "punct":
            continue
        if token.text in _OPEN:
            depth += 1
            if depth > limit:
                raise TooDeep(f"nested deeper than {limit} levels", token.offset)
        elif token.text in _CLOSE:
            depth -= 1


def check_rego(text: str, limit: int = MAX_NESTING) -> None:
    """Bound the bracket nesting of a Rego module (strings and comments do not count)."""
    try:
        tokens = tokenize(text)
    except Unresolvable:
        # A module the tokenizer cannot read (a template string): count every bracket, which
        # can only overestimate the depth.
        depth = 0
        for offset, char in enumerate(text):
            if char in _OPEN:
                depth += 1
                if depth > limit:
                    raise TooDeep(f"nested deeper than {limit} levels", offset) from None
            elif char in _CLOSE:
                depth -= 1
        return
    check_tokens(tokens, limit)


def check_value(value: Any, limit: int = MAX_NESTING) -> None:
    """Bound the nesting of a parsed JSON/YAML document, without recursing."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= limit:
            raise TooDeep(f"nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)
