"""What the embedded engine cannot evaluate is refused at load, never evaluated to undefined.

regopy 1.5.2 answers a call to a builtin it lacks (or to a function defined nowhere) with
*undefined* and no error, so ``blocked if net.cidr_contains(...)`` + ``allow if not blocked``
allowed everyone. Every way a policy set is loaded refuses it: compile, reload, check-config,
``policy eval`` and ``policy test``.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import regopy
from structlog.testing import capture_logs

from sidegate.cli import main
from sidegate.extauthz.policy import testing
from sidegate.extauthz.policy.builtins_check import (
    OPA_BUILTINS,
    unsupported_builtins,
    unsupported_calls,
)
from sidegate.extauthz.policy.embedded import EmbeddedEngine, PolicyCompileError, compile_policies
from sidegate.extauthz.policy.sources import read_sources
from tests.policy.conftest import REPO_POLICIES

REPO_ROOT = REPO_POLICIES.parent
DOCS = REPO_ROOT / "docs" / "policy.md"

CIDR_POLICY = """package app
import rego.v1

default allow := false

blocked if net.cidr_contains("10.0.0.0/8", input.ip)

allow if not blocked
"""

# Named in the issue; every one must be on the refused list.
NAMED_IN_ISSUE = {
    "net.cidr_contains", "net.cidr_intersects", "net.cidr_merge", "net.cidr_expand",
    "net.lookup_ip_addr", "http.send", "json.match_schema", "json.verify_schema",
    "graphql.parse", "graphql.is_valid", "strings.render_template", "rego.metadata.rule",
    "rego.metadata.chain", "rego.parse_module", "providers.aws.sign_req",
    "crypto.x509.parse_and_verify_certificates_with_keys", "trace",
}  # fmt: skip


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def is_builtin(name: str) -> bool:
    return bool(regopy.Interpreter().is_builtin(name))


def test_the_cidr_example_is_refused_with_place_name_and_hint(tmp_path):
    path = write(tmp_path, "app.rego", CIDR_POLICY)
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}:6:12: builtin net.cidr_contains ")
    assert "engine: remote" in message and "OPA" in message


def test_the_refused_list_is_what_the_installed_engine_lacks():
    refused = unsupported_builtins(is_builtin)
    assert NAMED_IN_ISSUE <= set(refused)
    assert all(not is_builtin(name) for name in refused)
    # and nothing the engine implements is refused
    assert all(is_builtin(n) for n in OPA_BUILTINS - set(refused) - {"print"})


def test_docs_list_exactly_the_unsupported_builtins():
    text = DOCS.read_text()
    section = text.split("<!-- unsupported-builtins -->")[1]
    listed = set(re.findall(r"`([a-z_0-9.]+)`", section.split("<!-- /unsupported-builtins -->")[0]))
    assert listed == set(unsupported_builtins(is_builtin))


@pytest.mark.parametrize("builtin", unsupported_builtins(is_builtin))
def test_every_unsupported_builtin_is_refused(tmp_path, builtin):
    path = write(
        tmp_path, "app.rego", f"package app\nimport rego.v1\n\nallow if {{\n\t{builtin}(1)\n}}\n"
    )
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    assert str(caught.value).startswith(f"{path}:5:2: builtin {builtin} is not implemented")


UNDEFINED_CALLS = [
    ("x := nosuchfunction(1)", "nosuchfunction"),
    ("x := made.up(1)", "made.up"),
    ("x := data.lib.missing(1)", "data.lib.missing"),
    ("x := lib.missing(1)", "lib.missing"),
    ("x := input.f(1)", "input.f"),
    ("x if not helpr(1)", "helpr"),
]


@pytest.mark.parametrize(("rule", "name"), UNDEFINED_CALLS)
def test_a_function_defined_nowhere_is_refused(tmp_path, rule, name):
    write(tmp_path, "lib.rego", "package lib\nimport rego.v1\n\nf(x) := x\n")
    path = write(
        tmp_path,
        "app.rego",
        f"package app\nimport rego.v1\nimport data.lib\n\nhelper(x) := x\n\n{rule}\n",
    )
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    assert re.match(
        rf"{re.escape(str(path))}:7:\d+: {re.escape(name)} is neither a builtin", str(caught.value)
    )


def test_functions_defined_anywhere_and_implemented_builtins_load(tmp_path):
    write(tmp_path, "lib.rego", "package lib\nimport rego.v1\n\nf(x) := x * 2\n")
    write(tmp_path, "more.rego", "package app\nimport rego.v1\n\nother(x) := x + 1\n")
    write(
        tmp_path,
        "app.rego",
        "package app\nimport rego.v1\nimport data.lib\nimport data.lib.f as double\n\n"
        "helper(x) := x\n\n"
        "a := helper(1)\nb := data.lib.f(1)\nc := lib.f(2)\nd := double(3)\ne := other(4)\n"
        'g := concat(",", [lower("A"), sprintf("%d", [count([1])])])\n'
        'h := io.jwt.decode_verify("x", {"secret": "s"})\n'
        'i := "net.cidr_contains(x) is only text" # http.send(x) in a comment\n'
        "j := object.get({}, \"k\", 1)\n",
    )
    compiled = compile_policies(tmp_path)
    assert "app/a" in compiled.entrypoints


def test_a_call_on_the_line_after_if_is_checked(tmp_path):
    # At line start and depth 0, but it continues the `if`: a call, not a function head.
    path = write(
        tmp_path,
        "app.rego",
        'package app\nimport rego.v1\n\nallow if\n\tnet.cidr_contains("10.0.0.0/8", input.ip)\n'
        "else := false\n",
    )
    with pytest.raises(PolicyCompileError, match=rf"{re.escape(str(path))}:5:2: builtin net"):
        compile_policies(tmp_path)


def test_a_template_string_module_is_refused_as_uncheckable(tmp_path):
    # rego-cpp evaluates template strings; what they call cannot be checked here.
    path = write(tmp_path, "app.rego", 'package app\nimport rego.v1\n\nx := $"{1}"\n')
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    assert str(caught.value).startswith(f"{path}:4: template string")
    assert "engine: remote" in str(caught.value)


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    write(tmp_path, "a.rego", CIDR_POLICY)
    write(tmp_path, "b.rego", 'package b\nimport rego.v1\n\nx := http.send({})\ny := nope(1)\n')
    problems = unsupported_calls(read_sources(tmp_path).policy_modules)
    assert [p.split(": ", 1)[0].rsplit("/", 1)[1] for p in problems] == [
        "a.rego:6:12",
        "b.rego:4:6",
        "b.rego:5:6",
    ]


# -- reloads ---------------------------------------------------------------------------------


def test_a_refused_reload_keeps_the_running_bundle(tmp_path):
    cidr = 'net.cidr_contains("10.0.0.0/8", input.ip)'
    prefix = CIDR_POLICY.replace(cidr, 'startswith(input.ip, "10.")')
    path = write(tmp_path, "app.rego", prefix)
    engine = EmbeddedEngine(tmp_path, ["app/allow"])
    engine.load()
    doc = json.dumps({"ip": "10.1.2.3"})
    assert engine.evaluate_json("app/allow", doc).value is False
    path.write_text(CIDR_POLICY)
    with capture_logs() as logs:
        assert engine.reload() is False
    [failed] = [e for e in logs if e["event"] == "policy_reload_failed"]
    assert f"{path}:6:12: builtin net.cidr_contains" in failed["error"]
    assert engine.evaluate_json("app/allow", doc).value is False  # the old bundle answers


# -- the command line ------------------------------------------------------------------------


def sidegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidegate.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_config_refuses_an_unsupported_builtin(tmp_path, capsys):
    policies = tmp_path / "policies"
    path = write(policies, "app.rego", CIDR_POLICY.replace("package app", "package envoy.authz"))
    config = write(tmp_path, "sidegate.yaml", "authz:\n  policy:\n    directory: policies\n")
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:6:12: builtin net.cidr_contains" in err and "engine: remote" in err


def test_policy_eval_refuses_an_unsupported_builtin(tmp_path):
    path = write(tmp_path, "app.rego", CIDR_POLICY)
    doc = write(tmp_path, "input.json", json.dumps({"ip": "10.1.2.3"}))
    result = sidegate(
        "policy", "eval", "--input", str(doc), "--path", "app/allow", "--policies", str(tmp_path)
    )
    assert result.returncode == 1  # bad input (common/exit_codes.py)
    assert f"{path}:6:12: builtin net.cidr_contains" in result.stderr
    assert result.stdout == ""  # no decision printed: there is none to trust


def test_policy_test_refuses_unsupported_calls_in_tests_too(tmp_path):
    write(tmp_path, "app.rego", "package app\nimport rego.v1\n\nallow if input.ok\n")
    tests = write(
        tmp_path,
        "app_test.rego",
        "package app_test\nimport rego.v1\nimport data.app\n\n"
        'test_not_blocked if not net.cidr_contains("10.0.0.0/8", "10.1.2.3")\n',
    )
    out = io.StringIO()
    # A load error, as opa test exits for policies it cannot load (failures are 2).
    assert testing.report(tmp_path, out) == testing.EXIT_LOAD_ERROR
    assert f"{tests}:5:25: builtin net.cidr_contains" in out.getvalue()
    assert "PASS" not in out.getvalue()


def test_policy_test_still_runs_clean_sets(tmp_path):
    write(tmp_path, "app.rego", "package app\nimport rego.v1\n\nallow if input.ok\n")
    write(
        tmp_path,
        "app_test.rego",
        "package app_test\nimport rego.v1\nimport data.app\n\n"
        "test_ok if app.allow with input.ok as true\n",
    )
    out = io.StringIO()
    assert testing.report(tmp_path, out) == 0, out.getvalue()
