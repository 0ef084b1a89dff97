"""Loading a directory of domain files into one RuleSet; every problem names its file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidegate.common.yaml_loader import YamlError, load_yaml_file
from sidegate.ratelimit.config.errors import RuleConfigError
from sidegate.ratelimit.config.keys import check_keys
from sidegate.ratelimit.config.limits import parse_rule
from sidegate.ratelimit.config.model import (
    Algorithm,
    DefaultAlgorithm,
    DescriptorNode,
    Domain,
    Level,
    RuleSet,
)
from sidegate.ratelimit.config.tiers import compile_tiers
from sidegate.ratelimit.wildcard import WildcardPattern

if TYPE_CHECKING:
    from sidegate.ratelimit.settings import RateLimitSettings

RULE_SUFFIXES = (".yaml", ".yml")


def rule_files(directory: Path) -> list[Path]:
    """Rule files under ``directory``, sorted, hidden names skipped.

    Hidden entries are skipped so a Kubernetes ConfigMap volume (``..data`` and the timestamped
    ``..2024_...`` directory) is read once, through its top-level symlinks.
    """
    if not directory.is_dir():
        raise RuleConfigError(str(directory), "rules directory does not exist")
    found: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend(rule_files(entry))
        elif entry.is_file() and entry.suffix in RULE_SUFFIXES:
            found.append(entry)
    return found


def _flag(file: str, raw: dict[str, Any], field: str) -> bool:
    value = raw.get(field, False)
    if not isinstance(value, bool):
        raise RuleConfigError(
            file, f"error loading config file: yaml: cannot unmarshal {value!r} into bool"
        )
    return value


def _string(file: str, raw: dict[str, Any], field: str) -> str:
    value = raw.get(field)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RuleConfigError(
            file, f"error loading config file: yaml: cannot unmarshal {value!r} into string"
        )
    return str(value)


def wildcard_pattern(composite: str) -> WildcardPattern:
    """``*`` matches any run of characters (none included), anywhere in ``key_value``."""
    return WildcardPattern(composite)


class _Loader:
    def __init__(self, settings_algorithm: DefaultAlgorithm, merge: bool) -> None:
        self.algorithm = settings_algorithm
        self.merge = merge
        self.domains: dict[str, Domain] = {}

    def load_file(self, path: Path) -> None:
        file = str(path)
        try:
            document = load_yaml_file(path)
        except YamlError as exc:
            where = f"line {exc.line}: " if exc.line is not None else ""
            raise RuleConfigError(
                file, f"error loading config file: yaml: {where}{exc.problem}"
            ) from None
        raw = document.data
        report = check_keys(file, document.node)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RuleConfigError(
                file, "error loading config file: yaml: the top level must be a map"
            )
        # "auto": a file in upstream's format (no sidegate extension) counts as upstream
        # does, in fixed windows; a file that uses sidegate's extensions gets token buckets.
        algorithm: Algorithm
        if self.algorithm == "auto":
            algorithm = "token_bucket" if report.uses_extensions else "fixed_window"
        else:
            algorithm = self.algorithm
        domain_name = _string(file, raw, "domain")
        if not domain_name:
            raise RuleConfigError(file, "config file cannot have empty domain")
        domain = self.domains.get(domain_name)
        if domain is not None and not self.merge:
            raise RuleConfigError(file, f"duplicate domain '{domain_name}' in config file")
        if domain is None:
            domain = self.domains[domain_name] = Domain(
                name=domain_name, root=Level(), default_algorithm=algorithm
            )
        elif algorithm != domain.default_algorithm:
            # Merged files disagree: limit overrides for the domain use token buckets.
            domain.default_algorithm = "token_bucket"
        domain.files.append(file)
        descriptors = raw.get("descriptors") or []
        if not isinstance(descriptors, list):
            raise RuleConfigError(
                file, "error loading config file: yaml: descriptors must be a list"
            )
        prefix = f"{domain_name}."
        self._load_level(file, domain.root, descriptors, prefix, algorithm)
        if "tiers" in raw:
            for tier_node in compile_tiers(file, prefix, raw["tiers"], algorithm):
                self._add(file, domain.root, tier_node, prefix)

    def _add(self, file: str, level: Level, node: DescriptorNode, parent: str) -> None:
        composite = node.composite
        if composite in level.nodes:
            raise RuleConfigError(file, f"duplicate descriptor composite key '{parent}{composite}'")
        level.nodes[composite] = node
        if node.pattern is not None:
            level.wildcards.append(node)

    def _load_level(
        self,
        file: str,
        level: Level,
        descriptors: Iterable[Any],
        parent: str,
        algorithm: Algorithm,
    ) -> None:
        for raw in descriptors:
            key = _string(file, raw, "key")
            if not key:
                raise RuleConfigError(file, "descriptor has empty key")
            value = _string(file, raw, "value")
            composite = f"{key}_{value}" if value else key
            stat_key = f"{parent}{composite}"
            shadow = _flag(file, raw, "shadow_mode")
            quota = _flag(file, raw, "quota_mode")
            share = _flag(file, raw, "share_threshold")
            wildcard = "*" in value
            if share and not wildcard:
                raise RuleConfigError(
                    file, f"share_threshold can only be used with wildcard values: '{stat_key}'"
                )
            metadata = raw.get("metadata")
            rule = None
            if raw.get("rate_limit") is not None:
                rule = parse_rule(
                    file,
                    raw["rate_limit"],
                    default_algorithm=algorithm,
                    stat_key=stat_key,
                    shadow_mode=shadow,
                    quota_mode=quota,
                    metadata=metadata if isinstance(metadata, dict) else None,
                )
            node = DescriptorNode(
                key=key,
                value=value,
                rule=rule,
                children=Level(),
                pattern=wildcard_pattern(composite) if wildcard else None,
                share_threshold=share,
                detailed_metric=_flag(file, raw, "detailed_metric"),
                value_to_metric=_flag(file, raw, "value_to_metric"),
                metadata=metadata if isinstance(metadata, dict) else None,
            )
            self._add(file, level, node, parent)
            children = raw.get("descriptors") or []
            if not isinstance(children, list):
                raise RuleConfigError(
                    file, "error loading config file: yaml: descriptors must be a list"
                )
            self._load_level(file, node.children, children, f"{stat_key}.", algorithm)
            if "tiers" in raw:
                # Tiers behind a prefix: tier -> consumer nodes below this descriptor.
                for tier_node in compile_tiers(file, f"{stat_key}.", raw["tiers"], algorithm):
                    self._add(file, node.children, tier_node, f"{stat_key}.")


def load_rules(
    directory: Path, *, default_algorithm: DefaultAlgorithm = "auto", merge: bool = False
) -> RuleSet:
    """Every rule file of ``directory`` in one RuleSet, or RuleConfigError for the first bad one."""
    loader = _Loader(default_algorithm, merge)
    files = rule_files(directory)
    for path in files:
        try:
            loader.load_file(path)
        except RecursionError:
            # Descriptors nested thousands deep: an error naming the file, never a traceback.
            raise RuleConfigError(
                str(path), "error loading config file: the document is nested too deeply"
            ) from None
    return RuleSet(domains=loader.domains, files=tuple(str(p) for p in files))


def load_from_settings(settings: RateLimitSettings) -> RuleSet:
    return load_rules(
        settings.rules_dir,
        default_algorithm=settings.default_algorithm,
        merge=settings.merge_domain_config,
    )


def validate(settings: RateLimitSettings) -> None:
    """Load every rule file; raise RuleConfigError naming the file. No Redis contact."""
    load_from_settings(settings)


def check_rule_files(
    directory: Path, *, default_algorithm: Algorithm = "token_bucket", merge: bool = False
) -> list[RuleConfigError]:
    """Every problem of every rule file (check-config reports them all, not only the first):
    each file loaded on its own, then all together for what spans files (duplicate domains)."""
    try:
        files = rule_files(directory)
    except RuleConfigError as exc:
        return [exc]
    problems = []
    for path in files:
        try:
            _Loader(default_algorithm, merge).load_file(path)
        except RuleConfigError as exc:
            problems.append(exc)
    if not problems:
        try:
            load_rules(directory, default_algorithm=default_algorithm, merge=merge)
        except RuleConfigError as exc:
            problems.append(exc)
    return problems
