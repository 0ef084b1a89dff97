"""embedded.input_json: the engine's input text and decision-cache key material, written by
orjson where that is safe, must be json.dumps(..., separators=(",", ":")) byte for byte.

rego-cpp keeps escapes and number spellings as written, so any other spelling of the same value
could decide differently; and a key that ever collides where the json text differed would serve
one input's decision for another. Seeded property tests over varied documents; no timing."""

from __future__ import annotations

import datetime
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from sidegate.extauthz.policy import embedded
from sidegate.extauthz.policy.decision_cache import cache_key
from sidegate.extauthz.policy.embedded import EmbeddedEngine, input_json

ALPHABET = (
    "abcXYZ019 /:.-_~'@"  # plain ASCII
    '"\\'  # escaped by both encoders
    "\x00\x01\x08\x09\x0a\x0c\x0d\x1f\x7f"  # control characters, DEL
    "\u00e9\u00ff\u2028\u4e2d\U0001f600"  # non-ASCII
    "\ud800"  # a lone surrogate (json escapes it, orjson refuses it)
)
WORDS = ["null", "0.0000", "e-5", "1e-05", "true", "NaN", "orders", "viewer", ""]
INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1,
        10**30]
FLOATS = [0.0, -0.0, 1.0, 0.1, 1e-4, 9.99e-5, 1e-5, 1e-7, 5.4e-9, 1e-10, 1e15, 1e16, 1.5e300,
          5e-324, math.nan, math.inf, -math.inf]


def text(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(WORDS)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))


def number(rng: random.Random) -> Any:
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(INTS)
    if pick < 0.5:
        return rng.choice(FLOATS)
    if pick < 0.7:
        return rng.randint(-1000, 1000)
    # any decade, any mantissa length: where repr and orjson spell exponents differently
    digits = rng.randint(1, 17)
    return float(f"{rng.randint(1, 10**digits - 1)}e{rng.randint(-330, 300)}") * rng.choice(
        (1, -1)
    )


def value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth < 4 and pick < 0.25:
        return {key(rng): value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 4 and pick < 0.4:
        items = [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return tuple(items) if rng.random() < 0.2 else items
    if pick < 0.65:
        return text(rng)
    if pick < 0.85:
        return number(rng)
    return rng.choice([True, False, None])


def key(rng: random.Random) -> Any:
    if rng.random() < 0.05:  # json turns these into strings; orjson refuses them
        return rng.choice([1, 2.5, True, None])
    return text(rng)


def documents(seed: int, count: int) -> list[Any]:
    rng = random.Random(seed)
    # mostly the shape the engine gets: an object of a few sections
    return [
        {"parsed_path": [text(rng)], "identity": value(rng, 1), "attributes": value(rng, 1)}
        if rng.random() < 0.7
        else value(rng)
        for _ in range(count)
    ]


def encode(encoder: Any, document: Any) -> str | type[BaseException]:
    try:
        return str(encoder(document))
    except (TypeError, ValueError, RecursionError) as exc:
        return type(exc)


def reference(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))


class CountingJson:
    """embedded's json module, counting the documents that took the json path."""

    def __init__(self) -> None:
        self.calls = 0

    def dumps(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        return json.dumps(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


def test_same_bytes_as_json_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingJson()
    monkeypatch.setattr(embedded, "json", counting)
    docs = documents(20261201, 4000)
    for document in docs:
        assert encode(input_json, document) == encode(reference, document), document
    # both paths were exercised: orjson for plain documents, json where its bytes may differ
    assert 0.1 * len(docs) < counting.calls < 0.9 * len(docs)


def test_cache_keys_differ_exactly_when_the_json_differed() -> None:
    """Pairs of documents that differ by little (one leaf, a key order, 1 vs 1.0 vs True,
    None vs NaN, a tuple vs a list, -0.0 vs 0.0): same key if and only if same json text."""
    rng = random.Random(77)
    swaps: list[tuple[Any, Any]] = [
        (1, 1.0), (1, True), (0, False), ("1", 1), (None, math.nan), (math.inf, None),
        (0.0, -0.0), (1e-05, 0.00001), ((1, 2), [1, 2]), ("\u00e9", "\\u00e9"), ("\x7f", ""),
        (2**64, 2**64 + 1), ("null", None), ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    ]
    pairs = 0
    for base in documents(99, 1500):
        for a, b in [rng.choice(swaps), (value(rng), value(rng))]:
            left = {"doc": base, "v": a}
            right = {"doc": base, "v": b}
            try:
                expected = reference(left) == reference(right)
            except (TypeError, ValueError):
                continue
            keys = {cache_key(1, "app/allow", input_json(doc)) for doc in (left, right)}
            assert (len(keys) == 1) == expected, (a, b)
            pairs += 1
    assert pairs > 2500


def test_what_json_refuses_stays_refused() -> None:
    assert encode(input_json, {"t": datetime.datetime(2026, 1, 1)}) is TypeError
    assert encode(input_json, {"d": datetime.date(2026, 1, 1)}) is TypeError
    assert encode(input_json, {"s": {1, 2}}) is TypeError
    circular: dict[str, Any] = {}
    circular["self"] = circular
    assert encode(input_json, circular) == encode(reference, circular)
    deep: Any = "leaf"
    for _ in range(400):  # past orjson's depth limit, within json's
        deep = [deep]
    assert input_json({"deep": deep}) == reference({"deep": deep})


async def test_the_engine_sees_the_same_text(tmp_path: Path) -> None:
    """End to end: a rule that echoes its input's spelling decides the same through
    evaluate() (input_json) as on json.dumps' text (evaluate_json)."""
    (tmp_path / "echo.rego").write_text(
        "package echo\nimport rego.v1\n\nspelled := json.marshal(input.v)\n"
    )
    engine = EmbeddedEngine(tmp_path, cache_decisions=False)
    engine.load()
    for v in [1e-05, 1e-9, 1e16, 0.1, "\u00e9\x7f", "plain", [1, 2.5, True, None], 2**64]:
        document = {"v": v}
        expected = engine.evaluate_json("echo/spelled", reference(document)).value
        assert (await engine.evaluate("echo/spelled", document)).value == expected, v
