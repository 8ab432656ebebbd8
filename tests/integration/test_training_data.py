"""The trainer's data side on real shards of the real sample: the manifest check, rank-disjoint
deterministic order, resume by index arithmetic, static and dynamic masks, collation, workers."""

import dataclasses
import json
import os
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline import contract
from pipeline.masking import mask_tokens, num_to_predict
from pipeline.seeding import rng_for
from pipeline.tokenization import masking_vocabulary
from shards import read_split
from training.config import DataConfig
from training.data import (
    Collator,
    DataContractError,
    Example,
    RunExpectations,
    ShardedSplit,
    masking_params,
    model_inputs,
    open_pretraining_data,
    validate_manifest,
)
from training.labels import IGNORE_INDEX
from training.sampler import BatchRequest, TrainBatchPlan, epoch_order

NSP_MODEL = RunExpectations(vocab_size=8000, max_position_embeddings=512, with_nsp_head=True)
MLM_MODEL = RunExpectations(vocab_size=8000, max_position_embeddings=512, with_nsp_head=False)
IN_PROCESS = DataConfig(num_workers=0, pin_memory=False)
SEED = 11


@pytest.fixture(scope="module")
def static_data(loader_static_job):
    out, _ = loader_static_job
    return open_pretraining_data(str(out), IN_PROCESS, SEED, NSP_MODEL)


@pytest.fixture(scope="module")
def dynamic_data(loader_dynamic_job):
    out, _ = loader_dynamic_job
    return open_pretraining_data(str(out), IN_PROCESS, SEED, MLM_MODEL)


@pytest.fixture(scope="module")
def static_rows(loader_static_job):
    """example_id -> the stored row (input_ids, masked_lm_positions, masked_lm_ids, ...)."""
    table = read_split(loader_static_job[0], "train")
    return {row["example_id"]: row for row in table.to_pylist()}


def epoch_ids(loader):
    """(batches, B) example ids of the rest of the loader's epoch."""
    return np.stack([b["example_id"].numpy() for b in loader])


def mirror(src, dst, edit=None):
    """A copy of a job's output with symlinked shards, so a test may edit manifest or vocabulary."""
    os.makedirs(dst)
    for name in ("train", "eval"):
        os.symlink(os.path.join(src, name), os.path.join(dst, name))
    for name in (contract.MANIFEST_FILE, contract.VOCAB_FILE):
        shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    return str(dst)


# --- the manifest check --------------------------------------------------------------------


def check(out, expect):
    validate_manifest(contract.read_manifest(str(out)), str(out), expect)


def test_matching_run_passes_and_returns_the_vocabulary(loader_static_job, loader_dynamic_job):
    out, m = loader_static_job
    vocab = validate_manifest(m, str(out), RunExpectations(8000, 128, True, 0, m.vocab_sha256))
    assert len(vocab) == 8000 and vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    check(loader_dynamic_job[0], MLM_MODEL)


def test_vocabulary_edited_next_to_the_shards(loader_static_job, tmp_path):
    d = mirror(loader_static_job[0], tmp_path / "d")
    with open(os.path.join(d, contract.VOCAB_FILE), "a", encoding="utf-8") as f:
        f.write("extra\n")
    with pytest.raises(DataContractError, match="vocab.txt has sha256 .* but the manifest records .*restore"):
        check(d, NSP_MODEL)


def test_vocabulary_other_than_the_run_expects(loader_static_job):
    out, m = loader_static_job
    with pytest.raises(
        DataContractError, match=f"tokenized with the vocabulary of sha256 {m.vocab_sha256} but this run expects 00ff"
    ):
        check(out, RunExpectations(8000, 512, True, vocab_sha256="00ff"))


def test_vocab_size_against_the_model(loader_static_job):
    with pytest.raises(
        DataContractError,
        match="vocabulary has 8000 ids but the model's vocab_size is 30522: set the model's vocab_size=8000",
    ):
        check(loader_static_job[0], RunExpectations(30522, 512, True))


def test_sequence_length_against_positions(loader_static_job):
    with pytest.raises(
        DataContractError,
        match="max_seq_length=128 .* max_position_embeddings=64: raise the "
        "model's max_position_embeddings to at least 128",
    ):
        check(loader_static_job[0], RunExpectations(8000, 64, True))


def test_sequence_length_against_the_data_config(loader_static_job):
    out = str(loader_static_job[0])
    phase2 = dataclasses.replace(IN_PROCESS, max_seq_length=512)
    with pytest.raises(
        DataContractError, match="built with max_seq_length=128 but the run expects data.max_seq_length=512"
    ):
        open_pretraining_data(out, phase2, SEED, NSP_MODEL)
    open_pretraining_data(out, dataclasses.replace(IN_PROCESS, max_seq_length=128), SEED, NSP_MODEL)


def test_split_names(loader_static_job):
    out = str(loader_static_job[0])
    with pytest.raises(DataContractError, match="no split 'dev'.*set data.train_split"):
        open_pretraining_data(out, dataclasses.replace(IN_PROCESS, train_split="dev"), SEED, NSP_MODEL)
    with pytest.raises(DataContractError, match="no split 'heldout'.*set data.eval_split"):
        open_pretraining_data(out, dataclasses.replace(IN_PROCESS, eval_split="heldout"), SEED, NSP_MODEL)


def test_empty_train_split_says_it_is_empty_and_what_to_do(loader_static_job, tmp_path):
    """A train split listed with 0 rows, as a job wrote it before the job itself refused that:
    the real output with its train shards' row counts set to 0 (the check comes before any read)."""
    d = mirror(str(loader_static_job[0]), tmp_path / "d")
    manifest = json.load(open(os.path.join(d, contract.MANIFEST_FILE)))
    for shard in manifest["shards"]:
        if shard["split"] == "train":
            shard.update(rows=0, tokens=0)
    json.dump(manifest, open(os.path.join(d, contract.MANIFEST_FILE), "w"))
    with pytest.raises(
        DataContractError,
        match=r"split 'train' of .* is empty \(0 examples\).*rejects.*"
        r"rerun the data job",
    ) as e:
        open_pretraining_data(d, IN_PROCESS, SEED, NSP_MODEL)
    assert "its splits" not in str(e.value)


def test_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DataContractError, match=f"{tmp_path / 'nowhere'} does not exist"):
        open_pretraining_data(str(tmp_path / "nowhere"), IN_PROCESS, SEED, NSP_MODEL)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataContractError, match="is not a directory"):
        open_pretraining_data(str(tmp_path / "file"), IN_PROCESS, SEED, NSP_MODEL)


def test_objective_against_the_heads(loader_static_job, loader_dynamic_job):
    with pytest.raises(DataContractError, match="objective 'nsp'.* no NSP head: set the model's with_nsp_head=true"):
        check(loader_static_job[0], MLM_MODEL)
    with pytest.raises(
        DataContractError, match="objective 'none'.* has an NSP head: set the model's with_nsp_head=false"
    ):
        check(loader_dynamic_job[0], NSP_MODEL)


def test_pad_id_and_every_problem_at_once(loader_static_job):
    with pytest.raises(DataContractError) as e:
        check(loader_static_job[0], RunExpectations(30522, 64, False, pad_token_id=1))
    lines = str(e.value).splitlines()
    assert len(lines) == 5 and "set the model's pad_token_id=0" in str(e.value)


def test_special_tokens_schema_version_and_missing_shard(loader_static_job, tmp_path):
    src = loader_static_job[0]
    d = mirror(src, tmp_path / "special")
    manifest = json.load(open(os.path.join(d, contract.MANIFEST_FILE)))
    manifest["special_tokens"]["mask"] = 5
    manifest["shards"][0]["bytes"] += 1
    manifest["shards"].append(dict(manifest["shards"][0], file="train/part-99.arrow"))
    json.dump(manifest, open(os.path.join(d, contract.MANIFEST_FILE), "w"))
    with pytest.raises(DataContractError) as e:
        check(d, NSP_MODEL)
    message = str(e.value)
    assert "special token ids" in message and "truncated" in message and "part-99.arrow is listed" in message

    d = mirror(src, tmp_path / "version")
    manifest = json.load(open(os.path.join(d, contract.MANIFEST_FILE)))
    json.dump(dict(manifest, schema_version=99), open(os.path.join(d, contract.MANIFEST_FILE), "w"))
    with pytest.raises(DataContractError, match="schema version 99"):
        open_pretraining_data(d, IN_PROCESS, SEED, NSP_MODEL)


def test_shards_whose_columns_disagree_with_the_manifest(loader_static_job, tmp_path):
    d = mirror(loader_static_job[0], tmp_path / "d")
    manifest = json.load(open(os.path.join(d, contract.MANIFEST_FILE)))
    json.dump(dict(manifest, objective="none"), open(os.path.join(d, contract.MANIFEST_FILE), "w"))
    data = open_pretraining_data(d, IN_PROCESS, SEED, MLM_MODEL)  # the manifest alone looks fine
    with pytest.raises(DataContractError, match="columns .* differ from what the manifest implies"):
        data.train_loader(micro_batch_size=8)


def test_expectations_from_the_model_config():
    from training.model import PRESETS, BertConfig

    cfg = BertConfig(vocab_size=8000, max_position_embeddings=128, with_nsp_head=False, **PRESETS["tiny"])
    assert RunExpectations.of_model(cfg) == RunExpectations(8000, 128, False, 0, None, None)


# --- memory-mapped rows ----------------------------------------------------------------------


def test_split_is_memory_mapped_and_indexed_across_shards(loader_static_job, static_rows):
    out, m = loader_static_job
    before = pa.total_allocated_bytes()
    split = ShardedSplit(str(out), m, "train").open()
    assert pa.total_allocated_bytes() - before < 1 << 20  # shards mapped, not read into Arrow's pool
    assert len(m.shards_of("train")) == 3 and len(split) == sum(s.rows for s in m.shards_of("train"))
    starts = np.cumsum([0] + [s.rows for s in m.shards_of("train")])
    shard, row = split.locate(np.array([0, starts[1] - 1, starts[1], len(split) - 1]))
    assert shard.tolist() == [0, 0, 1, 2] and row.tolist() == [0, starts[1] - 1, 0, starts[3] - starts[2] - 1]
    stored = read_split(out, "train")  # the same rows in manifest order
    idx = np.array([0, starts[1], len(split) - 1, 12345])
    for i, e in zip(idx, split.examples(idx)):
        assert e.example_id == stored.column("example_id")[int(i)].as_py()
        assert not e.input_ids.flags.owndata  # a view of the mapped file
    # Pickled (spawned DataLoader workers): only paths travel; the copy maps the files again.
    blob = pickle.dumps(split)
    assert len(blob) < 20_000
    assert [e.example_id for e in pickle.loads(blob).examples(idx)] == [e.example_id for e in split.examples(idx)]
    with pytest.raises(IndexError):
        split.examples(np.array([len(split)]))


# --- order: ranks, seeds, epochs --------------------------------------------------------------


def test_two_ranks_read_disjoint_rows_covering_the_epoch(static_data, static_rows):
    n = len(static_rows)  # example ids are unique, so they identify rows
    ranks = [static_data.train_loader(micro_batch_size=100, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == n // 200
    ids = [epoch_ids(loader) for loader in ranks]
    assert ids[0].shape == ids[1].shape == (n // 200, 100)
    assert not set(ids[0].ravel()) & set(ids[1].ravel())
    split = static_data.split("train")
    order = epoch_order(SEED, 0, n)
    consumed = (n // 200) * 200
    expected = {e.example_id for e in split.examples(order[:consumed])}
    assert set(ids[0].ravel()) | set(ids[1].ravel()) == expected  # the tail (< one global batch) dropped
    # rank r reads positions r, r+2, r+4, ... of the epoch's permutation
    assert [e.example_id for e in split.examples(order[1:200:2])] == ids[1][0].tolist()
    assert ranks[0].state_dict()["epoch"] == 1 and ranks[0].state_dict()["samples_consumed"] == 0


def test_same_seed_and_epoch_same_order_other_epoch_or_seed_other_order(static_data, loader_static_job):
    def first_batches(seed, epoch, k=3):
        data = open_pretraining_data(str(loader_static_job[0]), IN_PROCESS, seed, NSP_MODEL)
        loader = data.train_loader(micro_batch_size=16)
        loader.load_state_dict(dict(loader.state_dict(), epoch=epoch))
        out = []
        for batch in loader:
            out.append(batch["example_id"].tolist())
            if len(out) == k:
                return out

    assert first_batches(11, 0) == first_batches(11, 0)
    assert first_batches(11, 3) == first_batches(11, 3)
    assert first_batches(11, 0) != first_batches(11, 1)
    assert first_batches(11, 0) != first_batches(12, 0)


def test_unshuffled_epochs_read_storage_order(loader_static_job, static_data):
    cfg = dataclasses.replace(IN_PROCESS, shuffle=False)
    data = open_pretraining_data(str(loader_static_job[0]), cfg, SEED, NSP_MODEL)
    loader = data.train_loader(rank=1, world_size=2, micro_batch_size=4)
    loader.load_state_dict(dict(loader.state_dict(), epoch=5))
    batch = next(iter(loader))
    stored = [e.example_id for e in data.split("train").examples(np.arange(1, 8, 2))]
    assert batch["example_id"].tolist() == stored


def test_plan_arithmetic():
    plan = TrainBatchPlan(num_samples=103, micro_batch_size=5, seed=1, rank=2, world_size=3)
    order = epoch_order(1, 4, 103)
    assert np.array_equal(order, rng_for("epoch_order", 1, 4).permutation(103))
    batches = list(plan.rank_batches(epoch=4))
    assert len(batches) == plan.batches_per_epoch() == 103 // 15
    assert batches[1].tolist() == order[15 + 2 : 30 : 3].tolist()
    resumed = list(plan.rank_batches(epoch=4, start=37))  # a prefix of 37 consumed by another layout
    assert len(resumed) == (103 - 37) // 15 and resumed[0].tolist() == order[39:52:3].tolist()
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TrainBatchPlan(num_samples=10, micro_batch_size=4, seed=0, rank=0, world_size=3)


# --- resume ------------------------------------------------------------------------------------


def spy_on_reads(loader):
    """Record every row index the loader's dataset reads."""
    read = []
    examples = loader.dataset.split.examples

    def recording(indices):
        read.extend(np.asarray(indices).tolist())
        return examples(indices)

    loader.dataset.split.examples = recording
    return read


def test_resume_mid_epoch_gives_exactly_the_remaining_batches_without_rereading(dynamic_data):
    run = dynamic_data.train_loader(micro_batch_size=256)
    batches = []
    for batch in run:
        batches.append(batch)
        if len(batches) == 7:
            break
    state = run.state_dict()
    assert state["batches_consumed"] == 7 and state["samples_consumed"] == 7 * 256 and state["epoch"] == 0
    rest = list(run)
    resumed = dynamic_data.train_loader(micro_batch_size=256)
    resumed.load_state_dict(state)
    read = spy_on_reads(resumed)
    assert len(resumed) == len(rest)
    again = list(resumed)
    assert len(again) == len(rest)
    for a, b in zip(rest, again):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same rows, same masks
    first = {i for b in batches for i in b["example_id"].tolist()}
    split = dynamic_data.split("train")
    assert not first & {e.example_id for e in split.examples(np.array(read))}  # no earlier row re-read
    assert len(read) == sum(len(b["example_id"]) for b in rest)
    assert resumed.state_dict()["epoch"] == 1


def test_resume_at_another_world_size_and_micro_batch(dynamic_data):
    """Saved at W=2, B=64 after 5 steps, resumed at W=3, B=50: every row of the epoch's prefix once."""
    old = [dynamic_data.train_loader(micro_batch_size=64, rank=r, world_size=2) for r in (0, 1)]
    seen = []
    for loader in old:
        for k, batch in enumerate(loader):
            seen += batch["example_id"].tolist()
            if k == 4:
                break
    state = old[0].state_dict()
    assert state == old[1].state_dict() and state["samples_consumed"] == 5 * 128
    new = [dynamic_data.train_loader(micro_batch_size=50, rank=r, world_size=3) for r in range(3)]
    for loader in new:
        loader.load_state_dict(state)
        seen += epoch_ids(loader).ravel().tolist()
    n = len(dynamic_data.split("train"))
    assert len(seen) == len(set(seen)) == 640 + (n - 640) // 150 * 150


def test_resume_refuses_another_seed_or_split(dynamic_data, static_data):
    state = dynamic_data.train_loader(micro_batch_size=8).state_dict()
    with pytest.raises(ValueError, match="resume with seed=12"):
        dynamic_data.train_loader(micro_batch_size=8).load_state_dict(dict(state, seed=12))
    with pytest.raises(ValueError, match="same shards"):
        static_data.train_loader(micro_batch_size=8).load_state_dict(state)
    with pytest.raises(ValueError, match="data.shuffle=False"):
        dynamic_data.train_loader(micro_batch_size=8).load_state_dict(dict(state, shuffle=False))


# --- masks -----------------------------------------------------------------------------------


def test_static_masks_are_the_stored_ones(static_data, static_rows):
    batch = next(iter(static_data.train_loader(micro_batch_size=64)))
    for i, example_id in enumerate(batch["example_id"].tolist()):
        row = static_rows[example_id]
        T, P = len(row["input_ids"]), len(row["masked_lm_positions"])
        assert batch["input_ids"][i, :T].tolist() == row["input_ids"]
        assert batch["masked_lm_positions"][i, :P].tolist() == row["masked_lm_positions"]
        assert batch["masked_lm_labels"][i, :P].tolist() == row["masked_lm_ids"]
        assert batch["next_sentence_label"][i].item() == row["next_sentence_label"]
        types = contract.token_type_ids(row["segment_b_start"], T)
        assert batch["token_type_ids"][i, :T].tolist() == types.tolist()


def test_dynamic_masks_reproducible_per_seed_epoch_example(dynamic_data, loader_dynamic_job):
    out, m = loader_dynamic_job
    dataset = dynamic_data.train_loader(micro_batch_size=8).dataset
    indices = np.arange(40, 48)
    a = dataset[BatchRequest(2, indices)]
    b = dataset[BatchRequest(2, indices[::-1].copy())][::-1]  # other batch layout, same (epoch, example)
    c = dataset[BatchRequest(3, indices)]
    for x, y in zip(a, b):
        assert np.array_equal(x.input_ids, y.input_ids) and np.array_equal(x.masked_lm_positions, y.masked_lm_positions)
    assert sum(not np.array_equal(x.masked_lm_positions, z.masked_lm_positions) for x, z in zip(a, c)) >= 6
    # exactly mask_tokens with the generator of ("dynamic_masking", seed, epoch, example_id)
    tables = masking_vocabulary(contract.read_vocab(os.path.join(out, m.vocab_file)))
    stored = dataset.split.examples(indices)
    for e, s in zip(a, stored):
        rng = rng_for("dynamic_masking", SEED, 2, s.example_id)
        masked, positions, labels = mask_tokens(
            np.array(s.input_ids, np.int32),
            rng,
            masking_params(m),
            tables.never_mask,
            tables.mask_id,
            tables.size,
            tables.is_continuation,
        )
        assert np.array_equal(e.input_ids, masked) and np.array_equal(e.masked_lm_positions, positions)
        assert np.array_equal(e.masked_lm_labels, labels)


def test_dynamic_masks_follow_the_masking_rules(dynamic_data, loader_dynamic_job):
    out, m = loader_dynamic_job
    special = dynamic_data.special_tokens
    params = masking_params(m)
    dataset = dynamic_data.train_loader(micro_batch_size=8).dataset
    indices = np.arange(min(len(dataset), 2000))
    outcomes = []
    for e, s in zip(dataset[BatchRequest(0, indices)], dataset.split.examples(indices)):
        original = np.asarray(s.input_ids)
        assert len(s.masked_lm_positions) == 0  # stored unmasked
        pos = np.asarray(e.masked_lm_positions)
        candidates = ~np.isin(original, [special.cls, special.sep, special.pad, special.mask])
        assert np.all(np.diff(pos) > 0) and candidates[pos].all()
        assert len(pos) == min(num_to_predict(len(original), params), candidates.sum())
        assert np.array_equal(e.masked_lm_labels, original[pos])
        untouched = np.ones(len(original), bool)
        untouched[pos] = False
        assert np.array_equal(e.input_ids[untouched], original[untouched])
        new = e.input_ids[pos]
        outcomes += np.where(new == special.mask, 0, np.where(new == original[pos], 2, 1)).tolist()
    frac = np.bincount(outcomes, minlength=3) / len(outcomes)  # [MASK], random, kept
    assert len(outcomes) > 15_000
    assert abs(frac[0] - 0.8) < 0.02 and abs(frac[1] - 0.1) < 0.02 and abs(frac[2] - 0.1) < 0.02


# --- collation -------------------------------------------------------------------------------


def test_collation_pads_to_the_longest_with_minus_100_labels():
    def example(ids, b_start, positions, label, example_id):
        ids = np.array(ids)
        return Example(ids, b_start, np.array(positions), ids[positions] + 100, label, example_id)

    examples = [example([2, 10, 11, 3, 12, 3], 4, [1, 4], 1, 7), example([2, 13, 3], 3, [1], 0, 9)]
    batch = Collator(pad_id=0, with_sentence_label=True)(examples)
    assert batch["input_ids"].tolist() == [[2, 10, 11, 3, 12, 3], [2, 13, 3, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert batch["masked_lm_positions"].tolist() == [[1, 4], [1, 0]]
    assert batch["masked_lm_labels"].tolist() == [[110, 112], [113, IGNORE_INDEX]]
    assert batch["next_sentence_label"].tolist() == [1, 0] and batch["example_id"].tolist() == [7, 9]
    assert batch["num_tokens"].item() == 9
    assert all(t.dtype == torch.long for t in batch.values())
    padded = Collator(pad_id=0, with_sentence_label=False, pad_to_multiple_of=8)(examples)
    assert padded["input_ids"].shape == (2, 8) and "next_sentence_label" not in padded
    assert padded["attention_mask"].sum().item() == 9


def test_real_batches_fit_the_model(static_data, dynamic_data):
    from training.model import PRESETS, BertConfig, BertForPreTraining

    for data, nsp in ((static_data, True), (dynamic_data, False)):
        batch = next(iter(data.train_loader(micro_batch_size=8)))
        B, T = batch["input_ids"].shape
        assert T <= 128 and batch["masked_lm_labels"].shape == batch["masked_lm_positions"].shape
        assert batch["num_tokens"].item() == batch["attention_mask"].sum().item()
        assert ("next_sentence_label" in batch) == nsp
        lengths = batch["attention_mask"].sum(1)
        assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
        assert (batch["masked_lm_positions"] < lengths[:, None]).all()
        torch.manual_seed(0)
        model = BertForPreTraining(BertConfig(vocab_size=8000, with_nsp_head=nsp, **PRESETS["tiny"]))
        out = model(**model_inputs(batch))
        assert torch.isfinite(out.loss) and out.mlm_count.item() == (batch["masked_lm_labels"] != IGNORE_INDEX).sum()


# --- workers and eval ------------------------------------------------------------------------


def test_workers_give_the_same_batches(loader_dynamic_job, dynamic_data):
    cfg = DataConfig(num_workers=2, prefetch_factor=2, pin_memory=False)
    with_workers = open_pretraining_data(str(loader_dynamic_job[0]), cfg, SEED, MLM_MODEL).train_loader(
        micro_batch_size=32, rank=1, world_size=2
    )
    in_process = dynamic_data.train_loader(micro_batch_size=32, rank=1, world_size=2)
    for loader in (with_workers, in_process):
        loader.load_state_dict(dict(loader.state_dict(), epoch=1, samples_consumed=64 * 3))
    got = []
    for loader in (with_workers, in_process):
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == 6:
                break
        got.append(batches)
    for a, b in zip(*got):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert with_workers.state_dict() == in_process.state_dict()


def test_eval_is_unshuffled_disjoint_and_keeps_the_tail(static_data, dynamic_data, loader_static_job):
    stored = read_split(loader_static_job[0], "eval").column("example_id").to_pylist()
    ranks = [list(static_data.eval_loader(micro_batch_size=16, rank=r, world_size=3)) for r in range(3)]
    ids = [[i for b in batches for i in b["example_id"].tolist()] for batches in ranks]
    for r in range(3):
        assert ids[r] == stored[r::3]
    assert sorted(sum(ids, [])) == sorted(stored)
    # dynamic eval masks are the same at every evaluation
    first, second = (next(iter(dynamic_data.eval_loader(micro_batch_size=8))) for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
