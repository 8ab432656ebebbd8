"""Near-duplicate removal (pipeline/near_duplicates.py): the MinHash and LSH math on real text, the
composite transforms through Beam's TestPipeline, and what the job's later stages do with the
texts it removes (the vocabulary's counts, the pools)."""

import os
import pickle
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from paths import CONF
from pipeline import contract
from pipeline.config import DedupConfig, InstancesConfig, MaskingConfig, OutputConfig, TokenizerConfig, register_configs
from pipeline.documents import Document
from pipeline.formats import DocumentRecord
from pipeline.heldout import HeldOutRule
from pipeline.instances import TokenizedDocument
from pipeline.near_duplicates import (
    DocumentName,
    FindNearDuplicates,
    MinHasher,
    NearDuplicate,
    _UnionFind,
    band_keys,
    candidate_probability,
    estimated_similarity,
    jaccard,
    pairs_of_bucket,
    shingle_hashes,
    words_of,
)
from pipeline.seeding import stable_id
from pipeline.spill import Spill, SpillChunks
from pipeline.stats import SumCounts
from pipeline.tokenization import build_tokenizer, encode_sentences, train_vocabulary
from pipeline.transforms import CreateExamples, TrainVocabulary, make_vocab_info

CFG = DedupConfig(enabled=True)


def signature(text: str, seed: int = 1, cfg: DedupConfig = CFG) -> np.ndarray:
    return MinHasher(cfg.permutations, seed).of_text(text, cfg.shingle_words)


def edited(text: str, fraction: float, seed: int = 0) -> str:
    """``fraction`` of the words replaced by another word of the text."""
    rng = random.Random(seed)
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, round(fraction * len(words)))):
        words[i] = rng.choice(words)
    return " ".join(words)


# --- the math ---------------------------------------------------------------------------------


def test_words_ignore_case_and_punctuation_and_split_ideographs():
    assert words_of("Hello, World! It's 2024.") == ["hello", "world", "it", "s", "2024"]
    assert words_of("北京大学 is in 北京") == ["北", "京", "大", "学", "is", "in", "北", "京"]
    assert np.array_equal(signature("Hello, world: this is it."), signature("hello world this is it"))


def test_shingles_follow_word_order_and_a_short_text_is_one_shingle():
    ab, ba = shingle_hashes(["a", "b"], 2), shingle_hashes(["b", "a"], 2)
    assert len(ab) == len(ba) == 1 and ab[0] != ba[0]
    assert len(shingle_hashes(["a", "b", "c", "d"], 2)) == 3
    assert len(shingle_hashes([], 2)) == 0 and signature("...") is None
    assert int(shingle_hashes(["a", "b", "c"], 2).max()) < 2**32


def test_a_lightly_edited_copy_shares_a_bucket_and_distinct_documents_do_not(sample_paragraphs):
    docs = sample_paragraphs[:40]
    sigs = [signature(t) for t in docs]
    for text, sig in zip(docs[:10], sigs):
        copy = signature(edited(text, 0.02))
        assert set(band_keys(sig, CFG.bands)) & set(band_keys(copy, CFG.bands))
        assert estimated_similarity(sig, copy) >= CFG.threshold
    keys = [set(band_keys(s, CFG.bands)) for s in sigs]
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            assert not keys[i] & keys[j], (i, j)
            assert estimated_similarity(sigs[i], sigs[j]) < 0.3


def test_estimated_similarity_is_close_to_the_true_jaccard(sample_paragraphs):
    hasher = MinHasher(CFG.permutations, 7)
    errors = []
    for k, text in enumerate(sample_paragraphs[:30]):
        copy = edited(text, fraction=0.02 + 0.01 * (k % 10), seed=k)
        a, b = (shingle_hashes(words_of(t), CFG.shingle_words) for t in (text, copy))
        true = jaccard(set(a.tolist()), set(b.tolist()))
        estimate = estimated_similarity(hasher.signature(a), hasher.signature(b))
        se = np.sqrt(true * (1 - true) / CFG.permutations)
        assert abs(estimate - true) <= 4 * se + 1e-9, (k, estimate, true)
        errors.append(estimate - true)
    assert abs(np.mean(errors)) < 0.02  # unbiased: the errors average out


def test_pairs_share_a_bucket_as_often_as_the_lsh_curve_says():
    """Sets of exact Jaccard 900/1100 (0.818): 400 random pairs against 1 - (1 - s^8)^16 = 0.972."""
    rng = np.random.default_rng(0)
    hasher, hits, trials = MinHasher(CFG.permutations, 3), 0, 400
    for _ in range(trials):
        values = rng.choice(2**32, size=1100, replace=False).astype(np.uint64)
        a, b = values[:1000], np.concatenate([values[:900], values[1000:]])
        hits += bool(set(band_keys(hasher.signature(a), CFG.bands)) & set(band_keys(hasher.signature(b), CFG.bands)))
    expected = candidate_probability(900 / 1100, CFG.bands, CFG.rows)
    assert abs(hits / trials - expected) < 0.03, (hits / trials, expected)
    assert candidate_probability(0.5, CFG.bands, CFG.rows) < 0.07 < 0.94 < candidate_probability(0.8, 16, 8)


def test_signatures_follow_the_seed_only():
    text = "the same text signed in two processes gives the same signature every time"
    assert np.array_equal(signature(text, seed=5), signature(text, seed=5))
    assert not np.array_equal(signature(text, seed=5), signature(text, seed=6))


def name(i: int) -> DocumentName:
    return DocumentName("a.jsonl", i, str(i), 1000 + i)


def test_clusters_keep_their_least_name_whatever_the_order_of_the_pairs():
    # Two chains (0-3-5-1, 7-9) and a pair given twice: clusters {0,1,3,5} and {7,9}.
    pairs = [(name(3), name(5), 0.9), (name(5), name(1), 0.9), (name(0), name(3), 0.85), (name(9), name(7), 0.8)]
    pairs.append(pairs[0])
    expected = [(name(1), name(0)), (name(3), name(0)), (name(5), name(0)), (name(9), name(7))]
    union = _UnionFind()
    for seed in range(5):
        random.Random(seed).shuffle(pairs)
        halves = []
        for part in (pairs[:2], pairs[2:]):  # two workers' partial clusters, merged
            acc = union.create_accumulator()
            for pair in part:
                acc = union.add_input(acc, pair)
            halves.append(acc)
        assert union.extract_output(union.merge_accumulators(halves)) == expected


def test_a_bucket_over_the_cap_pairs_the_rest_with_its_least_id():
    ids = [3, 5, 8, 17, 42, 61, 99]
    first = [3, 5, 8, 17]
    expected = [(a, b) for i, a in enumerate(first) for b in first[i + 1 :]] + [(3, 42), (3, 61), (3, 99)]
    assert list(pairs_of_bucket(ids, cap=4)) == expected
    assert list(pairs_of_bucket([7], cap=4)) == [] and list(pairs_of_bucket([1, 2], cap=2)) == [(1, 2)]


def test_a_near_duplicate_names_the_kept_document_and_the_similarity():
    near = NearDuplicate(5, DocumentName("wiki.xml", 12, "Q9", 7), 0.8671875)
    assert near.detail() == "near-duplicate of wiki.xml record Q9 (estimated Jaccard similarity 0.87)"
    assert "through other near-duplicates" in NearDuplicate(5, near.kept, 0.74, direct=False).detail()


# --- the composite transforms -----------------------------------------------------------------


def beam_pipeline():
    return BeamTestPipeline(runner=fn_runner.FnApiRunner())


def document(text: str, source: str, record: int) -> Document:
    return Document(stable_id(text), source, str(record), "", (text,), len(text), position=record)


@pytest.fixture(scope="module")
def corpus(sample_paragraphs):
    """20 real documents (a.jsonl), then (b.jsonl) a copy of 3 of them with 2% of the words edited,
    2 with their sentences reordered, 2 with a footer, an exact copy, and a copy of a copy."""
    originals = [document(t, "a.jsonl", i) for i, t in enumerate(sample_paragraphs[:20])]
    texts = sample_paragraphs[:20]
    reorder = lambda t: ". ".join(reversed(t.split(". ")))  # noqa: E731
    planted = [edited(texts[i], 0.02, i) for i in range(3)]
    planted += [reorder(texts[i]) for i in (3, 4)]
    planted += [texts[i] + " Share this article with your friends." for i in (5, 6)]
    planted += [texts[7], edited(planted[0], 0.01, 99)]
    copies = [document(t, "b.jsonl", 100 + k) for k, t in enumerate(planted)]
    family = [0, 1, 2, 3, 4, 5, 6, 7, 0]  # the original each copy comes from
    return originals, copies, family


def removed_by(docs, tmp_path, chunk_bytes=400, seed=1, cfg=CFG):
    """{removed doc id: NearDuplicate} and the summed statistics, from FindNearDuplicates on ``docs``."""
    where = tmp_path / f"run-{chunk_bytes}-{seed}-{cfg.threshold}"
    spill = Spill(str(where / "spill"), chunk_bytes, 1000)
    with beam_pipeline() as p:
        counts = p | "Counts" >> beam.Create([{"train": len(docs)}])
        chunks = p | "Docs" >> beam.Create(docs) | SpillChunks(spill, "documents")
        out = chunks | FindNearDuplicates(cfg, seed, spill, counts)
        _ = out.removed | "AllRemoved" >> beam.combiners.ToList() | "Keep" >> beam.Map(_save, str(where / "removed"))
        _ = out.stats | beam.CombineGlobally(SumCounts()) | "KeepStats" >> beam.Map(_save, str(where / "stats"))
    found = {d.doc_id: d for d in _load(where / "removed")}
    return found, _load(where / "stats")


def _save(value, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f)


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def test_find_near_duplicates_removes_the_planted_copies_and_keeps_the_originals(corpus, tmp_path):
    originals, copies, family = corpus
    found, stats = removed_by(originals + copies, tmp_path)
    exact = copies[7]  # the same text as originals[7]: one node, not a near-duplicate of itself
    planted = [c for c in copies if c is not exact]
    assert set(found) == {c.doc_id for c in planted}
    for copy, f in zip(copies, family):
        if copy is exact:
            continue
        kept = originals[f]
        assert found[copy.doc_id].kept == DocumentName(kept.source, kept.position, kept.record_id, kept.doc_id)
        assert found[copy.doc_id].similarity >= 0.8 and found[copy.doc_id].direct
    assert stats["near_duplicates/documents_signed"] == len(originals) + len(copies)
    assert stats["near_duplicates/texts_removed"] == len(planted) and stats["near_duplicates/clusters"] == 7
    assert stats["near_duplicates/verified_pairs"] >= len(planted)


def test_the_kept_document_is_the_same_whatever_the_arrival_order_and_chunking(corpus, tmp_path):
    originals, copies, _ = corpus
    docs = originals + copies
    first, _ = removed_by(docs, tmp_path)
    shuffled = list(docs)
    random.Random(3).shuffle(shuffled)
    again, _ = removed_by(shuffled, tmp_path, chunk_bytes=5_000)
    assert again == first
    # The copy that comes first in input order is kept: with the copies in a file that sorts
    # first, the originals are the ones removed.
    renamed = [Document(c.doc_id, "0.jsonl", c.record_id, "", c.sentences, c.chars, c.position) for c in copies]
    swapped, _ = removed_by(originals + renamed, tmp_path, chunk_bytes=2_000)
    assert {d.kept.source for d in swapped.values()} == {"0.jsonl"}


def test_a_bucket_over_the_cap_still_makes_one_cluster(sample_paragraphs, tmp_path):
    """Six versions of one article, each with one word changed, share most buckets: with at most 2
    documents paired in full per bucket, the others pair with the bucket's first, and one cluster
    keeps the first version."""
    words = sample_paragraphs[0].split(" ")
    versions = [" ".join(words[:k] + ["changed"] + words[k + 1 :]) for k in range(10, 70, 10)]
    docs = [document(t, "a.jsonl", i) for i, t in enumerate(versions)]
    found, stats = removed_by(docs, tmp_path, cfg=DedupConfig(enabled=True, max_bucket_documents=2))
    assert sorted(found) == sorted(d.doc_id for d in docs[1:])
    assert {d.kept.doc_id for d in found.values()} == {docs[0].doc_id}
    assert stats["near_duplicates/capped_buckets"] >= 1 and stats["near_duplicates/clusters"] == 1


def test_settings_change_what_is_found(corpus, tmp_path):
    originals, copies, _ = corpus
    strict, _ = removed_by(originals + copies, tmp_path, cfg=DedupConfig(enabled=True, threshold=1.0))
    assert len(strict) < len(copies) - 1  # only texts equal as word 2-gram sets


# --- what the later stages do with them ---------------------------------------------------------


def test_train_vocabulary_does_not_count_a_near_duplicate(tmp_path, sample_paragraphs):
    texts = sample_paragraphs[:12]
    docs = [document(t, "a.jsonl", i) for i, t in enumerate(texts)]
    noise = " ".join(f"zq{i}x" for i in range(60))  # words only the near-duplicate has
    near = document(texts[0] + " " + noise, "b.jsonl", 1)
    cfg = TokenizerConfig(vocab_size=300, min_frequency=1, limit_alphabet=200)
    expected = train_vocabulary(texts, 300, True, 1, 200)
    removed = NearDuplicate(near.doc_id, DocumentName("a.jsonl", 0, "0", docs[0].doc_id), 0.9)
    with beam_pipeline() as p:
        spill = Spill(str(tmp_path / "spill"), 400, 1000)
        chunks = p | "Docs" >> beam.Create(docs + [near]) | SpillChunks(spill, "documents")
        rule = p | "Rule" >> beam.Create([HeldOutRule(0.0)])
        counts = p | "Counts" >> beam.Create([{"train": len(docs) + 1}])
        near_duplicates = p | "Near" >> beam.Create([removed])
        vocab = chunks | TrainVocabulary(cfg, spill, counts, rule, near_duplicates=near_duplicates)
        assert_that(vocab | beam.Map(lambda v: list(v.tokens)), equal_to([expected]))


def test_create_examples_rejects_a_near_duplicate_and_its_copies_in_their_pool(tmp_path, sample_paragraphs):
    vocab = make_vocab_info(train_vocabulary(sample_paragraphs[:20], 300, True, 1, 200), True)
    tok = build_tokenizer(vocab.tokens, True)
    texts = sample_paragraphs[:8]
    tokenized = [TokenizedDocument.from_sentences(stable_id(t), encode_sentences(tok, [t])) for t in texts]

    def member(d, source, record_id):
        return d, DocumentRecord(d.doc_id, "train", source, record_id, "", d.num_sentences, len(d.ids))

    members = [member(d, "a.jsonl", str(i)) for i, d in enumerate(tokenized)]
    members.append(member(tokenized[5], "c.jsonl", "copy"))  # an exact copy of a removed text
    kept = DocumentName("a.jsonl", 0, "0", tokenized[0].doc_id)
    removed = [NearDuplicate(tokenized[i].doc_id, kept, 0.91) for i in (5, 6)]
    # 2 pools x 3 groups: a removed text reaches every unit of its pool, and is reported once.
    inst = InstancesConfig(max_seq_length=32, pool_size=4, min_work_units=6)
    with beam_pipeline() as p:
        create = CreateExamples(
            inst,
            MaskingConfig(dupe_factor=3),
            OutputConfig(num_shards=1),
            3,
            p | "V" >> beam.Create([vocab]),
            contract.example_schema(len(vocab.tokens), "nsp", "static"),
            p | "Counts" >> beam.Create([{"train": len(members)}]),
            Spill(str(tmp_path / "spill"), 400, 1000),
            near_duplicates=p | "Near" >> beam.Create(removed),
            held_out=p | "Rule" >> beam.Create([HeldOutRule(0.0)]),
        )
        made = p | beam.Create([("train", m) for m in members]) | create
        detail = "near-duplicate of a.jsonl record 0 (estimated Jaccard similarity 0.91)"
        assert_that(
            made.rejects | beam.Map(lambda r: (r.source, r.record_id, r.reason.value, r.detail)),
            equal_to(
                [
                    ("a.jsonl", "5", "near_duplicate", detail),
                    ("a.jsonl", "6", "near_duplicate", detail),
                    ("c.jsonl", "copy", "duplicate", "same text as a.jsonl record 5"),
                ]
            ),
            label="rejects",
        )
        assert_that(
            made.documents | beam.Map(lambda r: r.record_id), equal_to(["0", "1", "2", "3", "4", "7"]), label="kept"
        )
        in_examples = (
            made.examples
            | beam.FlatMap(lambda kv: kv[1].read().column(contract.DOC_ID_A).to_pylist())
            | beam.Distinct()
        )
        assert_that(in_examples, equal_to([tokenized[i].doc_id for i in (0, 1, 2, 3, 4, 7)]), label="examples")


# --- the presets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset", sorted(f.removesuffix(".yaml") for f in os.listdir(os.path.join(CONF, "pipeline", "dedup")))
)
def test_every_dedup_preset_composes(preset):
    register_configs()
    with initialize_config_dir(config_dir=os.path.join(CONF, "pipeline"), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("pipeline", overrides=["output_dir=/tmp/x", f"dedup={preset}"]))
    assert cfg.dedup.enabled == (preset != "none")


def test_default_is_exact_duplicates_only_and_bad_settings_fail_with_what_to_change():
    register_configs()
    with initialize_config_dir(config_dir=os.path.join(CONF, "pipeline"), version_base="1.3"):
        assert not OmegaConf.to_object(compose("pipeline", overrides=["output_dir=/tmp/x"])).dedup.enabled
    with pytest.raises(ValueError, match="not a multiple of dedup.bands"):
        DedupConfig(permutations=128, bands=12)
    with pytest.raises(ValueError, match="dedup.threshold"):
        DedupConfig(threshold=0.0)
    with pytest.raises(ValueError, match="max_bucket_documents"):
        DedupConfig(max_bucket_documents=1)
