"""The READMEs point only at what a clone of this repository holds."""

import os
import re

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TOP_LEVEL = ("pipeline/", "training/", "tests/", "bench/", "infra/", "conf/")
# `path/like/this.py` or `dir/` in backticks, starting at one of the repository's folders.
REPO_PATH = re.compile(r"`((?:%s)[\w./-]*)`" % "|".join(re.escape(t) for t in TOP_LEVEL))


@pytest.mark.parametrize("doc", ["README.md", "infra/README.md"])
def test_every_repository_path_a_readme_names_exists(doc):
    text = open(os.path.join(REPO, doc), encoding="utf-8").read()
    named = sorted(set(REPO_PATH.findall(text)))
    assert named, "no repository paths found: the pattern is broken"
    missing = [p for p in named if not os.path.exists(os.path.join(REPO, p))]
    assert not missing, f"{doc} names {missing}, which this repository does not hold"


@pytest.mark.parametrize("doc", ["README.md", "infra/README.md"])
def test_no_readme_sends_the_reader_outside_the_repository(doc):
    text = open(os.path.join(REPO, doc), encoding="utf-8").read()
    # The project's shared/ folder (beside the repository) is not part of a clone; /shared/... paths are fine.
    assert not re.search(r"REFERENCE|(?<![/\w])shared/", text), "explain it here, not in a file users do not have"
