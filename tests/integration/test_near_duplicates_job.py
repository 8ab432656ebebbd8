"""The job with dedup=minhash on real text with planted near-duplicates (bench/dedup_quality.py plants
them: words edited, paragraphs reordered, a header or footer added): each is rejected naming its
original, the output is the job's on the corpus without them (shards, documents table, trained
vocabulary), and another worker count, chunking and input order change nothing."""

import glob
import importlib.util
import json
import os
import re
import sys

import pytest

from conftest import IN_MEMORY, SMALL_VOCAB, run_job
from paths import REPO
from shards import read_split, shard_hashes

# The held-out rule and the pool count are decided on the documents before near-duplicates are
# found (as before exact copies are dropped): with no eval split, the corpus without the copies
# gets the same rule, so its output can be compared byte for byte.
COMMON = ("seed=5", "instances.eval_fraction=0", "masking.dupe_factor=2", "progress_every_s=0", *SMALL_VOCAB)


def load_bench():
    """bench/dedup_quality.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("dedup_quality", os.path.join(REPO, "bench", "dedup_quality.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 of the sample's articles (corpus.jsonl) and, in a file that sorts after it (planted.jsonl),
    copies of 24 of them: 8 with 3% of their words edited, 8 with their paragraphs reordered, 8
    with a header or footer line; and one exact copy."""
    bench = load_bench()
    texts = bench.wikipedia_texts()[:40]
    near = bench.plant(texts[:8], "edited", 0.03) + bench.plant(texts[8:16], "reordered")
    near += bench.plant(texts[16:24], "header")
    exact = bench.Text("exact:" + texts[24].record_id, texts[24].text)
    where = tmp_path_factory.mktemp("planted")
    corpus_path = bench.write_jsonl(str(where / "corpus.jsonl"), texts)
    planted_path = bench.write_jsonl(str(where / "planted.jsonl"), near + [exact])
    return corpus_path, planted_path, texts, near, exact


@pytest.fixture(scope="module")
def deduplicated(corpus, tmp_path_factory):
    corpus_path, planted_path, *_ = corpus
    out = tmp_path_factory.mktemp("dedup")
    return out, run_job(out, f"inputs=[{corpus_path},{planted_path}]", "dedup=minhash", *COMMON, *IN_MEMORY)


def rejects(out) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(str(out), "rejects", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return sorted(rows, key=lambda r: (r["source"], r["position"], r["record_id"]))


def test_each_planted_copy_is_rejected_naming_its_original(corpus, deduplicated):
    corpus_path, planted_path, texts, near, exact = corpus
    out, manifest = deduplicated
    by_reason: dict[str, list[dict]] = {}
    for r in rejects(out):
        by_reason.setdefault(r["reason"], []).append(r)
    assert sorted(by_reason) == ["duplicate", "near_duplicate"]
    found = {r["record_id"]: r["detail"] for r in by_reason["near_duplicate"]}
    assert sorted(found) == sorted(c.record_id for c in near)
    assert {r["source"] for r in by_reason["near_duplicate"]} == {planted_path}
    for record_id, detail in found.items():
        original = record_id.split(":", 1)[1]
        m = re.fullmatch(
            rf"near-duplicate of {re.escape(corpus_path)} record (\S+) \(estimated Jaccard similarity ([\d.]+)\)",
            detail,
        )
        assert m and m.group(1) == original and float(m.group(2)) >= 0.8, detail
    assert [(r["record_id"], r["detail"]) for r in by_reason["duplicate"]] == [
        (exact.record_id, f"same text as {corpus_path} record {texts[24].record_id}")
    ]
    stats = manifest.statistics
    assert stats["rejected"] == {"duplicate": 1, "near_duplicate": len(near)}
    assert stats["documents_kept"] == {"train": len(texts)}
    nd = stats["near_duplicates"]
    assert (
        nd["documents_signed"] == len(texts) + len(near) + 1
    )  # the exact copy is signed, and one node with its original
    assert nd["texts_removed"] == nd["clusters"] == len(near)


def test_the_output_is_the_jobs_on_the_corpus_without_the_copies(corpus, deduplicated, tmp_path):
    corpus_path, *_ = corpus
    out, _ = deduplicated
    alone = tmp_path / "alone"
    run_job(alone, f"inputs=[{corpus_path}]", *COMMON, *IN_MEMORY)
    with_copies, without = shard_hashes(out), shard_hashes(alone)
    # The trained vocabulary counted no copy: the same pieces.
    assert with_copies["vocab.txt"] == without["vocab.txt"]
    assert {k: v for k, v in with_copies.items() if k.startswith("train/")} == {
        k: v for k, v in without.items() if k.startswith("train/")
    }
    assert read_split(out, "documents").equals(read_split(alone, "documents"))


def test_workers_chunking_and_input_order_change_nothing(corpus, deduplicated, tmp_path):
    corpus_path, planted_path, *_ = corpus
    out, _ = deduplicated
    again = tmp_path / "again"
    run_job(
        again,
        f"inputs=[{planted_path},{corpus_path}]",
        "dedup=minhash",
        "shuffle.chunk_bytes=20000",
        "runner.direct_num_workers=2",
        "runner.direct_running_mode=multi_processing",
        *COMMON,
    )
    assert shard_hashes(again) == shard_hashes(out)
    assert rejects(again) == rejects(out)
