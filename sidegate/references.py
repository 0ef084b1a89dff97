"""Every file the config references, checked one by one so that all problems are reported at once.

Each problem reads ``<config>:<line>: <key path>: <file>:<line>: <problem>``: where in
sidegate.yaml the file is named, which key names it, and where inside the file it goes wrong
(when the problem has a line; a missing file or an unreadable PEM has none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sidegate.common.yaml_loader import YamlDocument, YamlError, parse_yaml
from sidegate.config import format_loc
from sidegate.extauthz.errors import AuthzConfigError
from sidegate.extauthz.factory import build_engine
from sidegate.extauthz.grpc_body import ProtosetDecoder, ProtosetError
from sidegate.extauthz.identity.api_keys.file_store import parse_key_file
from sidegate.extauthz.identity.api_keys.settings import FileStoreSettings
from sidegate.extauthz.identity.jwks import static_key
from sidegate.extauthz.identity.registry import build_verifier
from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.ratelimit.config.loader import check_rule_files
from sidegate.settings import SidegateConfig

Loc = tuple[Any, ...]


def _config_document(path: Path | None) -> YamlDocument | None:
    if path is None:
        return None
    try:
        return parse_yaml(path.read_bytes(), str(path))
    except (OSError, YamlError):
        return None


def _problems(config: SidegateConfig) -> Iterator[tuple[Loc, str]]:
    """(key path in the config, problem naming the file and line) of every referenced file."""
    authz = config.authz
    if authz.enabled:
        engine = build_engine(authz.policy)
        if isinstance(engine, EmbeddedEngine):
            try:
                engine.load()
            except AuthzConfigError as exc:
                yield ("authz", "policy", "directory"), str(exc)
            except RecursionError:
                yield ("authz", "policy", "directory"), (
                    f"{authz.policy.directory}: a policy is nested too deeply to compile"
                )
        protoset = authz.policy.body.proto_descriptor
        if protoset is not None and authz.policy.body.parse:
            try:
                ProtosetDecoder.load(protoset)
            except ProtosetError as exc:
                yield ("authz", "policy", "body", "proto_descriptor"), str(exc)
        for i, source in enumerate(authz.identity.sources):
            at: Loc = ("authz", "identity", "sources", i)
            found = False
            store = getattr(source, "store", None)
            if isinstance(store, FileStoreSettings):
                try:
                    if not store.path.exists():
                        raise AuthzConfigError(f"{store.path}: API key file does not exist")
                    parse_key_file(store.path)
                except AuthzConfigError as exc:
                    found = True
                    yield (*at, "store", "path"), str(exc)
            for j, issuer in enumerate(getattr(source, "issuers", ())):
                for k, spec in enumerate(issuer.keys):
                    try:
                        static_key(spec, f"issuer {issuer.issuer!r} keys[{k}]")
                    except AuthzConfigError as exc:
                        found = True
                        field = "pem_file" if spec.pem_file else (
                            "secret_file" if spec.secret_file else ""
                        )
                        key_loc = (*at, "issuers", j, "keys", k, *((field,) if field else ()))
                        named = spec.pem_file or spec.secret_file
                        yield key_loc, f"{named}: {exc}" if named else str(exc)
            if not found:
                # anything else the source checks when it is built (URLs, combinations)
                try:
                    build_verifier(source)
                except (AuthzConfigError, ValueError) as exc:
                    yield at, str(exc)
    if config.ratelimit.enabled:
        settings = config.ratelimit
        for problem in check_rule_files(
            settings.rules_dir,
            default_algorithm=settings.default_algorithm,
            merge=settings.merge_domain_config,
        ):
            yield ("ratelimit", "rules_dir"), str(problem)


def check_references(config: SidegateConfig, config_path: Path | None) -> list[str]:
    """Every problem of every referenced file, each one line (no ``sidegate:`` prefix)."""
    document = _config_document(config_path)
    out = []
    for loc, problem in _problems(config):
        line = document.line_of(loc) if document is not None else None
        where = f"{config_path}:{line}: " if line else (f"{config_path}: " if config_path else "")
        # a problem may span lines (a compile error list): keep it one line per problem
        out.append(f"{where}{format_loc(loc)}: {' '.join(problem.splitlines())}")
    return out
