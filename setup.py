"""Package layout only; the metadata is in pyproject.toml.

Everything importable is installed under the ``sidegate`` namespace (a top-level ``ratelimit``
would shadow the PyPI distribution of that name), while the repository keeps its top-level
folders. Each folder is mapped into the namespace here, with its subpackages (data folders
included) found at build time so that a new subpackage needs no edit. ``policies/`` and
``examples/`` are package data: the embedded default and ``sidegate init`` run from any
directory after a plain ``pip install``.
"""

from setuptools import find_namespace_packages, setup

PACKAGE_DIRS = {
    "sidegate": "sidegate",
    "sidegate.extauthz": "extauthz",
    "sidegate.ratelimit": "ratelimit",
    "sidegate.common": "common",
    "sidegate.policies": "policies",
    "sidegate.examples": "examples",
}


def _packages() -> list[str]:
    found = []
    for name, folder in PACKAGE_DIRS.items():
        found.append(name)
        # Namespace discovery so that data folders (lua/, policies/rbac/) are packages too.
        subs = find_namespace_packages(folder, exclude=["*__pycache__*"])
        found.extend(f"{name}.{sub}" for sub in subs)
    return found


setup(packages=_packages(), package_dir=PACKAGE_DIRS)
