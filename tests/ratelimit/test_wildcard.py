"""Wildcard values: the same answers as a regex, in one forward pass (no backtracking)."""

from __future__ import annotations

import random
import re

import pytest

from sidegate.ratelimit.config.loader import load_rules
from sidegate.ratelimit.matching import find_rule
from sidegate.ratelimit.wildcard import WildcardPattern
from tests.ratelimit.conftest import write_rules


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.DOTALL)


class CountingFinder:
    """str.find that records every range it scans, so work is measured, not timed."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def __call__(self, text: str, piece: str, start: int, end: int) -> int:
        found = text.find(piece, start, end)
        self.ranges.append((start, found + len(piece) if found >= 0 else end))
        return found


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("path_*", "path_", True),
        ("path_*", "path_/a/b", True),
        ("path_*/x", "path_/x", True),
        ("path_*/x", "path_/x/y", False),
        ("path_*/v1/*/x", "path_/a/v1/b/x", True),
        ("path_*/v1/*/x", "path_/a/v1/x", False),  # the last piece may not reuse the middle's
        ("k_a*a", "k_a", False),
        ("k_a*a", "k_aa", True),
        ("k_*", "k_", True),
        ("k_**b", "k_b", True),
        ("k_*ab*ab", "k_abab", True),
        ("k_*ab*ab", "k_aba", False),
    ],
)
def test_examples(pattern: str, value: str, expected: bool) -> None:
    assert WildcardPattern(pattern).fullmatch(value) is expected
    assert bool(_regex(pattern).fullmatch(value)) is expected


def test_agrees_with_regex_on_seeded_fuzz() -> None:
    rng = random.Random(1010)
    for _ in range(3000):
        pattern = "".join(rng.choice("ab*/") for _ in range(rng.randint(1, 8))) + "*"
        pattern = pattern if rng.random() < 0.5 else pattern[::-1]
        value = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 12)))
        assert WildcardPattern(pattern).fullmatch(value) == bool(
            _regex(pattern).fullmatch(value)
        ), (pattern, value)


@pytest.mark.parametrize("size", [1_000, 32_000, 1_000_000])
def test_hostile_value_is_one_forward_pass(size: int) -> None:
    """`*/v1/*/x` against a long run of `/v1/` (the quadratic case of a `.*` regex): the
    scanned ranges follow each other without overlap, so the work is bounded by the length."""
    pattern = WildcardPattern("path_*/v1/*/v1/*/x")
    value = "path_" + "/v1/" * (size // 4) + "y"
    finder = CountingFinder()
    assert pattern.fullmatch(value, finder) is False
    assert len(finder.ranges) <= 2  # one search per middle piece, never a retry
    scanned = 0
    previous_end = 0
    for start, end in finder.ranges:
        assert start >= previous_end
        scanned += end - start
        previous_end = end
    assert scanned <= len(value)


def test_hostile_value_through_the_rule_tree(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = load_rules(
        write_rules(
            tmp_path,
            {"d.yaml": """
                domain: d
                descriptors:
                  - key: path
                    value: "*/v1/*/x"
                    rate_limit: {unit: minute, requests_per_unit: 1}
                """},
        )
    )
    hostile = "/v1/" * 8000 + "y"
    assert find_rule(rules.domains["d"], [("path", hostile)]) is None
    assert find_rule(rules.domains["d"], [("path", hostile + "/x")]) is not None
