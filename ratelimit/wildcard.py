"""Wildcard values (``*`` anywhere) matched in linear time, without regular expressions.

A pattern is its literal pieces between the stars. A value matches when it starts with the
first piece, ends with the last, and the middle pieces occur in order in between. Taking each
middle piece at its leftmost occurrence is always right (a later occurrence only leaves less
room for the pieces after it), so one forward pass of ``str.find`` decides: every search starts
where the previous piece ended, and the scanned ranges never overlap. A ``.*`` regex instead
backtracks: ``*/v1/*/x`` against 32 KB of ``/v1/`` took about a second.
"""

from __future__ import annotations

from collections.abc import Callable

# (text, piece, start, end) -> index or -1, as str.find; injectable so a test can count work.
Finder = Callable[[str, str, int, int], int]


def _str_find(text: str, piece: str, start: int, end: int) -> int:
    return text.find(piece, start, end)


class WildcardPattern:
    __slots__ = ("_first", "_last", "_middle", "_min_len", "pattern")

    def __init__(self, pattern: str) -> None:
        if "*" not in pattern:
            raise ValueError("a wildcard pattern contains '*'")
        pieces = pattern.split("*")
        self.pattern = pattern
        self._first = pieces[0]
        self._last = pieces[-1]
        self._middle = tuple(piece for piece in pieces[1:-1] if piece)
        self._min_len = sum(len(piece) for piece in pieces)

    def fullmatch(self, text: str, find: Finder = _str_find) -> bool:
        if len(text) < self._min_len:
            return False
        if not text.startswith(self._first) or not text.endswith(self._last):
            return False
        position = len(self._first)
        end = len(text) - len(self._last)  # the last piece is reserved at the end
        for piece in self._middle:
            found = find(text, piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True

    def __repr__(self) -> str:
        return f"WildcardPattern({self.pattern!r})"
