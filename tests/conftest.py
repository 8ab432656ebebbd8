"""Shared fixtures: the real Wikipedia sample shipped with gensim's test data."""

import os

import pytest

from paths import CONF


@pytest.fixture(scope="session")
def wiki_sample_path() -> str:
    """206 real enwiki pages (2016), bz2: ~100 redirects, 1 non-article page."""
    import gensim

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

    raws = [
        r
        for r in read_source(wiki_sample_path, lambda: open(wiki_sample_path, "rb"), SourceConfig())
        if isinstance(r, RawDocument)
    ]
    docs = [prepare_document(r, CleaningConfig())[0] for r in raws]
    return [d for d in docs if d is not None]


@pytest.fixture(scope="session")
def sample_paragraphs(sample_documents):
    """Real English text: the sample's documents, one string each."""
    return [" ".join(d.sentences) for d in sample_documents]


@pytest.fixture(scope="session")
def sample_vocabulary(sample_paragraphs):
    """WordPiece trained on the sample's documents (4,000 pieces), by casing: ``sample_vocabulary(lowercase)``.
    Trained once per casing for the whole session (the casing and tokenizer tests share them)."""
    from pipeline.tokenization import train_vocabulary

    trained: dict[bool, list[str]] = {}

    def vocabulary(lowercase: bool) -> list[str]:
        if lowercase not in trained:
            trained[lowercase] = train_vocabulary(
                sample_paragraphs, vocab_size=4000, lowercase=lowercase, min_frequency=2, limit_alphabet=500
            )
        return list(trained[lowercase])

    return vocabulary


# --- running the Beam job -------------------------------------------------------------------

CONF_DIR = os.path.join(CONF, "pipeline")


def compose_pipeline_config(overrides):
    """The job's config exactly as `python -m pipeline <overrides>` composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=os.path.abspath(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=list(overrides))
    return OmegaConf.to_object(cfg), OmegaConf.to_container(cfg, resolve=True)


def run_job(output_dir, *overrides):
    """Run the real job (FnApiRunner) and return its manifest."""
    from pipeline.run import run

    cfg, as_dict = compose_pipeline_config([f"output_dir={output_dir}", *overrides])
    return run(cfg, as_dict)


# One worker in-process: the quickest way through the real runner.
IN_MEMORY = ("runner.direct_num_workers=1", "runner.direct_running_mode=in_memory")
# A smaller trained vocabulary keeps the tests quick; the algorithm is the same.
SMALL_VOCAB = ("tokenizer.vocab_size=8000",)


@pytest.fixture(scope="session")
def sample_job(tmp_path_factory):
    """The job on the real sample with its defaults (NSP, static masks, dupe_factor 5), 2 worker
    processes, a held-out split large enough to look at."""
    out = tmp_path_factory.mktemp("sample_job")
    manifest = run_job(
        out,
        "seed=7",
        "instances.eval_fraction=0.05",
        "runner.direct_num_workers=2",
        "runner.direct_running_mode=multi_processing",
        *SMALL_VOCAB,
    )
    return out, manifest


# --- shards for the trainer's data tests (tests/integration/test_training_data.py) ---------------------


@pytest.fixture(scope="session")
def loader_static_job(tmp_path_factory):
    """Static masks, NSP, length 128, each split in 3 shards (row indexing across shards)."""
    out = tmp_path_factory.mktemp("loader_static")
    return out, run_job(out, "output.num_shards=3", *SMALL_VOCAB, *IN_MEMORY)


@pytest.fixture(scope="session")
def loader_dynamic_job(tmp_path_factory):
    """Examples stored unmasked (dynamic masking), objective none (no sentence-pair label)."""
    out = tmp_path_factory.mktemp("loader_dynamic")
    return out, run_job(out, "masking=dynamic", "instances=none", "output.num_shards=2", *SMALL_VOCAB, *IN_MEMORY)


# --- shards for the trainer's tests (tests/integration: trainer, multinode, resume guard, SLURM, shard cache)


@pytest.fixture(scope="session")
def trainer_shards(tmp_path_factory):
    """NSP, static masks, length 64, a 2000-id vocabulary, 5% held out for evaluation."""
    out = tmp_path_factory.mktemp("trainer_shards")
    run_job(
        out,
        "seed=3",
        "tokenizer.vocab_size=2000",
        "instances.max_seq_length=64",
        "instances.eval_fraction=0.05",
        *IN_MEMORY,
    )
    return str(out)


# --- the two layers -------------------------------------------------------------------------

INTEGRATION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration")


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration carries the ``integration`` marker (pyproject.toml), so
    ``-m "not integration"`` selects the unit layer by where a test lives, not by a decorator one
    could forget."""
    for item in items:
        if os.path.commonpath([str(item.path), INTEGRATION_DIR]) == INTEGRATION_DIR:
            item.add_marker(pytest.mark.integration)
