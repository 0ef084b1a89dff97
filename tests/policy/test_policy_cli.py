"""``sidegate policy test`` and ``sidegate policy eval``, run as the user runs them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from sidegate.extauthz.policy import testing
from tests.policy.conftest import REPO_POLICIES

REPO_ROOT = REPO_POLICIES.parent

POLICY = """package app
import rego.v1

default allow := false

allow if input.user == "admin"

allow if is_reader

is_reader if input.user == "reader"
"""

TESTS = """package app_test
import rego.v1

import data.app

test_admin_allowed if app.allow with input.user as "admin"

test_reader_allowed if app.allow with input.user as "reader"

test_wrong_expectation if app.allow with input.user as "nobody"

test_undefined_fails if data.app.nothing with input.user as "admin"
"""

CRASHING = """package crash_test
import rego.v1

import data.app

# rego-cpp 1.5.2 aborts on a whole-input mock over a rule that calls another rule.
test_whole_input_mock if app.allow with input as {"user": "reader"}

test_after_the_crash if app.allow with input.user as "admin"
"""


def sidegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidegate.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_policy_test_reports_pass_and_fail_and_exits_non_zero(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    (tmp_path / "app_test.rego").write_text(TESTS)
    result = sidegate("policy", "test", "-v", str(tmp_path))
    assert result.returncode == 2, result.stderr  # as opa test: 2 when a test fails
    out = result.stdout
    assert "data.app_test.test_admin_allowed: PASS" in out
    assert "data.app_test.test_reader_allowed: PASS" in out
    assert "data.app_test.test_wrong_expectation: FAIL" in out
    assert "data.app_test.test_undefined_fails: FAIL" in out
    assert "PASS: 2/4" in out and "FAIL: 2/4" in out


def test_policy_test_passes_with_exit_zero(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    (tmp_path / "app_test.rego").write_text(TESTS.split("test_wrong_expectation")[0])
    result = sidegate("policy", "test", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: 2/2" in result.stdout


def test_an_engine_crash_is_one_error_and_the_run_goes_on(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    (tmp_path / "crash_test.rego").write_text(CRASHING)
    out = io.StringIO()
    assert testing.report(tmp_path, out) == testing.EXIT_FAILED
    text = out.getvalue()
    assert "test_whole_input_mock: ERROR" in text
    assert "policy engine crashed" in text
    assert "data.crash_test.test_after_the_crash: PASS" in text


def test_policy_test_on_a_broken_module_reports_the_file(tmp_path):
    (tmp_path / "app.rego").write_text("package app\n\nallow if {\n  input.x ==\n}\n")
    (tmp_path / "app_test.rego").write_text("package app_test\ntest_x := true\n")
    out = io.StringIO()
    assert testing.report(tmp_path, out) == 1
    assert f"{tmp_path / 'app.rego'}:4:" in out.getvalue()


def test_shipped_policies_pass_their_tests():
    out = io.StringIO()
    code = testing.report(REPO_POLICIES, out)
    assert code == 0, out.getvalue()
    assert "FAIL" not in out.getvalue() and "ERROR" not in out.getvalue()


def test_policy_eval_prints_the_decision(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    doc = tmp_path / "input.json"
    doc.write_text(json.dumps({"user": "reader"}))
    result = sidegate(
        "policy", "eval", "--input", str(doc), "--path", "app/allow", "--policies", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"path": "app/allow", "result": True, "allowed": True}


def test_policy_eval_undefined_exits_non_zero(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    doc = tmp_path / "input.json"
    doc.write_text("{}")
    result = sidegate(
        "policy", "eval", "--input", str(doc), "--path", "app/none", "--policies", str(tmp_path)
    )
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"path": "app/none", "error": "undefined decision"}


def test_policy_eval_default_policy_from_repo(tmp_path):
    doc = tmp_path / "input.json"
    doc.write_text(json.dumps({"parsed_path": ["deny"]}))
    result = sidegate("policy", "eval", "--input", str(doc))
    assert json.loads(result.stdout)["allowed"] is False


def test_eval_with_unreadable_input(tmp_path):
    result = sidegate("policy", "eval", "--input", str(tmp_path / "missing.json"))
    assert result.returncode == 1  # an input error (common/exit_codes.py)
    assert "cannot read input document" in result.stderr


def test_test_dir_without_tests(tmp_path: Path):
    (tmp_path / "app.rego").write_text(POLICY)
    out = io.StringIO()
    assert testing.report(tmp_path, out) == 1
    assert "no test_* rules" in out.getvalue()


def test_without_verbose_only_failures_are_listed(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    (tmp_path / "app_test.rego").write_text(TESTS)
    result = sidegate("policy", "test", str(tmp_path))
    assert result.returncode == 2
    assert "test_wrong_expectation: FAIL" in result.stdout
    assert "test_admin_allowed" not in result.stdout
    assert "PASS: 2/4" in result.stdout


def test_run_selects_tests_by_name(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    (tmp_path / "app_test.rego").write_text(TESTS)
    result = sidegate("policy", "test", "-v", "--run", "test_(admin|reader)_allowed$",
                      str(tmp_path))
    assert result.returncode == 0, result.stdout
    assert "PASS: 2/2" in result.stdout and "wrong_expectation" not in result.stdout
    bad = sidegate("policy", "test", "--run", "(", str(tmp_path))
    assert bad.returncode == 1 and "--run" in bad.stderr


def test_files_are_accepted_as_well_as_directories(tmp_path):
    policy = tmp_path / "src" / "app.rego"
    policy.parent.mkdir()
    policy.write_text(POLICY)
    tests = tmp_path / "app_test.rego"
    tests.write_text(TESTS.split("test_wrong_expectation")[0])
    result = sidegate("policy", "test", "-v", str(policy.parent), str(tests))
    assert result.returncode == 0, result.stdout
    assert f"{tests}:" in result.stdout  # the user's path, not a temporary copy
    missing = sidegate("policy", "test", str(tmp_path / "nope.rego"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_eval_takes_opa_style_paths_and_stdin(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    for path in ("data.app.allow", "app.allow", "app/allow", "/app/allow"):
        result = subprocess.run(
            [sys.executable, "-m", "sidegate.cli", "policy", "eval", "--input", "-",
             "--path", path, "--policies", str(tmp_path)],
            input=json.dumps({"user": "admin"}), capture_output=True, text=True, timeout=120,
            cwd=REPO_ROOT,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["path"] == "app/allow"


def test_eval_explain_shows_the_rules_of_the_package(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY)
    doc = tmp_path / "input.json"
    doc.write_text(json.dumps({"user": "reader"}))
    result = sidegate("policy", "eval", "--input", str(doc), "--path", "app.allow",
                      "--policies", str(tmp_path), "--explain")
    shown = json.loads(result.stdout)
    assert shown["explain"] == {"app/allow": True, "app/is_reader": True}
