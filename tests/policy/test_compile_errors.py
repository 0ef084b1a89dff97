"""Compile errors that name their place: rule conflicts, nesting too deep, and print().

Each case failed differently before: "policies do not compile" with no place, a SIGSEGV in
rego-cpp, a RecursionError out of the compile, raw text on stdout between JSON log lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sidegate.extauthz.policy.builtins_check import drop_print
from sidegate.extauthz.policy.embedded import EmbeddedEngine, PolicyCompileError, compile_policies
from sidegate.extauthz.policy.engine import PolicyError
from sidegate.extauthz.policy.rule_conflicts import find_conflicts
from sidegate.extauthz.policy.sources import read_sources

DEEP = 3000


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- rule conflicts ------------------------------------------------------------------------


def test_two_defaults_name_both_files_and_lines(tmp_path):
    a = write(tmp_path, "a.rego", "package app\nimport rego.v1\n\ndefault allow := false\n")
    b = write(tmp_path, "b.rego", "package app\n\ndefault allow := true\n")
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    message = str(caught.value)
    assert f"{b}:3:1: multiple default rules for data.app.allow" in message
    assert f"(the other at {a}:4:1)" in message
    assert "do not compile" not in message


def test_equal_defaults_in_two_files_are_refused_too(tmp_path):
    write(tmp_path, "a.rego", "package app\n\ndefault allow := false\n")
    write(tmp_path, "b.rego", "package app\n\ndefault allow := false\n")
    with pytest.raises(PolicyCompileError, match="multiple default rules"):
        compile_policies(tmp_path)


ARITY = """
import sys
from pathlib import Path
from sidegate.extauthz.policy.embedded import PolicyCompileError, compile_policies
try:
    compile_policies(Path(sys.argv[1]))
except PolicyCompileError as exc:
    print(exc)
"""


def test_a_function_with_two_arities_is_named_not_a_crash(tmp_path):
    # rego-cpp 1.5.2 dies with SIGSEGV on this set: run the load in a child process.
    a = write(tmp_path, "a.rego", "package app\nimport rego.v1\n\nf(x) := x\n")
    b = write(tmp_path, "b.rego", "package app\nimport rego.v1\n\nf(x, y) := x\n\nallow := f(1)\n")
    result = subprocess.run(
        [sys.executable, "-c", ARITY, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"{b}:4:1: function data.app.f takes 2 argument(s) here and 1 at {a}:4:1" in (
        result.stdout
    )


@pytest.mark.parametrize(
    ("first", "second", "kinds"),
    [
        ("allow := true", "allow contains 1", ("a partial set rule", "a complete rule")),
        ("allow := 1", 'allow[k] := 1 if k := "a"', ("a partial object rule", "a complete rule")),
    ],
)
def test_rules_of_different_kinds_name_both_places(tmp_path, first, second, kinds):
    a = write(tmp_path, "a.rego", f"package app\nimport rego.v1\n\n{first}\n")
    b = write(tmp_path, "b.rego", f"package app\nimport rego.v1\n\n\n{second}\n")
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    assert str(caught.value) == (
        f"{b}:5:1: data.app.allow is defined as {kinds[0]} here and as {kinds[1]} at {a}:4:1"
    )


def test_compatible_definitions_are_no_conflict(tmp_path):
    write(
        tmp_path,
        "a.rego",
        "package app\nimport rego.v1\n\ndefault allow := false\n\nallow if input.a\n\n"
        "deny contains 1 if input.b\n\ndefault f(_) := 0\n\nf(x) := 1 if x\n\n"
        'obj[k] := 1 if k := "a"\n\nallow := true if {\n\tinput.c\n} else := false\n',
    )
    write(
        tmp_path,
        "b.rego",
        "package app\nimport rego.v1\n\nallow if input.d\n\ndeny contains 2 if input.e\n\n"
        "f(x) := 2 if not x\n\nobj[k] := 2 if k := \"b\"\n",
    )
    conflicts = find_conflicts(read_sources(tmp_path).policy_modules)
    assert (conflicts.fatal, conflicts.kinds) == ([], [])


# -- nesting ---------------------------------------------------------------------------------


def test_a_deeply_nested_rego_module_is_a_compile_error(tmp_path):
    deep = "[" * DEEP + "]" * DEEP
    path = write(tmp_path, "app.rego", f"package app\n\nallow := true\n\nz := {deep}\n")
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    assert str(caught.value) == f"{path}:5:106: nested deeper than 100 levels"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("data.json", '{"a": ' + "[" * DEEP + "]" * DEEP + "}"),
        ("data.json", '{"a": ' + '{"b": ' * DEEP + "1" + "}" * DEEP + "}"),
        ("data.yaml", "a: " + "[" * DEEP + "]" * DEEP + "\n"),
        ("data.yaml", "".join("  " * i + "k:\n" for i in range(DEEP)) + "  " * DEEP + "1\n"),
        # shallow enough for the parsers, too deep for the bound
        ("data.json", '{"a": ' + "[" * 500 + "]" * 500 + "}"),
    ],
)
def test_a_deeply_nested_data_file_is_a_compile_error(tmp_path, name, text):
    write(tmp_path, "app.rego", "package app\n\nallow := true\n")
    path = write(tmp_path, f"lib/{name}", text)
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    if name.endswith(".yaml"):
        # YAML is refused sooner, by the one YAML loader (common/yaml_loader.py), with its line.
        assert str(path) in str(caught.value)
        assert "nested deeper than" in str(caught.value) or "nesting depth" in str(caught.value)
    else:
        assert str(caught.value) == f"{path}: data nested deeper than 100 levels"


def test_nesting_at_the_bound_loads(tmp_path):
    write(tmp_path, "app.rego", "package app\n\nz := " + "[" * 99 + "]" * 99 + "\n")
    write(tmp_path, "lib/data.json", '{"a": ' + "[" * 98 + "]" * 98 + "}")
    compile_policies(tmp_path)


def test_a_deep_file_on_reload_keeps_the_bundle_and_raises_nothing(tmp_path):
    path = write(tmp_path, "app.rego", "package app\n\nallow := true\n")
    engine = EmbeddedEngine(tmp_path)
    engine.load()
    path.write_text("package app\n\nallow := " + "[" * DEEP + "]" * DEEP + "\n")
    with capture_logs() as logs:
        assert engine.reload() is False
    assert any(e["event"] == "policy_reload_failed" for e in logs)
    assert engine.evaluate_json("app/allow", "{}").value is True


def test_a_deep_value_built_at_evaluation_is_an_evaluation_error(tmp_path):
    deep = "[" * DEEP + "]" * DEEP
    write(
        tmp_path,
        "app.rego",
        "package app\nimport rego.v1\n\nz := json.unmarshal(input.s)\n",
    )
    engine = EmbeddedEngine(tmp_path, cache_decisions=False)
    engine.load()
    with pytest.raises(PolicyError, match="nested too deeply"):
        engine.evaluate_json("app/z", json.dumps({"s": deep}))


# -- print() ---------------------------------------------------------------------------------

PRINTING = """package app
import rego.v1

default allow := false

allow if {
	print("checking", input.user)
	input.user == "admin"
}

loud := x if {
	x := 1
	print(
		"multi", "line", x)
}
"""


def test_print_reaches_neither_stdout_nor_the_decision(tmp_path, capfd):
    write(tmp_path, "app.rego", PRINTING)
    engine = EmbeddedEngine(tmp_path, cache_decisions=False)
    engine.load()  # the load probes every entrypoint, which printed too
    assert engine.evaluate_json("app/allow", '{"user": "admin"}').value is True
    assert engine.evaluate_json("app/allow", '{"user": "bob"}').value is False
    assert engine.evaluate_json("app/loud", "{}").value == 1
    out, _ = capfd.readouterr()
    assert out == ""  # rego-cpp writes print() to fd 1 itself


def test_drop_print_keeps_lines_and_columns():
    text = PRINTING + "\nafter := data.x.print(1)\nnested if print(print(1))\n"
    dropped = drop_print(text)
    assert len(dropped) == len(text)
    assert dropped.count("\n") == text.count("\n")
    assert "print(" not in dropped.replace("data.x.print(1)", "")
    assert "data.x.print(1)" in dropped  # a rule path named print is not the builtin
    assert "\ttrue" in dropped and "nested if true" in dropped
    for original, kept in zip(text.split("\n"), dropped.split("\n"), strict=True):
        if "print" not in original and "multi" not in original:
            assert original == kept


def test_policy_eval_output_stays_json_with_print(tmp_path):
    write(tmp_path, "app.rego", PRINTING)
    doc = write(tmp_path, "input.json", json.dumps({"user": "admin"}))
    result = subprocess.run(
        [sys.executable, "-m", "sidegate.cli", "policy", "eval", "--input", str(doc),
         "--path", "app/allow", "--policies", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"path": "app/allow", "result": True, "allowed": True}


def test_a_recursion_error_never_leaves_the_compile(tmp_path, monkeypatch):
    # The last line of defence behind the nesting bound: whatever still recurses too deep.
    from sidegate.extauthz.policy import embedded

    def too_deep(*_: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    write(tmp_path, "app.rego", "package app\n\nallow := true\n")
    monkeypatch.setattr(embedded, "_nest_data", too_deep)
    with pytest.raises(PolicyCompileError, match="nested too deeply to compile"):
        compile_policies(tmp_path)


# -- hostile modules: the static checks answer, never raise ----------------------------------

MUTATION_PIECES = [
    "(", ")", "[", "]", "{", "}", '"', "`", "#", "\n", ".", ",", "print(", "default ",
    "f(x) := ", "contains ", " if ", "$", "\\", "data.", ":=",
]  # fmt: skip


def test_static_checks_survive_mutated_modules():
    """Seeded, bounded: 300 mutations of the shipped policies through every static check."""
    import random

    from sidegate.extauthz.policy import nesting
    from sidegate.extauthz.policy.builtins_check import unsupported_calls
    from sidegate.extauthz.policy.sources import RegoModule
    from tests.policy.conftest import REPO_POLICIES

    texts = [p.read_text() for p in sorted(REPO_POLICIES.rglob("*.rego"))]
    rng = random.Random(9)
    for round_ in range(300):
        text = rng.choice(texts)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(text) + 1)
            if rng.random() < 0.5:
                text = text[:at] + rng.choice(MUTATION_PIECES) + text[at:]
            else:
                text = text[:at] + text[at + rng.randint(1, 8) :]
        module = RegoModule(Path(f"m{round_}.rego"), text, "app")
        problems = unsupported_calls([module], lambda name: name.startswith("s"))
        assert all(p.startswith(f"m{round_}.rego:") for p in problems)
        find_conflicts([module])
        dropped = drop_print(text)
        assert len(dropped) == len(text)
        try:
            nesting.check_rego(text)
        except nesting.TooDeep:
            pass
