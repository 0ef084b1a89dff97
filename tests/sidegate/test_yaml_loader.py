"""The one YAML loader: duplicate keys, alias bombs, deep nesting and bad bytes are errors naming
the file and line in every YAML file sidegate reads (config, rule files, key files, data files)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from sidegate.cli import main
from sidegate.common.yaml_loader import MAX_DEPTH, YamlError, load_yaml_file, parse_yaml
from sidegate.config import ConfigError, load_config
from sidegate.extauthz.identity.api_keys.file_store import parse_key_file
from sidegate.extauthz.identity.api_keys.store import KeyStoreError
from sidegate.extauthz.policy.sources import PolicySourceError, read_sources
from sidegate.ratelimit.config.errors import RuleConfigError
from sidegate.ratelimit.config.loader import load_rules

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]"
        for i in range(9)
    ]
)
DEEP_FLOW = "x: " + "[" * 3000 + "]" * 3000 + "\n"
DEEP_BLOCK = "".join("  " * i + "k:\n" for i in range(200)) + "  " * 200 + "v\n"

HOSTILE = {
    "duplicate": ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (first defined at line 1)", 3),
    "alias bomb": (BILLION_LAUGHS, "alias bomb", None),
    "deep flow": (DEEP_FLOW, f"nested deeper than {MAX_DEPTH} levels", 1),
    "deep block": (DEEP_BLOCK, f"nested deeper than {MAX_DEPTH} levels", None),
    "bad bytes": (b"a: 1\nb: \xff\xfe\n", "not UTF-8", 2),
    "control character": ("a: 1\n# x\x00y\n", "control character", 2),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_are_errors_with_file_and_line(name: str) -> None:
    text, problem, line = HOSTILE[name]
    with pytest.raises(YamlError) as caught:
        parse_yaml(text, "f.yaml")
    assert problem in str(caught.value)
    assert str(caught.value).startswith("f.yaml:")
    if line is not None:
        assert caught.value.line == line


def test_hostile_documents_are_refused_in_bounded_work() -> None:
    """No wall clock: the process CPU time of all of them together stays far below a second
    of work per document (the bomb used to take 10 s and 1.5 GB)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for text, _, _ in HOSTILE.values():
        with pytest.raises(YamlError):
            parse_yaml(text, "f.yaml")
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert after.ru_utime - before.ru_utime < 5.0
    # KiB: peak RSS grew by far less than 200 MB (the bomb used to need 1.5 GB)
    assert after.ru_maxrss - before.ru_maxrss < 200 * 1024


def test_merge_keys_may_override_and_lines_point_at_keys() -> None:
    doc = parse_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\n", "f.yaml")
    assert doc.data["use"] == {"x": 3, "y": 2}
    assert doc.line_of(("use", "x")) == 4
    assert doc.line_of(("use", "missing", "deeper")) == 2  # the nearest ancestor
    assert parse_yaml("", "f.yaml").data is None


def test_a_few_aliases_are_fine() -> None:
    text = "defaults: &d {unit: minute, requests_per_unit: 5}\n" + "".join(
        f"r{i}: *d\n" for i in range(200)
    )
    assert parse_yaml(text, "f.yaml").data["r199"]["unit"] == "minute"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match="file not found"):
        load_yaml_file(tmp_path / "nope.yaml")
    with pytest.raises(YamlError, match="is a directory"):
        load_yaml_file(tmp_path)


# -- every call site -------------------------------------------------------------------------


def test_a_second_ratelimit_section_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    config = tmp_path / "sidegate.yaml"
    config.write_text("ratelimit:\n  backend: memory\nserver: {}\nratelimit:\n  backend: redis\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == (
        f"{config}:4: duplicate key 'ratelimit' (first defined at line 1)"
    )


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_config_file(tmp_path: Path, name: str) -> None:
    text, problem, _ = HOSTILE[name]
    config = tmp_path / "sidegate.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(config) in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_rule_file(tmp_path: Path, name: str) -> None:
    text, problem, _ = HOSTILE[name]
    (tmp_path / "r.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RuleConfigError) as caught:
        load_rules(tmp_path)
    assert str(tmp_path / "r.yaml") in str(caught.value) and problem in str(caught.value)


def test_rule_file_duplicate_domain_key_keeps_upstream_wording(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("domain: a\ndescriptors: []\ndomain: b\n")
    with pytest.raises(RuleConfigError) as caught:
        load_rules(tmp_path)
    assert caught.value.problem == (
        "error loading config file: yaml: line 3: duplicate key 'domain' (first defined at line 1)"
    )


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_key_file(tmp_path: Path, name: str) -> None:
    text, problem, _ = HOSTILE[name]
    path = tmp_path / "keys.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(KeyStoreError) as caught:
        parse_key_file(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_key_file_entry_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - digest: {'a' * 64}\n    consumer: x\n  - consumer: y\n")
    with pytest.raises(KeyStoreError) as caught:
        parse_key_file(path)
    assert str(caught.value).startswith(f"{path}:4: keys[1]: digest")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_policy_data_file(tmp_path: Path, name: str) -> None:
    text, problem, _ = HOSTILE[name]
    (tmp_path / "p.rego").write_text("package p\n\nallow := true\n")
    (tmp_path / "data.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PolicySourceError) as caught:
        read_sources(tmp_path)
    assert str(tmp_path / "data.yaml") in str(caught.value) and problem in str(caught.value)


def test_deep_json_data_file(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\nallow := true\n")
    (tmp_path / "data.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PolicySourceError, match="data nested deeper than 100 levels"):
        read_sources(tmp_path)


def test_check_config_answers_an_alias_bomb_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sidegate.yaml"
    config.write_text(BILLION_LAUGHS)
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sidegate: {config}:") and "alias bomb" in err


def test_check_config_subprocess_within_200_mb_and_5_s_cpu(tmp_path: Path) -> None:
    """Through the front door, with the limits enforced by the kernel (not a stopwatch)."""
    config = tmp_path / "sidegate.yaml"
    config.write_text(BILLION_LAUGHS)

    def limits() -> None:
        # CPU seconds, enforced by the kernel. Not RLIMIT_AS: regopy's allocator reserves
        # gigabytes of address space at import; peak RSS is measured instead.
        resource.setrlimit(resource.RLIMIT_CPU, (20, 20))

    proc = subprocess.run(
        [sys.executable, "-c",
         "import resource, sys\n"
         "from sidegate.cli import main\n"
         "code = main(sys.argv[1:])\n"
         "r = resource.getrusage(resource.RUSAGE_SELF)\n"
         # VmHWM, not ru_maxrss: the latter keeps the forking parent's (pytest's) peak across
         # exec, the former is this program's own peak.
         "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
         "print(f'rss_kib={hwm.split()[1]} cpu={r.ru_utime + r.ru_stime:.3f}')\n"
         "sys.exit(code)\n",
         "check-config", str(config)],
        capture_output=True, text=True, preexec_fn=limits, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "alias bomb" in proc.stderr
    usage = dict(part.split("=") for part in proc.stdout.split())
    assert int(usage["rss_kib"]) < 200 * 1024
    assert float(usage["cpu"]) < 5.0
