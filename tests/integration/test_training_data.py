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
    DataContractError,
    PretrainingExamples,
    RunExpectations,
    ShardedSplit,
    masking_params,
    model_inputs,
    open_pretraining_data,
    validate_manifest,
)
from training.labels import IGNORE_INDEX
from training.models import preset_fields
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
    from training.model import BertConfig

    cfg = BertConfig(vocab_size=8000, max_position_embeddings=128, with_nsp_head=False, **preset_fields("tiny"))
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
    batch = loader.dataset.split.batch

    def recording(indices):
        read.extend(np.asarray(indices).tolist())
        return batch(indices)

    loader.dataset.split.batch = recording
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
    b = list(dataset[BatchRequest(2, indices[::-1].copy())])[::-1]  # other batch layout, same (epoch, example)
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


@pytest.mark.parametrize(
    "whole_word, spans", [(False, False), (True, False), (False, True)], ids=["dynamic", "whole-word", "span"]
)
def test_batch_masks_equal_the_per_example_masks_on_real_rows(dynamic_data, whole_word, spans):
    """A worker masks a micro batch of 256 at once; each example's masks are still exactly those of
    mask_tokens with its own generator, over 3,000 real rows (short ones among them), in every mode."""
    masker = dynamic_data.masker()
    params = dataclasses.replace(masker.params, whole_word=whole_word, spans=spans)
    masker = dataclasses.replace(masker, params=params)
    dataset = PretrainingExamples(dynamic_data.split("train"), masker)
    indices = np.arange(min(len(dataset), 3000))
    stored = dataset.split.examples(indices)
    lengths = np.array([len(e.input_ids) for e in stored])
    assert lengths.min() < 20 and lengths.max() == 128  # short_seq_prob's short sequences, and full ones
    batches = [dataset[BatchRequest(4, indices[i : i + 256])] for i in range(0, len(indices), 256)]
    got = [e for batch in batches for e in batch]
    continued = 0
    for e, s in zip(got, stored):
        masked, positions, labels = mask_tokens(
            np.array(s.input_ids, np.int32),
            masker.rng(4, s.example_id),
            masker.params,
            masker.never_mask,
            masker.mask_id,
            masker.vocab_size,
            masker.is_continuation,
        )
        assert e.example_id == s.example_id and np.array_equal(e.input_ids, masked)
        assert np.array_equal(e.masked_lm_positions, positions) and np.array_equal(e.masked_lm_labels, labels)
        continued += int(masker.is_continuation[np.asarray(s.input_ids)[positions]].sum())
    assert len(got) == len(indices) and continued > 100  # ## pieces among the predictions


def test_batch_shapes_follow_the_data_config(static_data, loader_dynamic_job):
    """Default: T a multiple of data.pad_to_multiple_of (8), P the manifest's cap; with
    data.pad_to_max_length one shape for every training and every eval batch; with unpad the layout
    of the real tokens."""
    cap = static_data.manifest.masking.max_predictions_per_seq
    for k, batch in enumerate(static_data.train_loader(micro_batch_size=32)):
        B, T = batch["input_ids"].shape
        longest = batch["attention_mask"].sum(1).max().item()
        assert T % 8 == 0 and longest <= T < longest + 8
        assert batch["masked_lm_positions"].shape == (32, cap) and "unpad_index" not in batch
        if k == 5:
            break
    cfg = dataclasses.replace(IN_PROCESS, pad_to_max_length=True, eval_micro_batch_size=24)
    data = open_pretraining_data(str(loader_dynamic_job[0]), cfg, SEED, MLM_MODEL, unpad=True)
    cap = data.manifest.masking.max_predictions_per_seq
    shapes = set()
    for loader in (data.train_loader(micro_batch_size=32), data.eval_loader()):
        for k, batch in enumerate(loader):
            shapes.add((tuple(batch["input_ids"].shape), tuple(batch["masked_lm_positions"].shape)))
            mask = batch["attention_mask"]
            assert torch.equal(batch["unpad_index"], mask.reshape(-1).nonzero().squeeze(1))
            assert batch["cu_seqlens"].tolist() == [0] + mask.sum(1).cumsum(0).tolist()
            if k == 10:
                break
    assert shapes == {((32, 128), (32, cap)), ((24, 128), (24, cap))}


def test_padding_rows_change_no_loss(static_data):
    """The last eval batch filled with padding rows scores what the short batch scores."""
    from training.model import BertConfig, BertForPreTraining

    examples = static_data.split("eval").batch(np.arange(5))
    short = dataclasses.replace(static_data.collator(), batch_size=None)(examples)
    padded = static_data.collator(batch_size=8)(examples)
    assert padded["input_ids"].shape[0] == 8 and padded["num_examples"].item() == 5
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=8000, with_nsp_head=True, **preset_fields("tiny"))).eval()
    with torch.no_grad():
        a, b = model(**model_inputs(short)), model(**model_inputs(padded))
    assert torch.isfinite(b.loss) and torch.allclose(a.loss, b.loss, atol=1e-6)
    assert a.mlm_count.item() == b.mlm_count.item() > 0


# --- collation -------------------------------------------------------------------------------


def test_real_batches_fit_the_model(static_data, dynamic_data):
    from training.model import BertConfig, BertForPreTraining

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
        model = BertForPreTraining(BertConfig(vocab_size=8000, with_nsp_head=nsp, **preset_fields("tiny")))
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
    ids = [[i for b in batches for i in b["example_id"].tolist() if i != -1] for batches in ranks]
    tails = []
    for r in range(3):
        assert ids[r] == stored[r::3]
        # the tail is kept, in a last batch of 16 rows like the others, filled with padding rows
        assert {b["input_ids"].shape[0] for b in ranks[r]} == {16}
        last = ranks[r][-1]
        tails.append(last["num_examples"].item())
        assert tails[-1] == len(stored[r::3]) - 16 * (len(ranks[r]) - 1)
        assert (last["example_id"][tails[-1] :] == -1).all() and (last["attention_mask"][tails[-1] :] == 0).all()
    assert min(tails) < 16 and sorted(sum(ids, [])) == sorted(stored)
    # dynamic eval masks are the same at every evaluation
    first, second = (next(iter(dynamic_data.eval_loader(micro_batch_size=8))) for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_span_masked_job_records_its_spans_and_the_loader_masks_spans(tmp_path):
    """masking=span end to end: the manifest says spans, the loader masks runs of whole words with
    one 80/10/10 outcome per run (SpanBERT)."""
    from conftest import IN_MEMORY, SMALL_VOCAB, run_job

    m = run_job(tmp_path, "masking=span", "instances=none", *SMALL_VOCAB, *IN_MEMORY)
    assert m.masking.mode == "dynamic" and m.masking.spans and m.masking.span_p == 0.2
    data = open_pretraining_data(str(tmp_path), IN_PROCESS, SEED, MLM_MODEL)
    params = masking_params(m)
    assert params.spans and params.max_span_words == 10
    dataset = data.train_loader(micro_batch_size=8).dataset
    indices = np.arange(min(len(dataset), 500))
    runs, mixed = [], 0
    special = data.special_tokens
    for e, s in zip(dataset[BatchRequest(0, indices)], dataset.split.examples(indices)):
        pos, original = np.asarray(e.masked_lm_positions), np.asarray(s.input_ids)
        assert np.array_equal(e.masked_lm_labels, original[pos])
        # contiguous runs of predicted positions; a run's tokens share one outcome unless two spans touch
        for run in np.split(pos, np.flatnonzero(np.diff(pos) > 1) + 1):
            runs.append(len(run))
            new = np.asarray(e.input_ids)[run]
            kinds = {0 if t == special.mask else 2 if t == o else 1 for t, o in zip(new, original[run])}
            mixed += len(kinds) > 1
    assert np.mean(runs) > 2.0  # spans of ~3 words; token masking gives runs of ~1.1
    assert mixed < 0.15 * len(runs)
