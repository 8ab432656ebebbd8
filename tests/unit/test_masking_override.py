"""data.masking: training batches masked at any rate (30% as MosaicBERT and ModernBERT, ELECTRA's
85/15/0 split) on dynamic shards without rebuilding them, while eval batches keep the manifest's rule.

On shards written here through the data contract from the real Wikipedia sample in bert-base-uncased's
pieces: manifest masking dynamic at BERT's 15% with P=20, length 128, no sentence-pair task; most
examples full length, one in five shorter (as short_seq_prob makes them)."""

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from paths import real_uncased_vocab
from pipeline import contract
from pipeline.masking import mask_tokens, num_to_predict
from pipeline.tokenization import build_tokenizer, encode_sentences
from test_training_config import REQUIRED, compose_train
from training import checkpoint as ckpt
from training.config import ConfigError, DataConfig, MaskingOverride
from training.data import (
    RunExpectations,
    masking_params,
    open_pretraining_data,
    training_masking,
)
from training.labels import IGNORE_INDEX
from training.sampler import BatchRequest

LENGTH = 128
SEED = 5
ELECTRA = {"mask_prob": 0.85, "random_prob": 0.0}


# --- shards from the real sample ------------------------------------------------------------


def sample_sequences(pieces: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` sequences [CLS] text [SEP] cut from the real text, LENGTH tokens or (one in five) fewer."""
    cls_id, sep_id = 101, 102  # bert-base-uncased
    out = []
    for _ in range(count):
        length = LENGTH if rng.random() < 0.8 else int(rng.integers(8, LENGTH))
        start = int(rng.integers(0, len(pieces) - length))
        out.append(np.concatenate([[cls_id], pieces[start : start + length - 2], [sep_id]]).astype(np.int32))
    return out


def write_split(out: str, split: str, sequences: list[np.ndarray], first_id: int, mode: str, vocab_size: int):
    """One shard of ``sequences`` (stored unmasked) under out/split; its ShardInfo."""
    n = len(sequences)
    none = np.zeros(n + 1, np.int64)
    columns = contract.ExampleColumns(
        input_ids=np.concatenate(sequences),
        offsets=np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64),
        segment_b_start=np.array([len(s) for s in sequences]),  # one segment
        next_sentence_label=np.full(n, -1, np.int8),
        masked_lm_positions=np.zeros(0, np.int32),
        masked_offsets=none,
        masked_lm_ids=np.zeros(0, np.int32),
        example_id=np.arange(first_id, first_id + n),
        doc_id_a=np.zeros(n, np.int64),
        doc_id_b=np.zeros(n, np.int64),
    )
    schema = contract.example_schema(vocab_size, "none", mode)
    relative = f"{split}/part-00000-of-00001.arrow"
    os.makedirs(os.path.join(out, split))
    path = os.path.join(out, relative)
    with pa.ipc.new_file(path, schema) as writer:
        writer.write_batch(contract.to_record_batch(columns, schema))
    tokens = int(columns.offsets[-1])
    return contract.ShardInfo(relative, split, n, tokens, contract.sha256_file(path), os.path.getsize(path))


def write_shards(out: str, vocab: list[str], pieces: np.ndarray, mode: str) -> str:
    """A shard directory (600 train, 100 eval examples) as the data job writes it with ``mode`` masking."""
    os.makedirs(out)
    rng = np.random.default_rng(0)
    shards = [
        write_split(out, "train", sample_sequences(pieces, 600, rng), 0, mode, len(vocab)),
        write_split(out, "eval", sample_sequences(pieces, 100, rng), 600, mode, len(vocab)),
    ]
    with open(os.path.join(out, contract.VOCAB_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    manifest = contract.ShardManifest(
        schema_version=contract.SCHEMA_VERSION,
        vocab_file=contract.VOCAB_FILE,
        vocab_sha256=contract.sha256_file(os.path.join(out, contract.VOCAB_FILE)),
        vocab_size=len(vocab),
        lowercase=True,
        special_tokens=vars(contract.SpecialTokens.from_vocab(vocab)),
        max_seq_length=LENGTH,
        objective="none",
        masking=contract.MaskingSpec(mode, 0.15, 20, False, 1 if mode == "dynamic" else 5),
        seed=1,
        shards=shards,
    )
    with open(os.path.join(out, contract.MANIFEST_FILE), "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
    return out


@pytest.fixture(scope="module")
def vocab():
    return real_uncased_vocab()


@pytest.fixture(scope="module")
def shard_dirs(sample_documents, vocab, tmp_path_factory):
    """mode -> a shard directory of the same real rows, "dynamic" (stored unmasked) or "static"."""
    tokenizer = build_tokenizer(vocab, lowercase=True)
    sentences = [s for d in sample_documents[:200] for s in d.sentences]
    pieces = np.concatenate([np.array(ids, np.int32) for ids in encode_sentences(tokenizer, sentences) if ids])
    root = tmp_path_factory.mktemp("masking_override")
    return {mode: write_shards(str(root / mode), vocab, pieces, mode) for mode in ("dynamic", "static")}


def open_shards(shard_dirs, vocab, mode="dynamic", num_workers=0, **override):
    cfg = DataConfig(num_workers=num_workers, pin_memory=False, masking=MaskingOverride(**override))
    expect = RunExpectations(vocab_size=len(vocab), max_position_embeddings=512, with_nsp_head=False)
    return open_pretraining_data(shard_dirs[mode], cfg, SEED, expect)


def first_batches(loader, count):
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


# --- the config ------------------------------------------------------------------------------


def test_the_override_composes_and_is_null_by_default():
    assert compose_train(REQUIRED).data.masking.given() == {}
    cfg = compose_train(
        [*REQUIRED, "data=seq128", "data.masking.masked_lm_prob=0.3", "data.masking.mask_prob=0.85"]
        + ["data.masking.random_prob=0", "data.masking.whole_word=true"]
    )
    assert cfg.data.masking.given() == {
        "masked_lm_prob": 0.3,
        "mask_prob": 0.85,
        "random_prob": 0.0,
        "whole_word": True,
    }


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.masking.masked_lm_prob=1.5", "data.masking.masked_lm_prob must be in (0, 1)"),
        ("data.masking.masked_lm_prob=0", "data.masking.masked_lm_prob must be in (0, 1)"),
        ("data.masking.max_predictions_per_seq=0", "data.masking.max_predictions_per_seq must be >= 1"),
        ("data.masking.mask_prob=-0.1", "data.masking.mask_prob and random_prob"),
        ("data.masking.random_prob=1.2", "data.masking.mask_prob and random_prob"),
    ],
)
def test_bad_values_fail_at_composition_naming_the_key(override, named):
    with pytest.raises((ConfigError, ValueError), match=named.replace("(", r"\(").replace(")", r"\)")):
        compose_train([*REQUIRED, override])


def test_a_misspelt_key_fails_at_composition():
    with pytest.raises(Exception, match="rate"):
        compose_train([*REQUIRED, "data.masking.rate=0.3"])


# --- the rule a run trains with --------------------------------------------------------------


def test_static_shards_refuse_any_override_before_anything_is_built(shard_dirs, vocab):
    open_shards(shard_dirs, vocab, mode="static")  # without an override they open
    with pytest.raises(ConfigError, match=r"masking=static.*masking=dynamic") as error:
        open_shards(shard_dirs, vocab, mode="static", masked_lm_prob=0.3)
    assert "data.masking.masked_lm_prob=0.3" in str(error.value)


def test_a_split_over_one_with_the_manifests_other_share_names_the_keys(shard_dirs, vocab):
    with pytest.raises(ConfigError, match=r"data.masking.mask_prob=0.95 over the manifest's rule.*sum to at most 1"):
        open_shards(shard_dirs, vocab, mask_prob=0.95)  # with the manifest's random_prob 0.1


@pytest.mark.parametrize("rate, length, width", [(0.15, 128, 20), (0.3, 128, 40), (0.15, 512, 80), (0.3, 512, 156)])
def test_predictions_width_is_the_data_jobs_cap_for_the_rate(shard_dirs, vocab, rate, length, width):
    """BERT's 20 at 128 and 80 at 512 (15%); 40 at 128 for 30%, above the 38 a full example asks."""
    manifest = dataclasses.replace(open_shards(shard_dirs, vocab).manifest, max_seq_length=length)
    rule = training_masking(manifest, MaskingOverride(masked_lm_prob=rate))
    assert rule.max_predictions_per_seq == width and rule.masked_lm_prob == rate
    given = MaskingOverride(masked_lm_prob=rate, max_predictions_per_seq=7)
    assert training_masking(manifest, given).max_predictions_per_seq == 7


def test_a_derived_width_never_caps_any_rate_at_any_length(shard_dirs, vocab):
    manifest = open_shards(shard_dirs, vocab).manifest
    for length in (8, 64, 100, 128, 384, 512, 4096):
        for rate in np.linspace(0.01, 0.99, 99):
            rule = training_masking(
                dataclasses.replace(manifest, max_seq_length=length), MaskingOverride(masked_lm_prob=rate)
            )
            uncapped = dataclasses.replace(rule, max_predictions_per_seq=10**6)
            assert rule.max_predictions_per_seq >= num_to_predict(np.arange(1, length + 1), uncapped).max()


def test_a_given_width_below_the_rate_warns_with_the_numbers(shard_dirs, vocab):
    capped = open_shards(shard_dirs, vocab, masked_lm_prob=0.3, max_predictions_per_seq=20)
    (line,) = capped.masking_warnings()
    assert "max_predictions_per_seq=20" in line and "38 positions" in line and "128-token" in line
    assert "BERT caps the same way" in line
    assert open_shards(shard_dirs, vocab, masked_lm_prob=0.3).masking_warnings() == []
    assert open_shards(shard_dirs, vocab, masked_lm_prob=0.3, max_predictions_per_seq=38).masking_warnings() == []


def test_the_summary_names_the_training_and_the_evaluation_rule(shard_dirs, vocab):
    summary = open_shards(shard_dirs, vocab, masked_lm_prob=0.3, **ELECTRA).masking_summary()
    assert summary == (
        "masking: dynamic, training 30% of tokens, at most 40 per example (38 of a full 128), 85% [MASK] / 0% "
        "random / 15% kept, single pieces (data.masking); evaluation keeps the manifest's 15% of tokens, at most 20 "
        "per example (19 of a full 128), 80% [MASK] / 10% random / 10% kept, single pieces"
    )
    assert open_shards(shard_dirs, vocab).masking_summary().startswith("masking: dynamic, the manifest's rule (15%")
    assert open_shards(shard_dirs, vocab, mode="static").masking_summary().startswith("masking: static, as stored")


# --- batches ---------------------------------------------------------------------------------


def test_a_30_percent_run_predicts_30_percent_of_the_maskable_tokens(shard_dirs, vocab):
    data = open_shards(shard_dirs, vocab, masked_lm_prob=0.3)
    batch = next(iter(data.train_loader(micro_batch_size=64)))
    labels, lengths = batch["masked_lm_labels"], batch["attention_mask"].sum(1)
    assert labels.shape == (64, 40)
    per_example = (labels != IGNORE_INDEX).sum(1)
    # every example its rate's budget (lengths count [CLS]/[SEP], as BERT's), none capped
    assert per_example.tolist() == [num_to_predict(int(n), data.masking_rule()) for n in lengths]
    maskable = int((lengths - 2).sum())  # no [MASK]/[PAD]/[UNK] inside the sample's text cut here
    assert 0.29 < int(per_example.sum()) / maskable < 0.32
    baseline = next(iter(open_shards(shard_dirs, vocab).train_loader(micro_batch_size=64)))
    assert baseline["masked_lm_labels"].shape == (64, 20)
    assert 0.14 < int((baseline["masked_lm_labels"] != IGNORE_INDEX).sum()) / maskable < 0.16


def test_electras_split_within_a_binomial_bound(shard_dirs, vocab):
    """85% [MASK], 15% kept, none random, over ~20,000 predicted positions: each share within 4.5
    standard deviations of its probability (a false alarm about once in 150,000 runs)."""
    data = open_shards(shard_dirs, vocab, masked_lm_prob=0.3, **ELECTRA)
    mask_id = data.special_tokens.mask
    outcomes = np.zeros(3, np.int64)  # [MASK], kept, other id
    for batch in first_batches(data.train_loader(micro_batch_size=100), 6):
        slots = batch["masked_lm_labels"] != IGNORE_INDEX  # (B, P)
        now = torch.gather(batch["input_ids"], 1, batch["masked_lm_positions"])[slots]
        original = batch["masked_lm_labels"][slots]
        outcomes += [int((now == mask_id).sum()), int(((now != mask_id) & (now == original)).sum()), 0]
        outcomes[2] += int(((now != mask_id) & (now != original)).sum())
    n = int(outcomes.sum())
    assert n > 20_000 and outcomes[2] == 0
    bound = 4.5 * np.sqrt(0.85 * 0.15 / n)
    assert abs(outcomes[0] / n - 0.85) < bound and abs(outcomes[1] / n - 0.15) < bound


def test_eval_batches_are_those_of_the_manifests_rule_whatever_the_override(shard_dirs, vocab):
    plain = open_shards(shard_dirs, vocab)
    overridden = open_shards(shard_dirs, vocab, masked_lm_prob=0.3, whole_word=True, **ELECTRA)
    first, again = (list(plain.eval_loader(micro_batch_size=16)) for _ in range(2))
    with_override = list(overridden.eval_loader(micro_batch_size=16))
    assert len(first) == len(with_override) == 7
    for a, b, c in zip(first, again, with_override):
        assert a.keys() == c.keys() and all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    # while its training batches follow the override
    train_plain, train_override = (next(iter(d.train_loader(micro_batch_size=16))) for d in (plain, overridden))
    assert train_plain["masked_lm_positions"].shape[1] == 20 and train_override["masked_lm_positions"].shape[1] == 40


# --- masks stay a function of (seed, epoch, example id) and of the rule ------------------------


@pytest.mark.parametrize(
    "override",
    [{"masked_lm_prob": 0.3, **ELECTRA}, {"masked_lm_prob": 0.3, "spans": True}],
    ids=["electra-30", "spans-30"],
)
def test_batched_masks_equal_mask_tokens_with_the_examples_own_generator(shard_dirs, vocab, override):
    data = open_shards(shard_dirs, vocab, **override)
    masker = data.masker()
    assert masker.params == data.masking_rule() and masker.params != masking_params(data.manifest)
    dataset = data.train_loader(micro_batch_size=8).dataset
    indices = np.arange(0, 600, 3)
    got = dataset[BatchRequest(2, indices)]
    reordered = list(dataset[BatchRequest(2, indices[::-1].copy())])[::-1]  # another batch, same (epoch, example)
    for e, r, s in zip(got, reordered, dataset.split.examples(indices)):
        masked, positions, labels = mask_tokens(
            np.array(s.input_ids, np.int32),
            masker.rng(2, s.example_id),
            masker.params,
            masker.never_mask,
            masker.mask_id,
            masker.vocab_size,
            masker.is_continuation,
        )
        assert np.array_equal(e.input_ids, masked) and np.array_equal(e.masked_lm_positions, positions)
        assert np.array_equal(e.masked_lm_labels, labels) and np.array_equal(r.input_ids, e.input_ids)


def test_resume_and_workers_give_the_same_batches_under_an_override(shard_dirs, vocab):
    """A loader moved to a saved position, in process or with 2 workers, gives the batches an
    uninterrupted loader gives from there."""
    override = {"masked_lm_prob": 0.3, **ELECTRA}
    uninterrupted = first_batches(open_shards(shard_dirs, vocab, **override).train_loader(micro_batch_size=16), 8)
    for workers in (0, 2):
        loader = open_shards(shard_dirs, vocab, num_workers=workers, **override).train_loader(micro_batch_size=16)
        first_batches(loader, 3)
        resumed = open_shards(shard_dirs, vocab, num_workers=workers, **override).train_loader(micro_batch_size=16)
        resumed.load_state_dict(loader.state_dict())
        for a, b in zip(first_batches(resumed, 5), uninterrupted[3:]):
            assert all(torch.equal(a[k], b[k]) for k in a)


# --- resume records ----------------------------------------------------------------------------


def test_a_resume_with_another_training_rate_is_refused(shard_dirs, vocab):
    from omegaconf import OmegaConf

    from training.model import BertConfig

    manifest = open_shards(shard_dirs, vocab).manifest
    architecture = BertConfig(
        len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )

    def record(*overrides):
        resolved = OmegaConf.to_container(OmegaConf.structured(compose_train([*REQUIRED, *overrides])))
        return ckpt.run_record(resolved, architecture, ckpt.data_identity(manifest))

    saved = record("data.masking.masked_lm_prob=0.3")
    assert ckpt.check_resumable(saved, record("data.masking.masked_lm_prob=0.3"), "ckpt", force=False) == []
    with pytest.raises(ConfigError, match=r"data.masking.masked_lm_prob: 0.3 -> 0.4"):
        ckpt.check_resumable(saved, record("data.masking.masked_lm_prob=0.4"), "ckpt", force=False)
    with pytest.raises(ConfigError, match=r"data.masking.masked_lm_prob: 0.3 -> null"):
        ckpt.check_resumable(saved, record(), "ckpt", force=False)
