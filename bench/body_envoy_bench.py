"""How much hostile multipart bodies delay concurrent normal requests, through a real Envoy.

    python -m bench.body_envoy_bench [--runs 3] [--samples 40] [--model aio|threads]

Envoy sends bodies up to 1 MiB (``with_request_body``) to ``sidegate serve`` whose policy reads
``parsed_body``. Each run measures normal ``GET /hello`` latency alone, then while two other
connections send, back to back, a 1 MiB body of ~20k parts (refused by the part cap) and the
widest body the default caps parse (100 parts filling 1 MiB). Reported per run: median and p90
latency alone and under the flood, the median delay, and how many hostile bodies were sent.
The pass/fail bound (50 ms) is in tests/sidegate/test_hostile_body_envoy.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from tests.sidegate.hostile_body_load import (
    many_parts_body,
    measure_delay,
    start_stack,
    widest_allowed_body,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--model", choices=["aio", "threads"], default="aio")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir, start_stack(Path(workdir), args.model) as stack:
        hostile = [many_parts_body(), widest_allowed_body()]
        for run in range(args.runs):
            row = measure_delay(stack, hostile, samples=args.samples)
            rows.append(row)
            print(f"run {run + 1}: {json.dumps(row)}")
    delays = [row["delay_median_ms"] for row in rows]
    print(
        f"median delay of a normal request under the flood: {statistics.median(delays):.2f} ms "
        f"(min {min(delays):.2f}, max {max(delays):.2f}, {args.runs} runs, model {args.model})"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
