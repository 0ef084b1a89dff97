"""Rule files: envoyproxy/ratelimit's format loads; bad files fail with its error strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.ratelimit.config import RuleConfigError, RuleSet, load_rules, validate
from sidegate.ratelimit.config.units import UNIT_ENUM
from sidegate.ratelimit.settings import RateLimitSettings
from tests.conftest import REPO_ROOT
from tests.ratelimit.conftest import write_rules

UPSTREAM_EXAMPLE = """
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
      name: users_db
  - key: database
    value: default
    shadow_mode: true
    detailed_metric: true
    quota_mode: false
    metadata: {team: storage, Some-Key: [1, 2]}
    rate_limit:
      unit: Week
      requests_per_unit: 0
  - key: remote_address
    value: "10.0.*.1"
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: foo
    value_to_metric: true
    rate_limit:
      unlimited: true
      replaces:
        - name: users_db
"""


def load_one(tmp_path: Path, text: str, name: str = "config.yaml") -> RuleSet:
    return load_rules(write_rules(tmp_path, {name: text}))


def error_of(tmp_path: Path, text: str) -> str:
    """The message without the line (upstream's text); lines are tested on their own."""
    with pytest.raises(RuleConfigError) as info:
        load_one(tmp_path, text)
    return f"{info.value.file}: {info.value.problem}"


def test_upstream_file_loads_unchanged(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, {"mongo.yaml": UPSTREAM_EXAMPLE}))
    domain = rules.domains["mongo_cps"]
    users = domain.root.nodes["database_users"].rule
    assert users is not None
    assert users.name == "users_db"
    assert users.limits[0].unit == UNIT_ENUM["second"]
    default = domain.root.nodes["database_default"]
    assert default.rule is not None and default.rule.shadow_mode
    assert default.rule.limits[0].window_ms == 604_800_000
    assert domain.root.wildcards[0].share_threshold
    assert domain.root.nodes["foo"].rule.unlimited  # type: ignore[union-attr]
    assert rules.rule_count == 4


def test_shipped_examples_validate() -> None:
    validate(RateLimitSettings(rules_dir=REPO_ROOT / "examples" / "ratelimit"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("descriptors: []\n", "config file cannot have empty domain"),
        ("domain: d\ndescriptors:\n  - value: v\n", "descriptor has empty key"),
        (
            "domain: d\ndescriptors:\n  - {key: k, value: v}\n  - {key: k, value: v}\n",
            "duplicate descriptor composite key 'd.k_v'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - {key: b}\n"
            "      - {key: b}\n",
            "duplicate descriptor composite key 'd.a.b'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, "
            "requests_per_unit: 1}\n",
            "invalid rate limit unit 'fortnight'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n"
            "    rate_limit: {unlimited: true, unit: second}\n",
            "should not specify rate limit unit when unlimited",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, "
            "requests_per_unit: 1, replaces: [{name: ''}]}\n",
            "should not have an empty replaces entry",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, "
            "requests_per_unit: 1, name: n, replaces: [{name: n}]}\n",
            "replaces should not contain name of same descriptor",
        ),
        ("domain: d\nfoo: bar\n", "config error, unknown key 'foo'"),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, ratelimit: 1}\n",
            "config error, unknown key 'ratelimit'",
        ),
        ("domain: d\n0.25: x\n", "config error, key is not of type string: 0.25"),
        ("domain: d\ndescriptors: [a]\n", (
            "config error, yaml file contains list of type other than map: a")),
        (
            "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
            "share_threshold can only be used with wildcard values: 'd.k_v'",
        ),
    ],
)
def test_error_strings(tmp_path: Path, text: str, problem: str) -> None:
    assert error_of(tmp_path, text) == f"{tmp_path / 'config.yaml'}: {problem}"


def test_yaml_syntax_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "domain: d\n  bad: : yaml\n")
    assert message.startswith(f"{tmp_path / 'config.yaml'}: error loading config file: yaml: line")


def test_duplicate_domain_across_files(tmp_path: Path) -> None:
    write_rules(tmp_path, {"a.yaml": "domain: d\n", "b.yaml": "domain: d\n"})
    with pytest.raises(RuleConfigError) as info:
        load_rules(tmp_path)
    assert str(info.value) == f"{tmp_path / 'b.yaml'}: duplicate domain 'd' in config file"


def test_merge_domain_config(tmp_path: Path) -> None:
    write_rules(tmp_path, {
        "a.yaml": "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, "
                  "requests_per_unit: 1}}]\n",
        "b.yaml": "domain: d\ndescriptors: [{key: b, rate_limit: {unit: second, "
                  "requests_per_unit: 1}}]\n",
    })
    rules = load_rules(tmp_path, merge=True)
    assert set(rules.domains["d"].root.nodes) == {"a", "b"}
    (tmp_path / "c.yaml").write_text("domain: d\ndescriptors: [{key: a}]\n")
    with pytest.raises(RuleConfigError, match=r"duplicate descriptor composite key 'd\.a'"):
        load_rules(tmp_path, merge=True)


def test_hidden_entries_and_other_files_are_ignored(tmp_path: Path) -> None:
    write_rules(tmp_path, {"a.yaml": "domain: d\n", "README.md": "not yaml: [",
                           ".hidden.yaml": "domain: d\n"})
    assert load_rules(tmp_path).files == (str(tmp_path / "a.yaml"),)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RuleConfigError, match="rules directory does not exist"):
        load_rules(tmp_path / "nope")


@pytest.mark.parametrize(
    ("rate_limit", "problem"),
    [
        ("{window: 7x, requests_per_unit: 1}", "invalid rate limit window '7x'"),
        ("{unit: second, window: 30s, requests_per_unit: 1}",
         "should not specify both unit and window"),
        ("{unit: second, requests_per_unit: 1, algorithm: leaky}",
         "invalid rate limit algorithm 'leaky'"),
        ("{window: 1500ms, requests_per_unit: 1, algorithm: fixed_window}",
         "fixed_window needs a window of whole seconds"),
        ("{limits: [{unit: second, requests_per_unit: 1}, {window: 1s, requests_per_unit: 5}]}",
         "duplicate limit window in 'd.k': one limit per algorithm and window"),
        ("{unit: second, requests_per_unit: -1}", "cannot unmarshal -1 into uint32"),
    ],
)
def test_extension_errors(tmp_path: Path, rate_limit: str, problem: str) -> None:
    text = f"domain: d\ndescriptors:\n  - key: k\n    rate_limit: {rate_limit}\n"
    assert problem in error_of(tmp_path, text)


def test_several_limits_and_windows(tmp_path: Path) -> None:
    load_one(tmp_path, """
        domain: d
        descriptors:
          - key: k
            rate_limit:
              limits:
                - {requests_per_unit: 10, unit: second, burst: 20}
                - {requests_per_unit: 10000, unit: day, algorithm: fixed_window}
                - {requests_per_unit: 100, window: 5m}
    """)


def test_tiers_errors(tmp_path: Path) -> None:
    assert "tiers: default must name one of the tiers (free)" in error_of(
        tmp_path, "domain: d\ntiers:\n  default: gold\n  quotas:\n    free: "
                  "{unit: minute, requests_per_unit: 1}\n")
    assert "duplicate descriptor composite key 'd.tier_free'" in error_of(
        tmp_path, "domain: d\ndescriptors: [{key: tier, value: free}]\ntiers:\n  default: free\n"
                  "  quotas:\n    free: {unit: minute, requests_per_unit: 1}\n")


def test_settings_resolve_paths_and_reject_bad_prefix(tmp_path: Path) -> None:
    from pydantic import ValidationError

    settings = RateLimitSettings.model_validate(
        {"rules_dir": "rules", "failure_mode_by_domain": {"d": "local"}},
        context={"base_dir": tmp_path},
    )
    assert settings.rules_dir == (tmp_path / "rules").resolve()
    assert settings.failure_mode_for("d") == "local"
    assert settings.failure_mode_for("other") == "error"
    with pytest.raises(ValidationError, match="hash tag"):
        RateLimitSettings.model_validate({"redis": {"key_prefix": "{x}:"}})
    with pytest.raises(ValidationError):
        RateLimitSettings.model_validate({"unknown": 1})


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        # Extension keys where they mean nothing: upstream's unknown-key error, with the line.
        ("domain: d\nburst: 3\n", "burst", 2),
        ("domain: d\ndescriptors:\n  - key: k\n    window: 5m\n", "window", 4),
        ("domain: d\ndescriptors:\n  - key: k\n    algorithm: fixed_window\n", "algorithm", 4),
        ("domain: d\ndescriptors:\n  - key: k\n    limits: []\n", "limits", 4),
        ("domain: d\ndefault: free\n", "default", 2),
        ("domain: d\nquotas: {free: {unit: second, requests_per_unit: 1}}\n", "quotas", 2),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
            "      requests_per_unit: 1\n      tiers: {}\n",
            "tiers", 7,
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      limits:\n"
            "        - {unit: second, requests_per_unit: 1, limits: []}\n",
            "limits", 6,
        ),
        (
            "domain: d\ntiers:\n  default: a\n  burst: 2\n  quotas: {a: {unit: second, "
            "requests_per_unit: 1}}\n",
            "burst", 4,
        ),
        (
            "domain: d\ntiers:\n  default: a\n  quotas:\n    a: {unit: second, "
            "requests_per_unit: 1, default: a}\n",
            "default", 5,
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, "
            "requests_per_unit: 1, replaces: [{name: x, burst: 1}]}\n",
            "burst", 4,
        ),
        ("domain: d\n\n\ndescriptors:\n  - key: k\n    bogus: 1\n", "bogus", 6),
    ],
)
def test_extension_keys_only_where_they_mean_something(
    tmp_path: Path, text: str, key: str, line: int
) -> None:
    with pytest.raises(RuleConfigError) as info:
        load_one(tmp_path, text)
    assert info.value.problem == f"config error, unknown key '{key}'"
    assert info.value.line == line
    assert str(info.value) == (
        f"{tmp_path / 'config.yaml'}: line {line}: config error, unknown key '{key}'"
    )


def test_extension_keys_where_they_belong_load(tmp_path: Path) -> None:
    rules = load_one(tmp_path, """
        domain: d
        tiers:
          tier_key: tier
          consumer_key: consumer
          default: a
          quotas:
            a: {requests_per_unit: 1, window: 5m, burst: 2, algorithm: token_bucket}
            b: {limits: [{requests_per_unit: 1, unit: second, burst: 2}]}
        descriptors:
          - key: k
            rate_limit:
              limits:
                - {requests_per_unit: 1, window: 30s, algorithm: fixed_window}
          - key: api
            tiers:
              default: a
              quotas: {a: {requests_per_unit: 1, unit: minute}}
        """)
    assert rules.rule_count > 0


def test_upstream_keys_stay_accepted_at_any_depth(tmp_path: Path) -> None:
    """Upstream's whitelist is flat; sidegate stays as lenient for upstream's own keys."""
    rules = load_one(
        tmp_path,
        "domain: d\ndescriptors:\n  - key: k\n    unit: second\n"
        "    rate_limit: {unit: second, requests_per_unit: 1}\n",
    )
    assert rules.rule_count == 1


@pytest.mark.parametrize("depth", [200, 5000])
def test_deeply_nested_descriptors_are_an_error_not_a_traceback(tmp_path: Path, depth: int) -> None:
    nested = "{key: leaf}"
    for _ in range(depth):
        nested = "{key: k, descriptors: [" + nested + "]}"
    try:
        load_one(tmp_path, f"domain: d\ndescriptors: [{nested}]\n")
    except RuleConfigError as exc:
        assert exc.file == str(tmp_path / "config.yaml")
        assert "nested deeper than" in exc.problem or "nested too deeply" in exc.problem
    else:
        assert depth < 1000  # shallow enough to load
