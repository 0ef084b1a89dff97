"""Worst-case cost of parsing one request body on the event loop, at ``max_bytes``.

    python -m bench.body_bench [--repeats 7] [--max-bytes 1048576] [--json FILE] [--no-before]

Every case is a hostile body no larger than ``max_bytes`` (the default 1 MiB): many parts,
many fields, deep or wide JSON, delimiter look-alikes, escapes. Each is parsed ``--repeats``
times with ``parse_body`` under the default caps (``authz.policy.body``); reported are the
outcome (``ok`` or ``400`` with the reason) and the best / median / worst CPU time of the
parsing thread in ms (``time.thread_time``: wall time on a loaded, shared machine mostly
measures other processes; the event loop is blocked for at least this long). The goal
(issue 9) is a worst time under 20 ms for every case.

``before`` times the parsers sidegate used until issue 9 (stdlib ``email`` for multipart,
``parse_qs`` for forms, unbounded ``json.loads``) on the same bodies, in the same run, for the
ratio; cases where it would take seconds are bounded by ``--before-limit-s`` per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from email.policy import HTTP
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sidegate.extauthz.request_body import BodyError, BodyLimits, parse_body

BOUNDARY = "sgBenchBoundary7MA4YWxk"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

Case = tuple[str, str, bytes]


def _fill(
    unit: bytes, budget: int, head: bytes = b"", tail: bytes = b"", sep: bytes = b""
) -> bytes:
    count = max((budget - len(head) - len(tail)) // (len(unit) + len(sep)), 0)
    return head + sep.join([unit] * count) + tail


def _part(name: str, value: bytes, headers: bytes = b"") -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n".encode()
        + headers
        + b"\r\n"
        + value
        + b"\r\n"
    )


def _multipart(parts: list[bytes]) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def hostile_bodies(limits: BodyLimits) -> Iterator[Case]:
    """(name, content type, body) for each case; every body fits in ``limits.max_bytes``."""
    size = limits.max_bytes
    closing = len(f"--{BOUNDARY}--\r\n")

    tiny = _part("f", b"v")
    yield "multipart: tiny parts filling max_bytes", MULTIPART, _multipart(
        [tiny] * ((size - closing) // len(tiny))
    )
    per_part = (size - closing) // limits.max_parts - len(_part(f"f{limits.max_parts}", b""))
    yield "multipart: max_parts parts filling max_bytes", MULTIPART, _multipart(
        [_part(f"f{i}", b"v" * per_part) for i in range(limits.max_parts)]
    )
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"h" * 4000) for i in range(6))
    header_part = _part("f", b"v", headers)
    count = min(limits.max_parts, (size - closing) // len(header_part))
    yield "multipart: parts with 6 x 4 KB headers", MULTIPART, _multipart([header_part] * count)
    look_alike = f"\r\n--{BOUNDARY}x".encode()
    yield "multipart: delimiter look-alikes in one part", MULTIPART, _multipart(
        [_part("f", _fill(look_alike, size - 200 - closing))]
    )
    prefix = f"\r\n--{BOUNDARY[:-1]}".encode()
    yield "multipart: delimiter prefixes in one part", MULTIPART, _multipart(
        [_part("f", _fill(prefix, size - 200 - closing))]
    )
    yield "multipart: one part of CRs", MULTIPART, _multipart(
        [_part("f", b"\r" * (size - 200 - closing))]
    )
    values = max(limits.max_json_values // 2 - 2, 1)
    json_part = _part(
        "j", b"[" + b",".join([b"[]"] * values) + b"]", b"Content-Type: application/json\r\n"
    )
    yield "multipart: JSON part at max_json_values", MULTIPART, _multipart([json_part])
    yield "multipart: bogus charset", MULTIPART, _multipart(
        [_part("f", b"x" * 1000, b"Content-Type: text/plain; charset=x-bogus\r\n")]
    )

    yield "form: many empty fields", FORM, _fill(b"a", size, sep=b"&")
    escapes = _fill(b"%41", (size - 4 * limits.max_fields) // limits.max_fields)
    yield "form: max_fields fields of %XX escapes", FORM, b"&".join(
        [b"k=" + escapes] * limits.max_fields
    )
    yield "form: one field of %XX escapes", FORM, _fill(b"%41", size, head=b"k=")
    yield "form: one field of '+'", FORM, _fill(b"+", size, head=b"k=")

    yield "json: wide array of ints", JSON, _fill(b"0", size - 2, b"[", b"]", sep=b",")
    yield "json: wide array of objects", JSON, _fill(b'{"a":1}', size - 2, b"[", b"]", sep=b",")
    containers = max(limits.max_json_values - 2, 1)
    yield "json: max_json_values empty arrays", JSON, (
        b"[" + b",".join([b"[]"] * (containers // 2)) + b"]"
    )
    depth = limits.max_depth
    chain = b"[" * (depth - 1) + b"]" * (depth - 1)
    chains = max(limits.max_json_values // (depth + 1) - 1, 1)
    yield "json: chains nested to max_depth", JSON, b"[" + b",".join([chain] * chains) + b"]"
    yield "json: deep nesting filling max_bytes", JSON, b"[" * (size // 2) + b"]" * (size // 2)
    yield "json: one string of \\u escapes", JSON, _fill(b"\\u00e9", size - 2, b'"', b'"')
    yield "json: one huge number", JSON, b"1" * (size - 1)
    yield "json: one huge float", JSON, b"0." + b"1" * (size - 3)


def _before(content_type: str, data: bytes) -> Any:
    """The parsers of the pre-issue-9 request_body.py, for the side-by-side ratio."""
    if content_type == JSON:
        return json.loads(data)
    if content_type == FORM:
        return parse_qs(data.decode("utf-8"), keep_blank_values=True)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + data)
    return [part.get_payload(decode=True) for part in message.iter_parts()]


def _time(call: Callable[[], Any], repeats: int) -> tuple[list[float], str]:
    """CPU time of this thread per call, in ms: on a shared, loaded machine wall time mostly
    measures the other processes; the loop is blocked for at least the CPU time."""
    times: list[float] = []
    outcome = "ok"
    for _ in range(repeats):
        started = time.thread_time()
        try:
            call()
        except BodyError as exc:
            outcome = f"400 ({exc})"
        except Exception as exc:  # the "before" parsers raise anything
            outcome = f"error ({type(exc).__name__})"
        times.append((time.thread_time() - started) * 1000)
    return times, outcome


def run(repeats: int, limits: BodyLimits, before: bool, before_limit_s: float) -> list[dict]:
    rows = []
    for name, content_type, data in hostile_bodies(limits):
        assert len(data) <= limits.max_bytes, (name, len(data))
        headers = {"content-type": content_type}
        times, outcome = _time(partial(parse_body, headers, "", data, limits=limits), repeats)
        row: dict[str, Any] = {
            "case": name,
            "bytes": len(data),
            "outcome": outcome,
            "best_ms": round(min(times), 3),
            "median_ms": round(statistics.median(times), 3),
            "worst_ms": round(max(times), 3),
        }
        if before:
            old = partial(_before, content_type, data)
            before_times, _ = _time(old, 1)
            if before_times[0] < before_limit_s * 1000:
                before_times += _time(old, repeats - 1)[0]
            row["before_median_ms"] = round(statistics.median(before_times), 3)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-bytes", type=int, default=BodyLimits().max_bytes)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--no-before", action="store_true", help="skip the pre-issue-9 parsers")
    parser.add_argument("--before-limit-s", type=float, default=0.5)
    args = parser.parse_args(argv)
    limits = BodyLimits(max_bytes=args.max_bytes)
    rows = run(max(args.repeats, 1), limits, not args.no_before, args.before_limit_s)
    print(f"limits: {limits}")
    header = (
        f"{'case':46} {'bytes':>8} {'best':>8} {'median':>8} {'worst':>8} {'before':>9}  outcome"
    )
    print(header)
    for row in rows:
        before = f"{row['before_median_ms']:9.1f}" if "before_median_ms" in row else f"{'-':>9}"
        print(
            f"{row['case']:46} {row['bytes']:8d} {row['best_ms']:8.2f} {row['median_ms']:8.2f} "
            f"{row['worst_ms']:8.2f} {before}  {row['outcome'][:60]}"
        )
    worst = max(rows, key=lambda r: r["median_ms"])
    print(f"worst median: {worst['median_ms']:.2f} ms ({worst['case']})")
    if args.json:
        args.json.write_text(json.dumps({"limits": repr(limits), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
