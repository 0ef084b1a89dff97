"""Errors in files the config references name the config line and key path that referenced them,
the file and the line inside it; every broken or missing file is reported in one run, and every
line of the report is prefixed ``sidegate:`` (check-config and serve alike)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sidegate.cli import main

CONFIG = """\
authz:
  policy:
    directory: policies
  identity:
    sources:
      - name: keys
        type: api_key
        store: {type: file, path: keys.yaml}
      - name: more-keys
        type: api_key
        store: {type: file, path: missing-keys.yaml}
      - name: idp
        type: jwt
        issuers:
          - issuer: https://idp.example.com
            keys:
              - pem_file: missing.pem
              - pem_file: not-a-key.pem
ratelimit:
  rules_dir: rules
"""


def broken_setup(root: Path) -> Path:
    (root / "policies").mkdir()
    (root / "policies" / "authz.rego").write_text(
        "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n"
    )
    (root / "keys.yaml").write_text(
        f"keys:\n  - digest: {'a' * 64}\n    consumer: a\n  - consumer: no-digest\n"
    )
    (root / "not-a-key.pem").write_text("-----BEGIN PUBLIC KEY-----\nnonsense\n")
    (root / "rules").mkdir()
    (root / "rules" / "a.yaml").write_text("domain: a\ndescriptors:\n  - key: k\n    key: j\n")
    (root / "rules" / "b.yaml").write_text(
        "domain: b\ndescriptors:\n  - key: k\n"
        "    rate_limit: {unit: fortnight, requests_per_unit: 1}\n"
    )
    config = root / "sidegate.yaml"
    config.write_text(CONFIG)
    return config


def expected_lines(config: Path) -> list[tuple[str, ...]]:
    root = config.parent
    return [
        (f"sidegate: {config}:8: authz.identity.sources[0].store.path: {root / 'keys.yaml'}:4: "
         "keys[1]: digest"),
        (f"sidegate: {config}:11: authz.identity.sources[1].store.path: ",
         f"{root / 'missing-keys.yaml'}", "does not exist"),
        (f"sidegate: {config}:17: authz.identity.sources[2].issuers[0].keys[0].pem_file: ",
         "missing.pem", "cannot read key file"),
        (f"sidegate: {config}:18: authz.identity.sources[2].issuers[0].keys[1].pem_file: ",
         "not-a-key.pem", "not a PEM public key"),
        (f"sidegate: {config}:20: ratelimit.rules_dir: {root / 'rules' / 'a.yaml'}: ",
         "line 4: duplicate key 'key' (first defined at line 3)"),
        (f"sidegate: {config}:20: ratelimit.rules_dir: {root / 'rules' / 'b.yaml'}: ",),
    ]


GRPC_CORE_LOG = re.compile(r"^[DIWEF]\d{4} \d")  # gRPC's C core logs to stderr on its own


def assert_all_reported(err: str, config: Path) -> None:
    lines = [line for line in err.strip().splitlines() if not GRPC_CORE_LOG.match(line)]
    assert all(line.startswith("sidegate: ") for line in lines), lines
    for parts in expected_lines(config):
        assert any(line.startswith(parts[0]) and all(p in line for p in parts) for line in lines), (
            parts, lines,
        )


def test_check_config_reports_every_referenced_file_with_key_path_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = broken_setup(tmp_path)
    assert main(["check-config", str(config)]) == 1
    assert_all_reported(capsys.readouterr().err, config)


def test_serve_reports_them_all_too(tmp_path: Path) -> None:
    config = broken_setup(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "sidegate", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1  # bad input (common/exit_codes.py)
    assert "Traceback" not in proc.stderr
    assert_all_reported(proc.stderr, config)


def test_a_multi_line_config_error_prefixes_every_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sidegate.yaml"
    config.write_text("server:\n  model: fibers\n  threads: 0\n")
    assert main(["check-config", str(config)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"sidegate: {config}:") for line in lines)
