"""Which Verifier implements each identity source ``type``.

A verifier module registers a factory here (``register_verifier``), or is listed in
``_BUILTIN`` so it is imported lazily the first time its type is configured. The pipeline
only ever calls ``build_verifier``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sidegate.extauthz.identity.base import Verifier
from sidegate.extauthz.identity.source import SourceSettings

VerifierFactory = Callable[[Any], Verifier]

# type -> "module:factory"; imported on first use so unused verifiers cost nothing
_BUILTIN: dict[str, str] = {
    "jwt": "sidegate.extauthz.identity.jwt:JwtVerifier",
    "api_key": "sidegate.extauthz.identity.api_keys.factory:build_api_key_verifier",
    "introspection": "sidegate.extauthz.identity.introspection:IntrospectionVerifier",
}
_FACTORIES: dict[str, VerifierFactory] = {}


def register_verifier(type_: str, factory: VerifierFactory) -> None:
    """Make ``factory(source_settings) -> Verifier`` build sources of ``type: <type_>``."""
    _FACTORIES[type_] = factory


def verifier_factory(type_: str) -> VerifierFactory:
    factory = _FACTORIES.get(type_)
    if factory is None:
        target = _BUILTIN.get(type_)
        if target is None:
            raise LookupError(f"no verifier registered for identity source type {type_!r}")
        module, _, name = target.partition(":")
        factory = getattr(importlib.import_module(module), name)
        _FACTORIES[type_] = factory
    return factory


def build_verifier(source: SourceSettings) -> Verifier:
    return verifier_factory(source.type)(source)  # type: ignore[attr-defined]
