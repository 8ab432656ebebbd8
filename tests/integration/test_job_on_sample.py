"""The whole Beam job on the real Wikipedia sample: conformance with the original algorithm
(shared/REFERENCE.md section 1), the shard contract, and byte-identical reruns."""

import json
import os

import numpy as np
import pyarrow.compute as pc
import pytest

from conftest import IN_MEMORY, SMALL_VOCAB, run_job
from pipeline import contract
from pipeline.instances import example_ids
from pipeline.masking import MaskingParams, num_to_predict
from shards import read_split, shard_hashes


@pytest.fixture(scope="module")
def train(sample_job):
    out, _ = sample_job
    return read_split(out, "train")


def column(table, name):
    return table.column(name).to_pylist()


def test_manifest_describes_the_shards(sample_job):
    out, m = sample_job
    assert m.schema_version == contract.SCHEMA_VERSION and m.objective == "nsp" and m.masking.mode == "static"
    assert m.masking.dupe_factor == 5 and m.max_seq_length == 128 and m.seed == 7
    assert contract.read_vocab(os.path.join(out, m.vocab_file))[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert m.special_tokens == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    for shard in m.shards:
        path = os.path.join(out, shard.file)
        assert contract.sha256_file(path) == shard.sha256 and os.path.getsize(path) == shard.bytes
        assert contract.open_shard(path).num_rows == shard.rows
    stats = m.statistics
    assert sum(s.rows for s in m.shards_of("train")) == stats["examples"]["train"]
    assert sum(s.rows for s in m.shards_of("eval")) == stats["examples"]["eval"] > 0
    assert stats["documents_read"]["wikipedia_xml"] == 97
    assert stats["rejected"]["redirect"] == 99 and stats["rejected"]["disambiguation"] == 8
    assert m.config["seed"] == 7 and m.config["instances"]["max_seq_length"] == 128
    # Only the contract's entries remain: temporary shards and spilled example batches are gone.
    assert sorted(os.listdir(out)) == ["documents", "eval", "manifest.json", "rejects", "train", "vocab.txt"]


def test_every_kept_document_is_in_the_provenance_table_once(sample_job, train):
    out, m = sample_job
    docs = read_split(out, "documents")
    ids = column(docs, "doc_id")
    assert len(ids) == len(set(ids)) == sum(m.statistics["documents_kept"].values())
    known = set(ids)
    assert set(column(train, "doc_id_a")) <= known and set(column(train, "doc_id_b")) <= known
    split_of = dict(zip(ids, column(docs, "split")))
    eval_docs = {d for d, s in split_of.items() if s == "eval"}
    # No held-out document leaks into training examples, as A or as a random B.
    assert not (set(column(train, "doc_id_a")) | set(column(train, "doc_id_b"))) & eval_docs


def test_lengths_and_layout_within_bounds(sample_job, train):
    _, m = sample_job
    sp = m.special_tokens
    for ids, b in zip(column(train, "input_ids"), column(train, "segment_b_start")):
        assert 5 <= len(ids) <= m.max_seq_length
        assert ids[0] == sp["cls"] and ids[-1] == sp["sep"] and ids[b - 1] == sp["sep"]
        assert 2 < b < len(ids)


def test_nsp_random_pairs_come_from_other_documents(train):
    labels = np.array(column(train, "next_sentence_label"))
    a, b = np.array(column(train, "doc_id_a")), np.array(column(train, "doc_id_b"))
    assert np.all((a != b) == (labels == 1))


def test_nsp_random_fraction(train):
    # The original algorithm: a coin flip per multi-sentence chunk, and always random for a chunk
    # of one sentence. With short_seq_prob 0.1 the short passes make many one-sentence chunks, so
    # the overall fraction sits a little above one half (balanced case: test_nsp_balance_*).
    frac = np.mean(column(train, "next_sentence_label"))
    assert 0.5 < frac < 0.56


def test_masked_count_per_example_follows_the_formula(sample_job, train):
    params = MaskingParams(max_predictions_per_seq=sample_job[1].masking.max_predictions_per_seq)
    for ids, pos in zip(column(train, "input_ids"), column(train, "masked_lm_positions")):
        assert len(pos) == num_to_predict(len(ids), params)
        assert pos == sorted(set(pos)) and 0 < pos[0] and pos[-1] < len(ids) - 1


def test_80_10_10(sample_job, train):
    mask_id = sample_job[1].special_tokens["mask"]
    shown = pc.list_flatten(train.column("input_ids")).to_numpy()
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in column(train, "input_ids")])[:-1]])
    pos = train.column("masked_lm_positions")
    rows = np.repeat(offsets, pc.list_value_length(pos).to_numpy())
    at = shown[rows + pc.list_flatten(pos).to_numpy().astype(np.int64)]
    original = pc.list_flatten(train.column("masked_lm_ids")).to_numpy()
    masked, kept = np.mean(at == mask_id), np.mean(at == original)
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - masked - kept - 0.1) < 0.02


def test_short_sequence_fraction(sample_job, train):
    """Recover each (document, pass) from example ids, then count the passes whose continuation
    examples stop short of the maximum: with a normal target every non-final continuation is full."""
    out, m = sample_job
    row = {i: r for r, i in enumerate(column(train, "example_id"))}
    ids_of = lambda doc, p: example_ids(m.seed, doc, p, 1000).tolist()  # noqa: E731  (more than any pass makes)
    lengths = pc.list_value_length(train.column("input_ids")).to_numpy()
    labels = column(train, "next_sentence_label")
    docs = read_split(out, "documents")
    short = total = 0
    for doc, split in zip(column(docs, "doc_id"), column(docs, "split")):
        for p in range(m.masking.dupe_factor):
            rows = []
            for i in ids_of(doc, p):
                if i not in row:
                    break
                rows.append(row[i])
            if split == "train" and len(rows) >= 3:
                total += 1
                short += any(lengths[r] < m.max_seq_length for r in rows[:-1] if labels[r] == 0)
    assert total > 300 and abs(short / total - 0.1) < 0.04


def test_shards_open_with_hugging_face_datasets(sample_job, train):
    import datasets

    out, m = sample_job
    files = [os.path.join(str(out), s.file) for s in m.shards_of("train")]
    ds = datasets.load_dataset(
        "arrow", data_files={"train": files}, split="train", cache_dir=os.path.join(str(out), "..", "hf_cache")
    )
    assert ds.num_rows == train.num_rows
    assert ds[0]["input_ids"] == column(train, "input_ids")[0]


def test_rejects_are_written_with_reasons(sample_job):
    out, m = sample_job
    with open(os.path.join(out, "rejects", "part-00000-of-00001.jsonl"), encoding="utf-8") as f:
        rejects = [json.loads(line) for line in f]
    by_reason = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
        assert r["source"].endswith(".bz2") and r["action"] in ("dropped", "repaired")
    assert by_reason == m.statistics["rejected"]


def test_same_seed_is_byte_identical_across_workers_retries_and_work_units(sample_job, tmp_path):
    """2 worker processes vs 1 in-process worker replaying every bundle once more (a retry);
    the sample is one pool, split into 5 units (one per pass) there and kept whole here."""
    out, _ = sample_job
    run_job(
        tmp_path / "again",
        "seed=7",
        "instances.eval_fraction=0.05",
        *SMALL_VOCAB,
        *IN_MEMORY,
        "runner.extra=['--direct_runner_bundle_repeat=1']",
        "instances.min_work_units=1",
    )
    assert shard_hashes(out) == shard_hashes(tmp_path / "again")


def test_shuffle_chunk_sizes_do_not_change_a_byte(sample_job, tmp_path):
    """Every record, document and pool member its own chunk file (the finest spread a shuffle of
    data would give) against the defaults' few large chunks: the same shards, no spill left."""
    out, _ = sample_job
    run_job(
        tmp_path / "fine",
        "seed=7",
        "instances.eval_fraction=0.05",
        *SMALL_VOCAB,
        *IN_MEMORY,
        "shuffle.chunk_bytes=1",
        "shuffle.pool_chunk_bytes=1",
    )
    assert shard_hashes(out) == shard_hashes(tmp_path / "fine")
    assert not [p for p in os.listdir(tmp_path / "fine") if p.startswith(".")]


def test_another_seed_gives_other_shards(sample_job, tmp_path):
    out, _ = sample_job
    run_job(tmp_path / "seed8", "seed=8", "instances.eval_fraction=0.05", *SMALL_VOCAB, *IN_MEMORY)
    a, b = shard_hashes(out), shard_hashes(tmp_path / "seed8")
    assert a["vocab.txt"] == b["vocab.txt"]  # the vocabulary depends on the text, not the seed
    assert a["train/part-00000-of-00001.arrow"] != b["train/part-00000-of-00001.arrow"]


def vocab_of(sample_job):
    out, m = sample_job
    return f"tokenizer.vocab_file={os.path.join(out, m.vocab_file)}"


def test_nsp_balance_where_the_coin_decides(sample_job, tmp_path):
    m = run_job(
        tmp_path / "o",
        "tokenizer=vocab_file",
        vocab_of(sample_job),
        "instances.short_seq_prob=0",
        "masking.dupe_factor=3",
        *IN_MEMORY,
    )
    labels = np.array(column(read_split(tmp_path / "o", "train"), "next_sentence_label"))
    assert len(labels) > 10_000 and abs(labels.mean() - 0.5) < 0.02
    assert m.statistics["sentence_pair_negatives"]["train"] == labels.sum()


def test_sop_dynamic_whole_word(sample_job, tmp_path):
    m = run_job(
        tmp_path / "o",
        "tokenizer=vocab_file",
        vocab_of(sample_job),
        "instances=sop",
        "masking=dynamic",
        "masking.whole_word=true",
        *IN_MEMORY,
    )
    t = read_split(tmp_path / "o", "train")
    assert m.objective == "sop" and m.masking.mode == "dynamic" and m.masking.whole_word
    assert contract.MASKED_LM_POSITIONS not in t.column_names
    assert 4 not in set(pc.list_flatten(t.column("input_ids")).to_numpy().tolist())  # stored unmasked
    assert column(t, "doc_id_a") == column(t, "doc_id_b")  # SOP pairs never leave the document
    assert abs(np.mean(column(t, "next_sentence_label")) - 0.5) < 0.03


def test_none_objective_packs_sentences(sample_job, tmp_path):
    m = run_job(
        tmp_path / "o",
        "tokenizer=vocab_file",
        vocab_of(sample_job),
        "instances=none",
        "instances.short_seq_prob=0",
        "masking.dupe_factor=1",
        *IN_MEMORY,
    )
    t = read_split(tmp_path / "o", "train")
    assert contract.NEXT_SENTENCE_LABEL not in t.column_names
    lengths = pc.list_value_length(t.column("input_ids")).to_numpy()
    assert np.all(column(t, "segment_b_start") == lengths)
    # Whole sentences packed: no example exceeds the maximum, and most come close to it.
    assert lengths.max() <= 128 and np.median(lengths) > 100
    assert m.statistics["example_tokens"]["train"] == lengths.sum()
