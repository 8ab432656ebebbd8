"""Shared fixtures: the real Wikipedia sample shipped with gensim's test data."""

import os

import pytest


@pytest.fixture(scope="session")
def wiki_sample_path() -> str:
    """206 real enwiki pages (2016), bz2: ~100 redirects, 1 non-article page."""
    gensim = pytest.importorskip("gensim")
    return os.path.join(
        os.path.dirname(gensim.__file__),
        "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    )
