#!/usr/bin/env python3
"""Regenerate the configuration reference from the config models.

Writes the key tables of docs/configuration.md (between its GENERATED markers) and the JSON
Schema shipped in the wheel (sidegate/sidegate.schema.json). ``--check`` writes nothing and
exits 1 when either differs from what the models give (the test suite runs that check).

    .venv/bin/python scripts/gen_config_reference.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sidegate.config_reference import markdown, schema_text, splice

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
SCHEMA = ROOT / "sidegate" / "sidegate.schema.json"


def expected() -> dict[Path, str]:
    return {DOC: splice(DOC.read_text(encoding="utf-8"), markdown()), SCHEMA: schema_text()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 on it")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "is stale" if args.check else "regenerated"
        print(f"{path.relative_to(ROOT)} {verb}", file=sys.stderr)
    if stale and args.check:
        print("run: .venv/bin/python scripts/gen_config_reference.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
