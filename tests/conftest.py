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


@pytest.fixture(scope="session")
def sample_documents(wiki_sample_path):
    """The sample's kept documents as the job prepares them (cleaned, sentence-split)."""
    from pipeline.config import CleaningConfig, SourceConfig
    from pipeline.documents import prepare_document
    from pipeline.records import RawDocument
    from pipeline.sources import read_source

    raws = [r for r in read_source(wiki_sample_path, lambda: open(wiki_sample_path, "rb"), SourceConfig())
            if isinstance(r, RawDocument)]
    docs = [prepare_document(r, CleaningConfig())[0] for r in raws]
    return [d for d in docs if d is not None]


@pytest.fixture(scope="session")
def sample_paragraphs(sample_documents):
    """Real English text: the sample's documents, one string each."""
    return [" ".join(d.sentences) for d in sample_documents]
