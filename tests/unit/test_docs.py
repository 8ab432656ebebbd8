"""The README, the reference under docs/ and the measurements point only at what a clone of this
repository holds; mkdocs' nav lists the pages there are; the README stays a map."""

import glob
import os
import re

import pytest
import yaml

from paths import REPO

TOP_LEVEL = (
    "pipeline/",
    "training/",
    "tests/",
    "bench/",
    "infra/",
    "conf/",
    "docs/",
    ".ci/",
    "pyproject.toml",
    "mkdocs.yml",
    "setup.py",
)
# `path/like/this.py` or `dir/` in backticks, starting at one of the repository's folders or files.
REPO_PATH = re.compile(r"`((?:" + "|".join(re.escape(t) for t in TOP_LEVEL) + r")[\w./-]*)`")
# [text](target): a Markdown link; images and anchors-only links included.
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")

README_MAX_LINES = 200

MKDOCS_YML = os.path.join(REPO, "mkdocs.yml")
DOCS_DIR = os.path.join(REPO, "docs")
DOC_PAGES = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(DOCS_DIR, "**", "*.md"), recursive=True))
DOCS = ["README.md", "infra/README.md", "bench/README.md"] + DOC_PAGES


def read(doc: str) -> str:
    with open(os.path.join(REPO, doc), encoding="utf-8") as f:
        return f.read()


def test_the_reference_pages_are_there():
    """Without this, an emptied docs/ would make the parametrized tests below check nothing."""
    assert "docs/index.md" in DOC_PAGES and len(DOC_PAGES) >= 5, DOC_PAGES


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_a_doc_names_exists(doc):
    named = sorted(set(REPO_PATH.findall(read(doc))))
    assert named, f"no repository paths found in {doc}: the pattern is broken, or the page names no file"
    missing = [p for p in named if not os.path.exists(os.path.join(REPO, p))]
    assert not missing, f"{doc} names {missing}, which this repository does not hold"


@pytest.mark.parametrize("doc", DOCS)
def test_no_doc_sends_the_reader_outside_the_repository(doc):
    # The project's shared/ folder (beside the repository) is not part of a clone; /shared/... paths are fine.
    assert not re.search(r"REFERENCE|(?<![/\w])shared/", read(doc)), "explain it here, not in a file users do not have"


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_of_a_doc_resolves(doc):
    """Links between pages (mkdocs build --strict checks them too, anchors included) and from the
    READMEs to files; a docs page may not link out of docs/, which mkdocs cannot serve."""
    here = os.path.dirname(os.path.join(REPO, doc))
    broken = []
    for target in MARKDOWN_LINK.findall(read(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor in the same page
        path = os.path.normpath(os.path.join(here, target.split("#", 1)[0]))
        outside_docs = doc.startswith("docs/") and not path.startswith(DOCS_DIR + os.sep)
        if outside_docs or not os.path.exists(path):
            broken.append(target)
    assert not broken, f"{doc} links to {broken}, which do not resolve (inside docs/ for a docs page)"


def nav_pages(nav) -> list[str]:
    """The page files of an mkdocs nav: a list of 'file.md', {'Title': 'file.md'} or {'Section': [...]}."""
    pages = []
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, list):
                pages += nav_pages(value)
            elif not re.match(r"[a-z]+://", value):
                pages.append(value)
    return pages


def test_mkdocs_nav_lists_every_page_and_only_pages_that_exist():
    with open(MKDOCS_YML, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    docs_dir = os.path.join(REPO, config.get("docs_dir", "docs"))
    listed = nav_pages(config["nav"])
    assert listed, "mkdocs.yml has an empty nav"
    missing = [p for p in listed if not os.path.isfile(os.path.join(docs_dir, p))]
    assert not missing, f"mkdocs.yml's nav lists {missing}, which {docs_dir} does not hold"
    unlisted = [p for p in DOC_PAGES if os.path.relpath(os.path.join(REPO, p), docs_dir) not in listed]
    assert not unlisted, f"{unlisted} are not in mkdocs.yml's nav"
    assert len(listed) == len(set(listed)), "mkdocs.yml's nav lists a page twice"


def test_the_readme_is_a_map_not_the_reference():
    lines = read("README.md").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the reference to docs/ "
        "and the figures to bench/README.md"
    )
