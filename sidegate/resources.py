"""Where the shipped data lives: the default policies and the examples, as package data.

Through ``importlib.resources`` so that the same code finds them in a checkout (editable install:
the repository's ``policies/`` and ``examples/``) and in an installed wheel (``site-packages``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_dir(package: str) -> Path:
    # Both install kinds map these packages to real directories; the engine needs a Path.
    return Path(str(resources.files(package)))


def shipped_policies() -> Path:
    """The shipped Rego policies (``policies/`` in the repository)."""
    return _package_dir("sidegate.policies")


def shipped_examples() -> Path:
    """The shipped examples (``examples/`` in the repository)."""
    return _package_dir("sidegate.examples")
