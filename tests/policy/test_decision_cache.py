"""The embedded engine's decision cache: hits, misses, bounds, reloads, and the static check
that keeps it off for policies whose decisions may change for the same input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import regopy
from prometheus_client import REGISTRY
from pydantic import ValidationError
from structlog.testing import capture_logs

from sidegate.extauthz.factory import build_engine
from sidegate.extauthz.policy.decision_cache import DecisionCache, cache_key
from sidegate.extauthz.policy.determinism import IMPURE_BUILTINS, nondeterminism
from sidegate.extauthz.policy.embedded import EmbeddedEngine, PolicyCompileError
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError
from sidegate.extauthz.request_view import RequestView
from sidegate.extauthz.service import AuthzService
from sidegate.extauthz.settings import AuthzSettings
from tests.policy.conftest import REPO_POLICIES
from tests.policy.helpers import check_request, status_of
from tests.policy.test_input_pruning import (
    IDENTITIES,
    POLICY_DIRS,
    full_input,
    outcome,
    pruned_input,
    requests,
)
from tests.policy.test_opa_docs_policy import DOCS_DIR

POLICY = "package app\nimport rego.v1\n\ndefault allow := false\n\n{rule}\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_count(result: str) -> float:
    value = REGISTRY.get_sample_value("sidegate_policy_decision_cache_total", {"result": result})
    return value or 0.0


def engine_for(directory: Path, **options: Any) -> EmbeddedEngine:
    engine = EmbeddedEngine(directory, **options)
    engine.load()
    return engine


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.rego").write_text(POLICY.format(rule='allow if input.parsed_path[0] == "a"'))
    return tmp_path


def doc(*path: str) -> str:
    return json.dumps({"parsed_path": list(path)}, separators=(",", ":"))


# -- hits and misses -------------------------------------------------------------------------


def test_identical_inputs_hit_with_the_same_decision(app):
    engine = engine_for(app)
    hits, misses = cache_count("hit"), cache_count("miss")
    first = engine.evaluate_json("app/allow", doc("a", "x"))
    second = engine.evaluate_json("/app/allow/", doc("a", "x"))
    assert (first.value, first.cached) == (True, False)
    assert (second.value, second.cached) == (True, True)
    assert (cache_count("hit") - hits, cache_count("miss") - misses) == (1, 1)
    assert len(engine.decision_cache) == 1


def test_different_inputs_or_paths_miss(app):
    engine = engine_for(app)
    results = [
        engine.evaluate_json("app/allow", doc("a")),
        engine.evaluate_json("app/allow", doc("b")),
        engine.evaluate_json("app/allow", doc("a", "b")),
        engine.evaluate_json("app/allow", json.dumps({"parsed_path": ["a"]})),  # other spacing
    ]
    assert [r.value for r in results] == [True, False, True, True]
    assert not any(r.cached for r in results)
    assert len(engine.decision_cache) == 4
    # The same input for another decision path is another decision.
    (app / "more.rego").write_text("package more\nimport rego.v1\n\nallow if input.parsed_path\n")
    engine = engine_for(app)
    assert engine.evaluate_json("app/allow", doc("b")).value is False
    other = engine.evaluate_json("more/allow", doc("b"))
    assert (other.value, other.cached) == (True, False)


def test_undefined_and_null_are_cached_and_errors_are_not(tmp_path):
    (tmp_path / "app.rego").write_text(
        "package app\nimport rego.v1\n\nnothing if input.never\nnull_value := null if input.a\n"
        "conflict := 1 if input.a\nconflict := 2 if input.a\n"
    )
    engine = engine_for(tmp_path)
    body = json.dumps({"a": True})
    for _ in range(2):
        assert engine.evaluate_json("app/nothing", body).value is UNDEFINED
        assert engine.evaluate_json("app/null_value", body).value is None
    assert engine.evaluate_json("app/nothing", body).cached
    assert engine.evaluate_json("app/null_value", body).cached
    stored = len(engine.decision_cache)
    for _ in range(2):
        with pytest.raises(PolicyError):
            engine.evaluate_json("app/conflict", body)
    assert len(engine.decision_cache) == stored


def test_entries_expire_after_the_ttl(app):
    clock = Clock()
    engine = engine_for(app, cache_ttl_s=5.0, clock=clock)
    assert not engine.evaluate_json("app/allow", doc("a")).cached
    # Each entry's TTL is jittered down by up to 20 % (no synchronised expiry), never up.
    clock.now += 3.9
    assert engine.evaluate_json("app/allow", doc("a")).cached
    clock.now += 1.1  # 5 s after it was stored: gone whatever the jitter
    again = engine.evaluate_json("app/allow", doc("a"))
    assert (again.value, again.cached) == (True, False)
    assert engine.evaluate_json("app/allow", doc("a")).cached


def test_the_bound_is_respected_least_recently_used_first(app):
    engine = engine_for(app, cache_max_entries=3)
    for name in ("a", "b", "c"):
        engine.evaluate_json("app/allow", doc(name))
    assert engine.evaluate_json("app/allow", doc("a")).cached  # "b" is now the oldest
    for name in ("d", "e"):
        engine.evaluate_json("app/allow", doc(name))
    assert len(engine.decision_cache) == 3
    assert not engine.evaluate_json("app/allow", doc("b")).cached
    assert engine.evaluate_json("app/allow", doc("e")).cached


# -- reloads ---------------------------------------------------------------------------------


def test_a_reloaded_policy_never_gets_an_old_decision(app):
    engine = engine_for(app)
    for _ in range(2):
        assert engine.evaluate_json("app/allow", doc("a")).value is True
    (app / "app.rego").write_text(POLICY.format(rule='allow if input.parsed_path[0] == "b"'))
    assert engine.reload()
    result = engine.evaluate_json("app/allow", doc("a"))
    assert (result.value, result.cached) == (False, False)
    assert engine.evaluate_json("app/allow", doc("a")).cached


def test_changed_data_starts_a_new_generation(app):
    (app / "app.rego").write_text(
        POLICY.format(rule="allow if input.parsed_path[0] in data.app.open")
    )
    (app / "app").mkdir()
    (app / "app" / "data.json").write_text('{"open": ["a"]}')
    engine = engine_for(app)
    assert engine.evaluate_json("app/allow", doc("a")).value is True
    [(generation, _, _)] = engine.decision_cache.keys()
    (app / "app" / "data.json").write_text('{"open": ["b"]}')
    assert engine.reload()
    result = engine.evaluate_json("app/allow", doc("a"))
    assert (result.value, result.cached) == (False, False)
    [(new_generation, _, _)] = engine.decision_cache.keys()
    assert new_generation > generation


def test_an_evaluation_finishing_on_the_old_bundle_cannot_serve_the_new_one(app):
    engine = engine_for(app)
    old = engine._compiled
    (app / "app.rego").write_text(POLICY.format(rule='allow if input.parsed_path[0] == "b"'))
    assert engine.reload()
    # What an evaluation that began before the swap would store on finishing:
    engine.decision_cache.put(cache_key(old.generation, "app/allow", doc("a")), True)
    result = engine.evaluate_json("app/allow", doc("a"))
    assert (result.value, result.cached) == (False, False)


# -- when the cache stays off ----------------------------------------------------------------

USES = [
    ("time.now_ns", "time.now_ns()"),
    ("rand.intn", 'rand.intn("k", 10)'),
    ("uuid.rfc4122", 'uuid.rfc4122("k")'),
    ("http.send", 'http.send({"method": "get", "url": "http://127.0.0.1:1"})'),
    ("net.lookup_ip_addr", 'net.lookup_ip_addr("localhost")'),
    ("opa.runtime", "opa.runtime()"),
    ("io.jwt.decode_verify", 'io.jwt.decode_verify("t", {"secret": "s"})'),
    ("crypto.x509.parse_and_verify_certificates", 'crypto.x509.parse_and_verify_certificates("c")'),
    (
        "crypto.x509.parse_and_verify_certificates_with_keys",
        'crypto.x509.parse_and_verify_certificates_with_keys("c", {})',
    ),
    ("trace", 'trace("t")'),
]

PLACES = {
    # A rule body, rego.v1 syntax; the call is on line 7.
    "rule": "package app\nimport rego.v1\n\ndefault allow := false\n\nallow if {{\n\t_ = {call}\n"
    '\tinput.parsed_path[0] == "a"\n}}\n',
    # Inside a helper function's body only.
    "function": "package app\nimport rego.v1\n\ndefault allow := false\n\nhelper(x) := y if {{\n"
    '\ty := {call}\n}}\n\nallow if {{\n\thelper(1)\n\tinput.parsed_path[0] == "a"\n}}\n',
    # Pre-1.0 style with `import future.keywords`, in a second module of the package.
    "future_keywords": "package app\nimport future.keywords.if\nimport future.keywords.in\n\n"
    "\n\nhelper if {{\n\t{call}\n}}\n",
}


def test_every_impure_builtin_is_covered():
    assert {name for name, _ in USES} == IMPURE_BUILTINS


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize(("builtin", "call"), USES, ids=[u[0] for u in USES])
def test_impure_builtins_keep_the_cache_off(tmp_path, builtin, call, place):
    text = PLACES[place].format(call=call)
    if place == "future_keywords":
        (tmp_path / "app.rego").write_text(
            POLICY.format(rule='allow if input.parsed_path[0] == "a"')
        )
        (tmp_path / "helpers.rego").write_text(text)
        name = "helpers.rego"
    else:
        (tmp_path / "app.rego").write_text(text)
        name = "app.rego"
    line = text.split("\n").index(next(x for x in text.split("\n") if builtin + "(" in x)) + 1
    if not regopy.Interpreter().is_builtin(builtin):
        # The embedded engine lacks it: refused at load (test_builtins_check), never cached.
        with pytest.raises(PolicyCompileError, match=rf"{name}:{line}:\d+: builtin {builtin} "):
            engine_for(tmp_path)
        return
    with capture_logs() as logs:
        engine = engine_for(tmp_path)
    assert engine.input_needs is not None  # pruned: only the builtin keeps the cache off
    assert engine.decision_cache is None
    [event] = [e for e in logs if e["event"] == "policy_decision_cache_disabled"]
    assert event["builtin"] == builtin
    assert event["location"] == f"{tmp_path / name}:{line}"
    assert event["reason"].startswith("reads the clock")  # known impure, not merely unknown
    bypass = cache_count("bypass")
    try:
        for _ in range(2):
            assert not engine.evaluate_json("app/allow", doc("a")).cached
    except PolicyError:
        pass  # rego-cpp lacks some of these builtins; the cache stays off all the same
    assert cache_count("bypass") - bypass >= 1


def test_an_impure_builtin_counts_even_when_not_called():
    module = "package app\nimport rego.v1\n\nallow if {\n\tf with time.now_ns as 1\n}\nf := 1\n"
    [finding] = nondeterminism([module], ["app.rego"])
    assert (finding.where, finding.name) == ("app.rego:5", "time.now_ns")


def test_a_test_module_does_not_count(app):
    (app / "app_test.rego").write_text(
        "package app\nimport rego.v1\n\ntest_x if {\n\tprint(time.now_ns())\n\tallow\n}\n"
    )
    assert engine_for(app).decision_cache is not None


UNKNOWN = [
    "x := made.up(1)",
    "x := nosuchfunction(1)",
    "x := data.lib.missing(1)",
    'x := io.jwt.encode_sign({"alg": "ES256"}, {}, {})',  # signatures may be randomised
    'x := data["lib"].f(1)',
    "x := input.f(1)",
]


@pytest.mark.parametrize("rule", UNKNOWN)
def test_a_call_that_cannot_be_resolved_keeps_the_cache_off(rule):
    [finding] = nondeterminism([f"package extra\nimport rego.v1\n\n{rule}\n"], ["extra.rego"])
    assert finding.where == "extra.rego:4"
    assert "function" in finding.why


def test_an_unknown_call_keeps_the_engine_cache_off(app):
    # A builtin rego-cpp has but this analysis does not know to be pure.
    (app / "extra.rego").write_text(
        'package extra\nimport rego.v1\n\nx := io.jwt.encode_sign_raw("{}", "{}", "{}")\n'
    )
    with capture_logs() as logs:
        engine = engine_for(app)
    assert engine.decision_cache is None
    [event] = [e for e in logs if e["event"] == "policy_decision_cache_disabled"]
    assert (event["builtin"], event["location"]) == (
        "io.jwt.encode_sign_raw",
        f"{app / 'extra.rego'}:4",
    )
    assert not engine.evaluate_json("app/allow", doc("a")).cached
    assert not engine.evaluate_json("app/allow", doc("a")).cached


def test_a_call_to_a_function_defined_nowhere_is_refused_at_load(app):
    (app / "extra.rego").write_text("package extra\nimport rego.v1\n\nx := made.up(1)\n")
    with pytest.raises(PolicyCompileError, match=r"extra.rego:4:6: made.up is neither"):
        engine_for(app)


KNOWN = [
    # functions of the modules: same package, data path, import alias, another file
    "x := helper(1)",
    "x := data.lib.f(1)",
    "x := lib.f(1)",
    "x := l.f(1)",
    "x := data.extra.helper(2)",
    # pure builtins, keywords before a parenthesis, strings and comments
    'x := concat(",", [lower("A"), json.marshal({}), sprintf("%d", [count([1])])])',
    "x if not (1 > 2)",
    'x := "time.now_ns() print(1)" # http.send(x)',
    'x if print("dropped at load")',
    'x := object.get(input, "k", 1)',
]


@pytest.mark.parametrize("rule", KNOWN)
def test_pure_calls_and_module_functions_leave_the_cache_on(rule):
    extra = (
        "package extra\nimport rego.v1\nimport data.lib\nimport data.lib as l\n\n"
        f"helper(x) := x + 1\n\ndefault helper2(_) := 0\n\n{rule}\n"
    )
    lib = "package lib\nimport rego.v1\n\nf(x) := y if {\n\ty := x * 2\n}\n"
    assert nondeterminism([extra, lib]) == []


def test_unpruned_input_keeps_the_cache_off(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY.format(rule="allow if count(input) > 1"))
    with capture_logs() as logs:
        engine = engine_for(tmp_path)
    assert engine.input_needs is None and engine.decision_cache is None
    [event] = [e for e in logs if e["event"] == "policy_decision_cache_disabled"]
    assert event["reason"].startswith("input not pruned")
    assert not engine.evaluate_json("app/allow", '{"a":1,"b":2}').cached
    assert not engine.evaluate_json("app/allow", '{"a":1,"b":2}').cached


def test_shipped_policies_are_cacheable_and_the_docs_policy_is_not():
    assert engine_for(REPO_POLICIES).decision_cache is not None
    assert engine_for(DOCS_DIR).decision_cache is None  # time.now_ns checks the token times


# -- configuration and the Check -------------------------------------------------------------


def settings_for(directory: Path, **policy: Any) -> AuthzSettings:
    return AuthzSettings.model_validate(
        {"policy": {"directory": str(directory), "default_path": "app/allow", **policy}}
    )


async def checks(settings: AuthzSettings, count: int = 2) -> list[dict[str, Any]]:
    service = AuthzService(settings, build_engine(settings.policy))
    await service.start()
    try:
        with capture_logs() as logs:
            for _ in range(count):
                assert status_of(await service.check(check_request("/a/x"))) == 200
    finally:
        await service.close()
    return [entry for entry in logs if entry["event"] == "check"]


async def test_the_decision_log_says_whether_a_decision_was_cached(app):
    first, second = await checks(settings_for(app))
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["eval_ms"] >= 0 and second["policy_result"] == "allow"


@pytest.mark.parametrize("policy", [{"decision_cache": {"enabled": False}}, {"prune_input": False}])
async def test_config_turns_the_cache_off(app, policy):
    bypass = cache_count("bypass")
    lines = await checks(settings_for(app, **policy))
    assert [line["cached"] for line in lines] == [False, False]
    assert cache_count("bypass") - bypass == 2


async def test_config_sizes_the_cache(app):
    settings = settings_for(app, decision_cache={"max_entries": 2, "ttl_s": 0.5})
    engine = build_engine(settings.policy)
    assert isinstance(engine, EmbeddedEngine)
    engine.load()
    assert (engine.decision_cache.max_entries, engine.decision_cache.ttl_s) == (2, 0.5)


@pytest.mark.parametrize(
    "bad",
    [{"max_entries": 0}, {"ttl_s": 0}, {"ttl_s": 3601}, {"max_entries": 10**8}, {"size": 1}],
)
def test_bad_cache_settings_are_refused(app, bad):
    with pytest.raises(ValidationError):
        settings_for(app, decision_cache=bad)


def test_defaults():
    cache = AuthzSettings().policy.decision_cache
    assert (cache.enabled, cache.max_entries, cache.ttl_s) == (True, 10_000, 5.0)


# -- the key ---------------------------------------------------------------------------------


def test_the_key_is_a_digest_never_the_input(app):
    engine = engine_for(app)
    secret = "Bearer s3cr3t-t0ken-value"
    body = json.dumps({"parsed_path": ["a", secret]})
    engine.evaluate_json("app/allow", body)
    [key] = engine.decision_cache.keys()
    generation, entrypoint, digest = key
    assert isinstance(generation, int) and entrypoint == "app/allow"
    assert isinstance(digest, bytes) and len(digest) == 16
    assert secret.encode() not in digest and "s3cr3t" not in repr(key)
    assert key == cache_key(generation, "app/allow", body)


def test_cache_rejects_a_zero_ttl():
    with pytest.raises(ValueError):
        DecisionCache(10, 0)


# -- pruned-vs-full equivalence with the cache on --------------------------------------------


@pytest.mark.parametrize("directory", POLICY_DIRS, ids=[d.name for d in POLICY_DIRS])
def test_cached_pruned_decisions_equal_uncached_full_ones(directory):
    # A frozen clock: the second round must find the first round's decisions however long the
    # first took on a loaded machine (the TTL is 5 s of real time otherwise).
    cached = engine_for(directory, clock=Clock())
    plain = engine_for(directory, cache_decisions=False)
    needs = cached.input_needs
    cacheable = cached.decision_cache is not None
    assert cacheable == (directory != DOCS_DIR)
    hits = cache_count("hit")
    compared = errors = 0
    for round_ in range(2):
        for request in requests():
            view = RequestView.from_check_request(request)
            for identity in IDENTITIES:
                pruned = pruned_input(view, identity, needs)
                full = full_input(view, identity)
                for path in sorted(cached.entrypoints):
                    expected = outcome(plain, path, full)
                    assert outcome(cached, path, pruned) == expected, (round_, path, view.raw_path)
                    compared += 1
                    errors += round_ == 1 and isinstance(expected, tuple)
    assert compared >= 2 * 20 * len(cached.entrypoints)
    if cacheable:
        # the second round is served from the cache (errors are never stored)
        assert cache_count("hit") - hits >= compared // 2 - errors
    else:
        assert cache_count("hit") == hits


def test_the_equivalence_tests_of_input_pruning_run_with_the_cache_on():
    """test_input_pruning builds its engines as EmbeddedEngine(directory): cache on."""
    for directory in POLICY_DIRS:
        engine = engine_for(directory)
        assert (engine.decision_cache is not None) == (directory != DOCS_DIR)
