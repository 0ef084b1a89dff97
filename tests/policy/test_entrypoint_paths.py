"""Per-entrypoint input pruning: an entrypoint is handed only what the packages it reaches read.

So the shipped RBAC decision, which reads the caller's roles and scopes, is cached per role:
two tokens that differ only in subject, claims or tier share one decision.
"""

from __future__ import annotations

from pathlib import Path

from sidegate.extauthz.policy.embedded import EmbeddedEngine, compile_policies
from sidegate.extauthz.policy.input_paths import entrypoint_paths

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"

A = """package a
import rego.v1
allow if input.x == 1
via_b if data.b.allow
"""
B = """package b
import rego.v1
allow if input.y.z == 2
"""
C = """package c
import rego.v1
allow if input.w
"""


def test_each_entrypoint_gets_the_reads_of_the_packages_it_reaches() -> None:
    modules = [("a", A), ("b", B), ("c", C)]
    trees = entrypoint_paths(modules, ["a/allow", "a/via_b", "b/allow", "c/allow"])
    # a/allow is in package a, which references data.b: both packages' reads count
    assert trees["a/allow"] == {"x": None, "y": {"z": None}}
    assert trees["a/via_b"] == {"x": None, "y": {"z": None}}
    assert trees["b/allow"] == {"y": {"z": None}}
    assert trees["c/allow"] == {"w": None}


def test_a_parent_package_reference_reaches_every_package_below_it() -> None:
    parent = 'package top\nimport rego.v1\nall := data.top\nown if input.p\n'
    child = "package top.sub\nimport rego.v1\nallow if input.q\n"
    trees = entrypoint_paths([("top", parent), ("top.sub", child)], ["top/own", "top/sub/allow"])
    assert trees["top/own"] == {"p": None, "q": None}
    # data.top.sub.allow could also be the key "allow" of a rule "sub" in package top
    assert trees["top/sub/allow"] == {"p": None, "q": None}


def test_a_dynamic_data_reference_leaves_the_bundle_tree_in_charge() -> None:
    dynamic = 'package d\nimport rego.v1\nallow if data[input.pkg].allow\n'
    assert entrypoint_paths([("d", dynamic), ("c", C)], ["d/allow", "c/allow"]) == {}


def test_shipped_rbac_reads_roles_scopes_and_authentication_only() -> None:
    compiled = compile_policies(REPO_POLICIES)
    identity = compiled.entry_paths["rbac/decision"]["identity"]
    assert identity == {"roles": None, "scopes": None, "authenticated": None}
    assert compiled.entry_paths["tiers/decision"]["identity"] == {"tier": None}
    assert "subject" in compiled.entry_paths["owner/allow"]["identity"]


async def test_rbac_decisions_are_cached_per_role_not_per_token() -> None:
    engine = EmbeddedEngine(REPO_POLICIES)
    engine.load()
    cache = engine.decision_cache
    assert cache is not None

    def document(subject: str, roles: list[str]) -> dict:
        return {
            "attributes": {"request": {"http": {"method": "GET"}}},
            "parsed_path": ["orders", "7"],
            "identity": {"subject": subject, "tier": "free", "roles": roles, "scopes": [],
                         "authenticated": True, "claims": {"sub": subject}},
        }

    first = await engine.evaluate("rbac/decision", document("u-1", ["viewer"]))
    second = await engine.evaluate("rbac/decision", document("u-2", ["viewer"]))
    other_role = await engine.evaluate("rbac/decision", document("u-3", ["nobody"]))
    assert first.value == second.value == {"allowed": True}
    assert (first.cached, second.cached, other_role.cached) == (False, True, False)
    assert other_role.value["allowed"] is False
    # owner/allow reads the subject: there, different subjects are different inputs
    await engine.evaluate("owner/allow", document("u-1", ["viewer"]))
    assert not (await engine.evaluate("owner/allow", document("u-2", ["viewer"]))).cached
