"""The embedded engine: compiling, regopy's known pitfalls, reload and the file watcher."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from sidegate.extauthz.policy.embedded import EmbeddedEngine, PolicyCompileError, compile_policies
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError

ALLOW_ADMIN = """package app
import rego.v1

default allow := false

allow if input.user == "admin"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def bump_mtime(path: Path) -> None:
    """Make a rewrite visible to the mtime/size fingerprint even within one clock tick."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def loaded(directory: Path, *paths: str) -> EmbeddedEngine:
    engine = EmbeddedEngine(directory, paths)
    engine.load()
    return engine


def evaluate(engine: EmbeddedEngine, path: str, doc: object) -> object:
    return engine.evaluate_json(path, json.dumps(doc)).value


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("sidegate_policy_reloads_total", {"result": result}) or 0.0


def test_syntax_error_names_file_line_and_column(tmp_path):
    bad = write(tmp_path, "bad.rego", "package p\n\nallow if {\n  input.x ==\n}\n")
    with pytest.raises(PolicyCompileError) as caught:
        compile_policies(tmp_path)
    assert f"{bad}:4:" in str(caught.value)


def test_required_path_that_names_no_rule_fails_at_load(tmp_path):
    write(tmp_path, "app.rego", ALLOW_ADMIN)
    with pytest.raises(PolicyCompileError, match="app/alow"):
        compile_policies(tmp_path, ["app/alow"])


def test_missing_directory_and_empty_directory_are_errors(tmp_path):
    with pytest.raises(PolicyCompileError, match="does not exist"):
        compile_policies(tmp_path / "nope")
    write(tmp_path, "only_test.rego", "package x_test\ntest_a := true\n")
    with pytest.raises(PolicyCompileError, match=r"no \.rego files"):
        compile_policies(tmp_path)


def test_unknown_path_is_undefined_not_another_rules_value(tmp_path):
    # rego-cpp answers an entrypoint that names no rule with another rule's value.
    write(tmp_path, "app.rego", ALLOW_ADMIN)
    engine = loaded(tmp_path)
    assert evaluate(engine, "app/allow", {"user": "admin"}) is True
    assert evaluate(engine, "app/nope", {"user": "admin"}) is UNDEFINED
    assert evaluate(engine, "other/allow", {"user": "admin"}) is UNDEFINED


def test_false_rule_is_false_not_undefined(tmp_path):
    # Queried as a bare reference regopy reports a false rule as undefined; the bundle
    # entrypoint keeps it.
    write(tmp_path, "app.rego", ALLOW_ADMIN)
    assert evaluate(loaded(tmp_path), "app/allow", {"user": "bob"}) is False


def test_undefined_result_does_not_abort(tmp_path):
    # output.expressions() on an undefined result aborts the process in regopy 1.5.2.
    write(tmp_path, "app.rego", "package app\nimport rego.v1\nallow if input.x == 1\n")
    assert evaluate(loaded(tmp_path), "app/allow", {"x": 2}) is UNDEFINED


def test_input_arrays_survive_json_marshal(tmp_path):
    # set_input with Python objects gave arrays json.marshal could not serialise.
    write(tmp_path, "app.rego", "package app\nimport rego.v1\nout := json.marshal(input.a)\n")
    value = evaluate(loaded(tmp_path), "app/out", {"a": [1, ["x", {"k": [True]}]]})
    assert json.loads(value) == [1, ["x", {"k": [True]}]]


def test_package_named_after_a_builtin_namespace_is_refused(tmp_path):
    write(tmp_path, "lib.rego", "package app.object\nimport rego.v1\nx := 1\n")
    write(tmp_path, "main.rego", 'package app.main\nimport rego.v1\ny := object.get({}, "a", 0)\n')
    with pytest.raises(PolicyCompileError, match=r"lib.rego:1:1: package 'app.object'"):
        compile_policies(tmp_path)


def test_data_files_load_at_their_directory_path(tmp_path):
    write(tmp_path, "app.rego", "package app\nimport rego.v1\nroles := data.rbac.roles\n")
    write(tmp_path, "rbac/data.json", json.dumps({"roles": {"admin": ["*"]}}))
    write(tmp_path, "rbac/more.yaml", "extra: 1\n")
    write(tmp_path, "app2.rego", "package app2\nimport rego.v1\nextra := data.rbac.extra\n")
    engine = loaded(tmp_path)
    assert evaluate(engine, "app/roles", {}) == {"admin": ["*"]}
    assert evaluate(engine, "app2/extra", {}) == 1


def test_bad_data_file_is_a_compile_error(tmp_path):
    write(tmp_path, "app.rego", ALLOW_ADMIN)
    bad = write(tmp_path, "data.json", "[1, 2")
    with pytest.raises(PolicyCompileError, match=str(bad)):
        compile_policies(tmp_path)


def test_every_rule_is_selectable_including_default_only_rules(tmp_path):
    write(
        tmp_path,
        "app.rego",
        'package app\nimport rego.v1\n\ndefault d := "x"\n\nobj := {"allowed": true}\n\n'
        "s contains 1 if true\n\nf(x) := x\n",
    )
    engine = loaded(tmp_path)
    assert engine.entrypoints == {"app/d", "app/obj", "app/s"}
    assert evaluate(engine, "app/d", {}) == "x"
    assert evaluate(engine, "app/s", {}) == [1]


def test_reload_applies_a_new_rule_and_a_broken_file_keeps_the_old(tmp_path):
    policy = write(tmp_path, "app.rego", ALLOW_ADMIN)
    engine = loaded(tmp_path)
    assert evaluate(engine, "app/allow", {"user": "bob"}) is False

    policy.write_text(ALLOW_ADMIN.replace('"admin"', '"bob"'))
    ok_before = reloads("ok")
    assert engine.reload() is True
    assert reloads("ok") == ok_before + 1
    assert evaluate(engine, "app/allow", {"user": "bob"}) is True

    policy.write_text("package app\nallow if {{{\n")
    failed_before = reloads("failed")
    assert engine.reload() is False
    assert reloads("failed") == failed_before + 1
    assert evaluate(engine, "app/allow", {"user": "bob"}) is True  # old bundle still serving


async def test_watcher_reloads_on_change(tmp_path):
    policy = write(tmp_path, "app.rego", ALLOW_ADMIN)
    engine = EmbeddedEngine(tmp_path, watch_interval=0.02)
    await engine.start()
    try:
        assert evaluate(engine, "app/allow", {"user": "bob"}) is False
        policy.write_text(ALLOW_ADMIN.replace('"admin"', '"bob"'))
        bump_mtime(policy)
        for _ in range(2000):
            if evaluate(engine, "app/allow", {"user": "bob"}) is True:
                break
            await asyncio.sleep(0.01)
        assert evaluate(engine, "app/allow", {"user": "bob"}) is True
    finally:
        await engine.close()


# rego-cpp 1.5.2's bundle compiler emits a plan its own verifier rejects for this module
# ("bundle verify: raw index N >= local_count N"); the engine must still answer correctly.
VERIFY_BUG = """package e2e
default decide := {"allowed": false, "body": "denied"}
decide := {
	"headers": {
		"x-deny-reason": "premium",
	},
} if input.parsed_path[0] == "premium"
decide := {
	"headers": {"x-added-by-policy": "yes", "x-multi": ["one", "two"]},
	"request_headers_to_remove": ["x-remove-me"],
	"response_headers_to_add": {"x-policy-response": "present"},
	"query_parameters_to_set": {"added": "1"},
	"query_parameters_to_remove": ["drop"],
} if input.parsed_path[0] == "open"
strict := {
	"http_status": 401,
}"""


def test_entrypoint_the_bundle_cannot_evaluate_is_interpreted(tmp_path):
    write(tmp_path, "e2e.rego", VERIFY_BUG)
    engine = loaded(tmp_path)
    assert evaluate(engine, "e2e/decide", {"parsed_path": ["premium"]}) == {
        "headers": {"x-deny-reason": "premium"}
    }
    assert evaluate(engine, "e2e/decide", {"parsed_path": ["other"]}) == {
        "allowed": False,
        "body": "denied",
    }
    assert evaluate(engine, "e2e/strict", {}) == {"http_status": 401}


def test_conflict_is_an_error_on_both_query_paths(tmp_path):
    write(
        tmp_path, "app.rego", "package app\nimport rego.v1\nv := 1 if input.a\nv := 2 if input.a\n"
    )
    engine = loaded(tmp_path)
    with pytest.raises(PolicyError):
        evaluate(engine, "app/v", {"a": True})
    engine._compiled.interpreted.add("app/v")  # force the interpreter path
    with pytest.raises(PolicyError):
        evaluate(engine, "app/v", {"a": True})
    assert evaluate(engine, "app/v", {"a": False}) is UNDEFINED
