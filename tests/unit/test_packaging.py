"""The wheel's explicit package list (pyproject.toml) names every code package under pipeline/ and
training/: a sub-package left out installs nothing of it, and the installed commands fail on import
(tests/integration/test_installed_package.py builds the wheel; this says which package, in a second)."""

import os

import tomllib

from paths import REPO


def test_every_code_package_is_in_the_wheel():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("pipeline", "training"):
        for directory, _, files in os.walk(os.path.join(REPO, top)):
            if "__init__.py" in files:
                found.add(os.path.relpath(directory, REPO).replace(os.sep, "."))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
