"""Input pruning: the static analysis of input paths, the partial input build, and decisions
that stay identical with the pruned input for every shipped and test policy."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from structlog.testing import capture_logs

from sidegate.extauthz.identity.base import ANONYMOUS_IDENTITY, Identity
from sidegate.extauthz.input_document import build_input
from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError
from sidegate.extauthz.policy.input_paths import prune, referenced_paths, tokenize
from sidegate.extauthz.policy.remote_opa import RemoteOpaEngine
from sidegate.extauthz.request_view import RequestView
from sidegate.extauthz.service import AuthzService
from sidegate.extauthz.settings import AuthzSettings, BodySettings
from tests.policy.conftest import CASES_DIR, REPO_POLICIES
from tests.policy.helpers import check_request, status_of
from tests.policy.test_opa_docs_policy import CASES as DOCS_CASES
from tests.policy.test_opa_docs_policy import DOCS_DIR
from tests.policy.test_opa_docs_policy import request as docs_request

POLICY_DIRS = [REPO_POLICIES, CASES_DIR, DOCS_DIR, Path(__file__).parent / "rego_e2e"]


def paths_of(body: str) -> Any:
    tree, _ = referenced_paths([f"package p\nimport rego.v1\n{body}\n"])
    return tree


# -- the analysis --------------------------------------------------------------------------

STATIC = [
    ("x := input.a.b", {"a": {"b": None}}),
    ('x := input["a"].b', {"a": {"b": None}}),
    ('x := input.a["b-c"]', {"a": {"b-c": None}}),
    ("x := input.a[`raw`]", {"a": {"raw": None}}),
    ("x if input.a[_] == 1", {"a": None}),
    ("x if input.a[y] == 1", {"a": None}),
    ("x if input.a[0] == 1", {"a": None}),
    ("x if input.a[_].b == 1", {"a": None}),
    ('x if input.a.b[lower("K")] == 1', {"a": {"b": None}}),
    ("x := input.a\ny := input.a.b", {"a": None}),
    ("y := input.a.b\nx := input.a", {"a": None}),
    ("x := input.a.b\ny := input.a.c", {"a": {"b": None, "c": None}}),
    ("x := count(input.parsed_path)", {"parsed_path": None}),
    ('x := object.get(input, "identity", {})', {"identity": None}),
    ('x := object.get(input, ["identity", "tier"], "")', {"identity": {"tier": None}}),
    ('x := object.get(object.get(input, "identity", {}), "roles", [])', {"identity": None}),
    ("x := input.a.input", {"a": {"input": None}}),
    ("x := data.input.b", {}),
    ("x := my_input.b\ny := input_x.c", {}),
    ("x := 1.5\ny := input.a", {"a": None}),
    ("x := true", {}),
    ('x if {\n\tobject.get(input, "a", false) == true\n}', {"a": None}),
]


@pytest.mark.parametrize(("body", "expected"), STATIC, ids=[s[0] for s in STATIC])
def test_static_references(body, expected):
    assert paths_of(body) == expected


IMPORTS = [
    (
        "import input.attributes.request.http as http_request",
        {"attributes": {"request": {"http": None}}},
    ),
    ("import input.identity", {"identity": None}),
    ('import input["identity"] as who', {"identity": None}),
]


@pytest.mark.parametrize(("line", "expected"), IMPORTS, ids=[i[0] for i in IMPORTS])
def test_imports_keep_their_subtree(line, expected):
    tree, why = referenced_paths([f"package p\n{line}\nx := 1\n"])
    assert (tree, why) == (expected, "")


DYNAMIC = [
    "x := input",
    "x := f(input)",
    "x := input[k]",
    "x if input[_] == 1",
    'x := object.get(input, k, "")',
    'x := object.get(input, [], "")',
    "x := json.marshal(input)",
    "x := walk(input)",
    "x if { some k, v in input }",
    "x if allow with input.a as 1",
    "x if allow with input as {}",
    "x := {k | input[k]}",
    "input := 1",
    'x := $"{input.a}"',
    "x := input .a",
    "x := input.a [0]",
]


@pytest.mark.parametrize("body", DYNAMIC)
def test_unbounded_uses_mean_everything(body):
    tree, why = referenced_paths([f"package p\nimport rego.v1\n{body}\n"])
    assert tree is None
    assert why.startswith("module 1: line 3: ")


def test_import_input_itself_means_everything():
    assert referenced_paths(["package p\nimport input\nx := input.a\n"])[0] is None


SHADOWED_OBJECT = [
    "import data.lib as object",
    "object := {}",
    "object.get(a, b, c) := 1",
    'y if object.get(input, "a", 1) = 1',  # `=` may start a function body
    "f(object) := 1",
]


@pytest.mark.parametrize("line", SHADOWED_OBJECT)
def test_object_get_is_trusted_only_when_nothing_can_shadow_it(line):
    module = f'package p\n{line}\nx := object.get(input, "a", 1)\n'
    assert referenced_paths([module])[0] is None
    trusted = 'package p\nx := object.get(input, "a", 1)\ny := object.keys(input.b)\n'
    assert referenced_paths([trusted])[0] == {"a": None, "b": None}


def test_one_unbounded_module_unprunes_all():
    tree, why = referenced_paths(["package a\nx := input.a\n", "package b\ny := input\n"])
    assert tree is None and why.startswith("module 2: line 2: ")


def test_paths_from_several_packages_merge():
    tree, _ = referenced_paths(["package a\nx := input.a.b\n", "package b.c\ny := input.d\n"])
    assert tree == {"a": {"b": None}, "d": None}


COMMENTS_AND_STRINGS = [
    ("# input is everything: x := input\nx := input.a", {"a": None}),
    ('x := "input"\ny := input.a', {"a": None}),
    ('x := "say \\"input\\" # not a comment"\ny := input.a', {"a": None}),
    ('x := "back\\\\"\ny := input.a', {"a": None}),
    ("x := `input # raw\n input`\ny := input.a", {"a": None}),
    ('x := "# input"', {}),
    ("x := input.a # input", {"a": None}),
    ('x := {"input": 1}', {}),
    ('x := "\\u0069nput"', {}),
]


@pytest.mark.parametrize(
    ("body", "expected"), COMMENTS_AND_STRINGS, ids=[c[0] for c in COMMENTS_AND_STRINGS]
)
def test_comments_and_strings_are_not_references(body, expected):
    assert paths_of(body) == expected


@pytest.mark.parametrize("body", ['x := "open', "x := `open", 'x := "a\nb"', 'x := "\\q"'])
def test_unreadable_literals_mean_everything(body):
    assert paths_of(body) is None


def test_tokenizer_keeps_numbers_whole_and_decodes_strings():
    tokens = tokenize('x := 1.5e3 + a.b["c\\n"] # input\n')
    assert [(t.kind, t.text) for t in tokens] == [
        ("ident", "x"),
        ("punct", ":"),
        ("punct", "="),
        ("number", "1.5e3"),
        ("punct", "+"),
        ("ident", "a"),
        ("punct", "."),
        ("ident", "b"),
        ("punct", "["),
        ("string", "c\n"),
        ("punct", "]"),
    ]


def test_shipped_and_test_policies_are_bounded():
    expected = {
        REPO_POLICIES: {
            # the shipped policies read single identity fields, never its claims
            "identity": {"roles": None, "subject": None, "scopes": None, "authenticated": None,
                         "tier": None},
            "parsed_path": None,
            "attributes": {"request": {"http": {"method": None}}},
        },
        DOCS_DIR: {"attributes": {"request": {"http": None}}, "parsed_body": {"firstname": None}},
    }
    for directory in POLICY_DIRS:
        engine = EmbeddedEngine(directory)
        engine.load()
        assert engine.input_needs is not None, directory
        if directory in expected:
            assert engine.input_needs == expected[directory]


def test_prune_keeps_named_subtrees_in_document_order():
    document = {"b": {"x": 1, "y": [1, 2]}, "a": 2, "c": [{"k": 1}], "d": "s"}
    tree = {"c": {"k": None}, "b": {"y": None, "z": None}, "d": {"e": None}, "missing": None}
    assert prune(document, tree) == {"b": {"y": [1, 2]}, "c": [{"k": 1}], "d": "s"}
    assert list(prune(document, tree)) == ["b", "c", "d"]
    assert prune(document, None) is document


def _defined_prune(document: Any, tree: Any) -> Any:
    """prune's definition, one call per named key (as it was written before it was tuned)."""
    if tree is None or not isinstance(document, dict):
        return document
    return {k: _defined_prune(v, tree[k]) for k, v in document.items() if k in tree}


def _random_document(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth < 4 and pick < 0.5:
        return {rng.choice("abcde"): _random_document(rng, depth + 1) for _ in range(5)}
    if depth < 4 and pick < 0.6:
        return [_random_document(rng, depth + 1) for _ in range(2)]
    return rng.choice([None, 0, 1.5, "s", True, [], {}])


def _random_tree(rng: random.Random, depth: int = 0) -> Any:
    if depth >= 4 or rng.random() < 0.35:
        return None
    return {rng.choice("abcdef"): _random_tree(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_prune_matches_its_definition_on_random_documents():
    """Seeded: never a named field dropped, never an unnamed one kept, document order kept."""
    rng = random.Random(5150)
    for _ in range(3000):
        document, tree = _random_document(rng), _random_tree(rng)
        assert json.dumps(prune(document, tree)) == json.dumps(_defined_prune(document, tree))


# -- requests ------------------------------------------------------------------------------

SECRET = "a-shared-secret-of-at-least-32-bytes"


def bearer(role: str, name: str) -> str:
    now = int(time.time())
    sub = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return jwt.encode({"role": role, "sub": sub, "nbf": now - 60, "exp": now + 3600}, SECRET)


def multipart() -> tuple[str, dict[str, str]]:
    body = (
        '--XyZ\r\nContent-Disposition: form-data; name="meta"\r\n'
        'Content-Type: application/json\r\n\r\n{"a": 1}\r\n'
        '--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--XyZ--\r\n'
    )
    return body, {"content-type": "multipart/form-data; boundary=XyZ"}


def requests() -> list[Any]:
    many = {f"x-header-{i}": "v" * 40 for i in range(20)}
    form = {"content-type": "application/x-www-form-urlencoded"}
    json_type = {"content-type": "application/json"}
    mp_body, mp_headers = multipart()
    table = [
        check_request("/"),
        check_request("/orders/42?expand=items&expand=x", headers=many),
        check_request("/orders", method="POST", headers=json_type, body='{"id": 7}'),
        check_request("/orders/42", method="DELETE"),
        check_request("/admin/users", headers={"x-probe": "seen"}),
        check_request("/deny/this"),
        check_request("/health"),
        check_request("/docs/a/b"),
        check_request("/users/u-42", method="PUT", headers=json_type, body='{"name": "n"}'),
        check_request("/users/someone-else", method="PATCH"),
        check_request("/reports/export/q1"),
        check_request("/premium/x", size=1234),
        check_request("/form", method="POST", headers=form, body="a=1&a=2&b="),
        check_request("/upload", method="POST", headers=mp_headers, body=mp_body),
        check_request("/raw", method="POST", headers=json_type, raw_body=b'{"r": [1, 2]}'),
        check_request(
            "/partial", method="POST", headers={**json_type, "x-envoy-auth-partial-body": "true"}
        ),
        check_request("/mapped/x", header_map=True, headers={"X-Probe": "m", "x-a": "1"}),
        check_request("/spiffe", principal="spiffe://example/ns/a/sa/b"),
        check_request("/people", headers={"authorization": f"Bearer {bearer('guest', 'ann')}"}),
        check_request(
            "/people",
            method="POST",
            headers={"authorization": f"Bearer {bearer('admin', 'bob')}", **json_type},
            body=json.dumps({"firstname": "Bob"}),
        ),
        check_request(
            "/people",
            method="POST",
            headers={"authorization": f"Bearer {bearer('admin', 'bob')}", **json_type},
            body=json.dumps({"firstname": "Carol"}),
        ),
        check_request("/open/x", policy="e2e/allow"),
    ]
    table[1].attributes.metadata_context.filter_metadata["envoy.lb"].update({"canary": True})
    table[3].attributes.destination.address.socket_address.port_value = 8080
    table[4].attributes.context_extensions["team"] = "ops"
    return table


IDENTITIES = [
    ANONYMOUS_IDENTITY,
    Identity(method="jwt", subject="u-42", consumer="u-42", roles=("viewer",)),
    Identity(method="jwt", subject="u-7", consumer="c", roles=("admin",), tier="enterprise"),
    Identity(
        method="api_key",
        subject="k-1",
        consumer="acme",
        tier="premium",
        scopes=("orders:read", "orders:write"),
        claims={"org": "acme"},
    ),
]


def full_input(view: RequestView, identity: Identity) -> dict[str, Any]:
    document = build_input(view, BodySettings())
    document["identity"] = identity.as_input()
    return document


def pruned_input(view: RequestView, identity: Identity, needs: Any) -> dict[str, Any]:
    document = build_input(view, BodySettings(), needs)
    document["identity"] = identity.as_input()
    return prune(document, needs)


def outcome(engine: EmbeddedEngine, path: str, document: dict[str, Any]) -> Any:
    try:
        value = engine.evaluate_json(path, json.dumps(document)).value
    except PolicyError as exc:
        return ("error", exc.reason)
    return "undefined" if value is UNDEFINED else value


# -- the partial build equals the pruned full build ----------------------------------------

TREES = [
    {},
    {"parsed_path": None},
    {"attributes": None},
    {"attributes": {"request": {"http": None}}},
    {"attributes": {"request": {"http": {"method": None, "size": None, "host": None}}}},
    {"attributes": {"request": {"http": {"headers": {"x-probe": None, "x-a": None}}}}},
    {"attributes": {"request": {"http": {"headers": None, "rawBody": None, "id": None}}}},
    {"attributes": {"request": {"time": None, "http": {"headerMap": None}}}},
    {"attributes": {"request": {"time": {"seconds": None}}}},
    {"attributes": {"source": {"address": {"socketAddress": {"portValue": None}}}}},
    {"attributes": {"source": {"principal": None}, "destination": None}},
    {"attributes": {"contextExtensions": {"team": None}, "metadataContext": None}},
    {"attributes": {"metadataContext": {"filterMetadata": {"envoy.lb": {"canary": None}}}}},
    {"attributes": {"missing": None, "request": {"nothing": {"x": None}}}},
    {"parsed_body": {"firstname": None}, "truncated_body": None, "version": None},
    {"parsed_query": {"expand": None}, "source_principal": None, "identity": {"roles": None}},
]


@pytest.mark.parametrize("tree", TREES, ids=[json.dumps(t) for t in TREES])
def test_partial_build_equals_pruned_full_build(tree):
    for request in requests():
        view = RequestView.from_check_request(request)
        full = build_input(view, BodySettings())
        partial = build_input(view, BodySettings(), tree)
        assert partial == prune(full, tree)
        # in the same order too: the engine's input text (and decision cache key) is the JSON
        assert json.dumps(partial) == json.dumps(prune(full, tree))


def test_bad_input_is_refused_whatever_the_policies_read():
    """The documented 400s for the path and query do not depend on what the policies
    reference; a body is parsed (and refused) only when a policy reads it."""
    for request in (check_request("/a/../b"), check_request("/%zz")):
        view = RequestView.from_check_request(request)
        with pytest.raises(ValueError):
            build_input(view, BodySettings(), {})
    json_type = {"content-type": "application/json"}
    bad_body = check_request("/x", method="POST", headers=json_type, body="{not json")
    view = RequestView.from_check_request(bad_body)
    assert "parsed_body" not in build_input(view, BodySettings(), {"parsed_path": None})
    with pytest.raises(ValueError):
        build_input(view, BodySettings(), {"parsed_body": None})
    with pytest.raises(ValueError):
        build_input(view, BodySettings(), {"truncated_body": None})


# -- identical decisions -------------------------------------------------------------------


@pytest.mark.parametrize("directory", POLICY_DIRS, ids=[d.name for d in POLICY_DIRS])
def test_pruned_and_full_inputs_decide_alike(directory):
    engine = EmbeddedEngine(directory)
    engine.load()
    needs = engine.input_needs
    assert needs is not None
    checked = 0
    for request in requests():
        view = RequestView.from_check_request(request)
        for identity in IDENTITIES:
            full = full_input(view, identity)
            pruned = pruned_input(view, identity, needs)
            assert len(json.dumps(pruned)) < len(json.dumps(full))
            for path in sorted(engine.entrypoints):
                expected = outcome(engine, path, full)
                assert outcome(engine, path, pruned) == expected, (path, view.raw_path)
                checked += 1
    assert checked >= len(engine.entrypoints) * 20


async def service_for(directory: Path, prune_input: bool, **policy: Any) -> AuthzService:
    settings = AuthzSettings.model_validate(
        {"policy": {"directory": str(directory), "prune_input": prune_input, **policy}}
    )
    engine = EmbeddedEngine(settings.policy.directory)
    service = AuthzService(settings, engine)
    await service.start()
    return service


CHECKS = [
    (REPO_POLICIES, "envoy/authz/allow"),
    (REPO_POLICIES, "rbac/decision"),
    (REPO_POLICIES, "owner/allow"),
    (REPO_POLICIES, "tiers/decision"),
    (REPO_POLICIES, "responses/decision"),
    (CASES_DIR, "cases/echo"),
    (DOCS_DIR, "envoy/authz/allow"),
]


@pytest.mark.parametrize(("directory", "path"), CHECKS, ids=[c[1] for c in CHECKS])
async def test_check_responses_are_identical_with_and_without_pruning(directory, path):
    pruned = await service_for(directory, True, default_path=path)
    full = await service_for(directory, False, default_path=path)
    try:
        for request in requests():
            request.attributes.context_extensions.pop("policy", None)
            a, b = await pruned.check(request), await full.check(request)
            for response in (a, b):  # a fresh id per Check
                response.dynamic_metadata.fields.pop("decision_id")
            assert a == b, request.attributes.request.http.path
    finally:
        await pruned.close()
        await full.close()


@pytest.mark.parametrize(
    ("method", "path", "token", "body", "expected"),
    [case[1:] for case in DOCS_CASES],
    ids=[case[0] for case in DOCS_CASES],
)
async def test_opa_docs_policy_keeps_its_documented_answers(method, path, token, body, expected):
    service = await service_for(DOCS_DIR, True, default_path="envoy/authz/allow")
    try:
        assert service.engine.input_needs == {
            "attributes": {"request": {"http": None}},
            "parsed_body": {"firstname": None},
        }
        response = await service.check(docs_request(method, path, token, body))
        assert status_of(response) == expected
    finally:
        await service.close()


# -- wiring --------------------------------------------------------------------------------


class Recording:
    """An engine wrapper that records the documents it is asked to evaluate."""

    def __init__(self, engine: EmbeddedEngine, before_evaluate: Any = None) -> None:
        self.engine = engine
        self.seen: list[dict[str, Any]] = []
        self.before_evaluate = before_evaluate

    ready = property(lambda self: self.engine.ready)
    input_needs = property(lambda self: self.engine.input_needs)

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        self.seen.append(input_doc)
        if self.before_evaluate is not None:
            hook, self.before_evaluate = self.before_evaluate, None
            hook()
        return await self.engine.evaluate(path, input_doc)


async def recording_service(directory: Path, **policy: Any) -> tuple[AuthzService, Recording]:
    settings = AuthzSettings.model_validate({"policy": {"directory": str(directory), **policy}})
    engine = Recording(EmbeddedEngine(settings.policy.directory))
    service = AuthzService(settings, engine)
    await service.start()
    return service, engine


async def test_engine_gets_only_what_policies_read_and_prune_input_false_turns_it_off():
    service, engine = await recording_service(REPO_POLICIES, default_path="rbac/decision")
    request = requests()[1]
    await service.check(request)
    assert engine.seen[-1] == {
        "attributes": {"request": {"http": {"method": "GET"}}},
        "parsed_path": ["orders", "42"],
        "identity": {k: v for k, v in ANONYMOUS_IDENTITY.as_input().items()
                     if k in ("roles", "subject", "scopes", "authenticated", "tier")},
    }
    await service.close()
    service, engine = await recording_service(
        REPO_POLICIES, default_path="rbac/decision", prune_input=False
    )
    await service.check(request)
    assert len(engine.seen[-1]["attributes"]["request"]["http"]["headers"]) > 20
    assert engine.seen[-1]["version"] == {"ext_authz": "v3", "encoding": "protojson"}
    await service.close()


async def test_body_is_parsed_only_when_a_policy_reads_it(tmp_path):
    """Issue 9: a body no loaded policy reads is never parsed (costs nothing, refused never),
    whether the input is pruned, unpruned or logged whole; one that a policy reads is."""
    request = check_request(
        "/x", method="POST", headers={"content-type": "application/json"}, body="{nope"
    )
    logged = {"decision_log": {"include_input": True}}
    for prune_input, extra in ((True, {}), (False, {}), (True, logged)):
        service = await service_for(
            REPO_POLICIES, prune_input, default_path="envoy/authz/allow", **extra
        )
        assert "parsed_body" not in service.engine.input_needs
        assert status_of(await service.check(request)) == 200
        await service.close()
    (tmp_path / "body.rego").write_text(
        POLICY.format(rule='allow if input.parsed_body.ok == true')
    )
    service = await service_for(tmp_path, True, default_path="app/allow")
    assert status_of(await service.check(request)) == 400
    await service.close()


async def test_decision_log_input_stays_whole():
    service, engine = await recording_service(
        REPO_POLICIES, default_path="envoy/authz/allow", decision_log={"include_input": True}
    )
    with capture_logs() as logs:
        await service.check(check_request("/a", headers={"x-probe": "seen"}))
    await service.close()
    assert engine.seen[-1]["attributes"] == {"request": {"http": {"method": "GET"}}}
    [logged] = [entry["input"] for entry in logs if entry["event"] == "check"]
    assert logged["attributes"]["request"]["http"]["headers"]["x-probe"] == "seen"
    assert logged["version"]["ext_authz"] == "v3"


def test_remote_engine_is_never_pruned():
    assert RemoteOpaEngine("http://127.0.0.1:1").input_needs is None


POLICY = "package app\nimport rego.v1\n\ndefault allow := false\n\n{rule}\n"


def test_input_needs_follow_reloads(tmp_path):
    (tmp_path / "app.rego").write_text(POLICY.format(rule='allow if input.parsed_path[0] == "a"'))
    (tmp_path / "app_test.rego").write_text("package app\ntest_x if allow with input as {}\n")
    engine = EmbeddedEngine(tmp_path)
    engine.load()
    assert engine.input_needs == {"parsed_path": None}  # test modules are not loaded
    (tmp_path / "app.rego").write_text(POLICY.format(rule="allow if input.identity.roles"))
    assert engine.reload()
    assert engine.input_needs == {"identity": {"roles": None}}
    (tmp_path / "app.rego").write_text(POLICY.format(rule="allow if count(input) > 1"))
    assert engine.reload()
    assert engine.input_needs is None


async def test_reload_between_input_and_evaluation_decides_on_the_whole_input(tmp_path):
    policy = tmp_path / "app.rego"
    policy.write_text(POLICY.format(rule='allow if input.parsed_path[0] == "a"'))
    settings = AuthzSettings.model_validate(
        {"policy": {"directory": str(tmp_path), "default_path": "app/allow"}}
    )

    def swap_policy() -> None:
        # The new rule reads a header the input built for the old one left out.
        policy.write_text(POLICY.format(rule="allow if input.attributes.request.http.host"))
        assert engine.engine.reload()

    engine = Recording(EmbeddedEngine(tmp_path), before_evaluate=swap_policy)
    service = AuthzService(settings, engine)
    await service.start()
    response = await service.check(check_request("/b"))
    await service.close()
    assert status_of(response) == 200
    assert set(engine.seen[0]) == {"parsed_path"}
    assert "attributes" in engine.seen[-1] and "version" in engine.seen[-1]
