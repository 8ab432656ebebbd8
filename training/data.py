"""The trainer's data side: check the shards fit the run, then serve collated micro batches.

    expect = RunExpectations.of_model(bert_cfg, max_seq_length=cfg.data.max_seq_length)
    data = open_pretraining_data(cfg.data_dir, cfg.data, cfg.seed, expect)  # DataContractError first
    train = data.train_loader(rank, world_size)
    train.load_state_dict(checkpoint["data"])  # optional: resume mid-epoch
    for batch in train: ...                    # the rest of the current epoch
    checkpoint["data"] = train.state_dict()

Shards are read through ``pipeline.contract.open_shard`` (memory-mapped Arrow, zero-copy): the
loader keeps numpy views of the mapped record batches and reads rows by global index. Which rows
a rank reads is decided in ``training.sampler`` in the main process; DataLoader workers only read,
mask (dynamic masking) and collate, so any ``num_workers`` yields the same batches.

Static masks are used as stored. Dynamic masks are those ``pipeline.masking.mask_tokens`` draws
with a generator seeded from ("dynamic_masking", seed, epoch, example_id): the same example gets
the same masks in the same epoch, whichever rank, worker or resumed run reads it. A worker masks
a whole micro batch at once (``pipeline.masking.mask_examples``, equal masks). Training batches
follow the manifest's rule with data.masking's fields over it (``training_masking``: 30% masking or
ELECTRA's 85/15/0 without new shards); eval batches follow the manifest's rule as it is, masked as
in epoch 0, so every evaluation of every run on these shards scores the same predictions.

Batches have the shapes the GPU wants: T padded to a multiple of data.pad_to_multiple_of (or to
the shards' max_seq_length with data.pad_to_max_length), P to the rule's max_predictions_per_seq,
the last eval batch to the eval micro batch size with padding rows, so a compiled model sees
one shape; with ``unpad`` the collator also gives the unpadded layout, so the device never waits
on a data-dependent size.

No DeepSpeed here: the trainer puts ``state_dict()`` into its checkpoint's client state.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from pipeline import contract
from pipeline.config import MaskingConfig
from pipeline.contract import ContractError, ShardManifest, SpecialTokens
from pipeline.masking import MaskingParams, mask_examples, num_to_predict
from pipeline.seeding import rng_for
from pipeline.tokenization import masking_vocabulary
from training.config import ConfigError, DataConfig, MaskingOverride
from training.labels import IGNORE_INDEX
from training.sampler import BatchRequest, EvalBatchPlan, TrainBatchPlan

MODEL_INPUTS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "masked_lm_positions",
    "masked_lm_labels",
    "next_sentence_label",
    "unpad_index",
    "cu_seqlens",
)
"""Batch keys that are arguments of ``BertForPreTraining.forward``; the others are bookkeeping."""

EVAL_MASKING_EPOCH = 0
"""Dynamic masks of the eval split are drawn as for this epoch, the same at every evaluation."""

STATE_VERSION = 1


# --- run expectations and the manifest check ----------------------------------------------------


class DataContractError(ContractError):
    """The shards do not fit the run (a ValueError); the message says what to change."""


@dataclass(frozen=True)
class RunExpectations:
    """What the run's model needs of the data."""

    vocab_size: int
    """The model's vocabulary size; must equal the shards' vocabulary."""
    max_position_embeddings: int
    """The model's position table; must cover the shards' max_seq_length."""
    with_nsp_head: bool
    """Whether the model has the sentence head: needed by objectives nsp/sop, refused by none."""
    pad_token_id: int = 0
    """The model's [PAD] id; must be the vocabulary's."""
    vocab_sha256: Optional[str] = None
    """If set, the sha256 the shards' vocabulary must have (e.g. the vocabulary a checkpoint used)."""
    max_seq_length: Optional[int] = None
    """If set, the shards' max_seq_length must be this (data.max_seq_length: phase 1 or phase 2)."""

    @classmethod
    def of_model(
        cls, model_cfg: Any, max_seq_length: Optional[int] = None, vocab_sha256: Optional[str] = None
    ) -> "RunExpectations":
        """From a network config of ``training.models`` (BertConfig, ModernConfig: vocab_size,
        max_position_embeddings, with_nsp_head, pad_token_id)."""
        return cls(
            vocab_size=model_cfg.vocab_size,
            max_position_embeddings=model_cfg.max_position_embeddings,
            with_nsp_head=model_cfg.with_nsp_head,
            pad_token_id=model_cfg.pad_token_id,
            vocab_sha256=vocab_sha256,
            max_seq_length=max_seq_length,
        )


def validate_manifest(manifest: ShardManifest, data_dir: str, expect: RunExpectations) -> list[str]:
    """Check the shards in ``data_dir`` against the run; returns the vocabulary (list of tokens).

    Raises DataContractError listing every mismatch, each with what to change: schema version;
    vocab.txt's sha256 and size against the manifest; the expected vocabulary hash; vocab size,
    special token ids and [PAD] against the model; max_seq_length against max_position_embeddings;
    the expected max_seq_length; the objective against the NSP head; the masking spec; every
    listed shard present and of its listed size.
    """
    if manifest.schema_version != contract.SCHEMA_VERSION:
        raise DataContractError(
            f"{data_dir}: manifest schema version {manifest.schema_version}, this trainer reads "
            f"{contract.SCHEMA_VERSION}: rebuild the shards with this checkout's pipeline"
        )
    problems: list[str] = []
    vocab = _check_vocabulary(manifest, data_dir, expect, problems)
    if expect.max_seq_length is not None and manifest.max_seq_length != expect.max_seq_length:
        problems.append(
            f"the shards were built with max_seq_length={manifest.max_seq_length} but the run expects "
            f"data.max_seq_length={expect.max_seq_length}: point data_dir at shards of that length, or set "
            f"data.max_seq_length={manifest.max_seq_length} (or null)"
        )
    if manifest.max_seq_length > expect.max_position_embeddings:
        problems.append(
            f"the shards hold sequences of up to max_seq_length={manifest.max_seq_length} tokens but the model "
            f"has max_position_embeddings={expect.max_position_embeddings}: raise the model's "
            f"max_position_embeddings to at least {manifest.max_seq_length}, or rebuild the shards with "
            f"instances.max_seq_length<={expect.max_position_embeddings}"
        )
    if manifest.objective not in contract.OBJECTIVES:
        problems.append(
            f"unknown objective {manifest.objective!r} in the manifest (expected one of "
            f"{contract.OBJECTIVES}): rebuild the shards"
        )
    elif manifest.objective == "none" and expect.with_nsp_head:
        problems.append(
            "the shards were built with objective 'none' (no sentence-pair label) but the model has an NSP "
            "head: set the model's with_nsp_head=false, or rebuild the shards with instances=nsp or sop"
        )
    elif manifest.objective != "none" and not expect.with_nsp_head:
        problems.append(
            f"the shards carry a sentence-pair label (objective {manifest.objective!r}) but the model has no "
            f"NSP head: set the model's with_nsp_head=true, or rebuild the shards with instances=none"
        )
    _check_masking(manifest, problems)
    _check_shard_files(manifest, data_dir, problems)
    if problems:
        raise DataContractError(
            f"the shards in {data_dir} do not fit this run:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return vocab


def _check_vocabulary(
    manifest: ShardManifest, data_dir: str, expect: RunExpectations, problems: list[str]
) -> list[str]:
    path = os.path.join(data_dir, manifest.vocab_file)
    if not os.path.exists(path):
        raise DataContractError(
            f"{path} is missing: the shards' ids mean nothing without the vocabulary "
            f"the pipeline wrote next to manifest.json; restore it or re-run the pipeline"
        )
    actual = contract.sha256_file(path)
    vocab = contract.read_vocab(path)
    if actual != manifest.vocab_sha256:
        problems.append(
            f"{path} has sha256 {actual} but the manifest records {manifest.vocab_sha256}: the vocabulary "
            f"next to the shards was replaced or edited; restore the file the pipeline wrote or re-run it"
        )
    elif len(vocab) != manifest.vocab_size:
        problems.append(
            f"{path} has {len(vocab)} entries but the manifest records vocab_size "
            f"{manifest.vocab_size}: the output directory is inconsistent; re-run the pipeline"
        )
    if expect.vocab_sha256 is not None and manifest.vocab_sha256 != expect.vocab_sha256:
        problems.append(
            f"the shards were tokenized with the vocabulary of sha256 {manifest.vocab_sha256} but this run "
            f"expects {expect.vocab_sha256}: point data.dir at shards built with that vocabulary "
            f"(pipeline tokenizer=vocab_file)"
        )
    if manifest.vocab_size != expect.vocab_size:
        problems.append(
            f"the shards' vocabulary has {manifest.vocab_size} ids but the model's vocab_size is "
            f"{expect.vocab_size}: set the model's vocab_size={manifest.vocab_size}, or use shards built "
            f"with a {expect.vocab_size}-id vocabulary"
        )
    try:
        special = dataclasses.asdict(SpecialTokens.from_vocab(vocab))
    except ContractError as e:
        problems.append(f"{path}: {e}")
        return vocab
    if manifest.special_tokens != special:
        problems.append(
            f"the manifest's special token ids {manifest.special_tokens} are not those of "
            f"{path} ({special}): the output directory is inconsistent; re-run the pipeline"
        )
    if special["pad"] != expect.pad_token_id:
        problems.append(
            f"[PAD] is id {special['pad']} in the shards' vocabulary but the model's pad_token_id "
            f"is {expect.pad_token_id}: set the model's pad_token_id={special['pad']}"
        )
    return vocab


def _check_masking(manifest: ShardManifest, problems: list[str]) -> None:
    if manifest.masking.mode not in contract.MASKING_MODES:
        problems.append(
            f"unknown masking mode {manifest.masking.mode!r} (expected one of "
            f"{contract.MASKING_MODES}): rebuild the shards"
        )
    else:  # static shards too: their settings (spans among them) say what the stored masks are
        try:
            masking_params(manifest)
        except ValueError as e:
            problems.append(
                f"the manifest's {manifest.masking.mode} masking settings are invalid ({e}): rebuild the shards"
            )


def _check_shard_files(manifest: ShardManifest, data_dir: str, problems: list[str]) -> None:
    for shard in manifest.shards:
        path = os.path.join(data_dir, shard.file)
        if not os.path.exists(path):
            problems.append(f"{path} is listed in the manifest but missing: copy the whole output directory")
        elif os.path.getsize(path) != shard.bytes:
            problems.append(
                f"{path} has {os.path.getsize(path)} bytes, the manifest says {shard.bytes}: "
                f"the copy is truncated or the file was replaced"
            )


def masking_params(manifest: ShardManifest) -> MaskingParams:
    """The masking the manifest records, as ``mask_tokens`` takes it: the rule the trainer applies to
    dynamic shards, and the one static shards were masked with (``spans``: SpanBERT's spans). A
    manifest from before span masking reads as spans off."""
    m = manifest.masking
    return MaskingParams(
        masked_lm_prob=m.masked_lm_prob,
        max_predictions_per_seq=m.max_predictions_per_seq,
        whole_word=m.whole_word,
        mask_prob=m.mask_prob,
        random_prob=m.random_prob,
        spans=m.spans,
        span_p=m.span_p,
        max_span_words=m.max_span_words,
    )


def training_masking(manifest: ShardManifest, override: MaskingOverride) -> MaskingParams:
    """The rule training batches are masked with: the manifest's (``masking_params``) with each field
    data.masking sets in its place. Where masked_lm_prob is set and max_predictions_per_seq is not, P
    is the data job's cap for that rate at the shards' max_seq_length (``MaskingConfig.predictions_cap``:
    rate x length rounded up to a multiple of 4, so 20 for 0.15 and 40 for 0.3 at 128): at least the
    budget of a full example (round(rate x length)), so the rate is never cut short, and the P that
    shards built at that rate carry. ConfigError, naming the keys, for an override of static shards
    or a rule MaskingParams refuses (mask_prob + random_prob over 1)."""
    given = override.given()
    rule = masking_params(manifest)
    if not given:
        return rule
    keys = ", ".join(f"data.masking.{k}={v}" for k, v in given.items())
    if manifest.masking.mode != "dynamic":
        raise ConfigError(
            f"{keys} changes dynamic masking, but these shards were built with masking={manifest.masking.mode}: "
            "their masks are stored. Rebuild them with the data job's masking=dynamic (or masking=span), or "
            "leave data.masking unset"
        )
    if "masked_lm_prob" in given and "max_predictions_per_seq" not in given:
        cap = MaskingConfig(masked_lm_prob=given["masked_lm_prob"]).predictions_cap(manifest.max_seq_length)
        given["max_predictions_per_seq"] = cap
    try:
        return dataclasses.replace(rule, **given)
    except ValueError as e:
        raise ConfigError(f"{keys} over the manifest's rule: {e}") from None


def full_example_budget(params: MaskingParams, max_seq_length: int) -> int:
    """Predictions the rate asks of an example of max_seq_length tokens, before the cap P."""
    return num_to_predict(max_seq_length, dataclasses.replace(params, max_predictions_per_seq=max_seq_length))


def describe_masking(params: MaskingParams, max_seq_length: int) -> str:
    """A rule in words, e.g. "30% of tokens, at most 40 per example (38 of a full 128), 80% [MASK] /
    10% random / 10% kept, single pieces"."""
    unit = "spans of whole words" if params.spans else "whole words" if params.whole_word else "single pieces"
    mask, random, kept = (
        _percent(p) for p in (params.mask_prob, params.random_prob, 1.0 - params.mask_prob - params.random_prob)
    )
    return (
        f"{_percent(params.masked_lm_prob)} of tokens, at most {params.max_predictions_per_seq} per example "
        f"({full_example_budget(params, max_seq_length)} of a full {max_seq_length}), {mask} [MASK] / "
        f"{random} random / {kept} kept, {unit}"
    )


def _percent(share: float) -> str:
    return f"{100 * share:.4g}%"


def predictions_cap_warning(params: MaskingParams, max_seq_length: int) -> str:
    """A P below what the rate asks of a full example, in one line ("" when none): such examples get
    P predictions, fewer than the rate (BERT's create_pretraining_data caps the same way)."""
    wanted = full_example_budget(params, max_seq_length)
    cap = params.max_predictions_per_seq
    if cap >= wanted:
        return ""
    return (
        f"data.masking.max_predictions_per_seq={cap} caps the predictions of a full {max_seq_length}-token example "
        f"at {cap} ({cap / max_seq_length:.1%} of its tokens), below masked_lm_prob={params.masked_lm_prob} "
        f"({wanted} positions): examples longer than about {int(cap / params.masked_lm_prob)} tokens are masked "
        f"at less than the rate. BERT caps the same way; leave it null for a P that never caps"
    )


# --- rows of a split, memory-mapped -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Example:
    """One example ready to collate (unpadded)."""

    input_ids: np.ndarray  # (T,) ids with [CLS]/[SEP], masked
    segment_b_start: int  # token types are 0 before it, 1 from it
    masked_lm_positions: np.ndarray  # (P,) sorted positions to predict
    masked_lm_labels: np.ndarray  # (P,) original ids at those positions
    next_sentence_label: int  # 0 continuation, 1 random/swapped; -1 without a sentence objective
    example_id: int


@dataclass(frozen=True, eq=False)
class ExampleBatch:
    """The examples of one micro batch, columnar and unpadded: what the masker and the collator take.
    Example i is ``input_ids[offsets[i]:offsets[i+1]]`` with predictions
    ``masked_lm_*[masked_offsets[i]:masked_offsets[i+1]]``; ``batch[i]`` gives it as an ``Example``."""

    input_ids: np.ndarray  # (N,) ids of the B examples back to back, with [CLS]/[SEP]
    offsets: np.ndarray  # (B+1,) int64
    segment_b_start: np.ndarray  # (B,) int64
    masked_lm_positions: np.ndarray  # (P,) positions within each example, sorted per example
    masked_lm_labels: np.ndarray  # (P,) original ids at those positions
    masked_offsets: np.ndarray  # (B+1,) int64
    next_sentence_label: np.ndarray  # (B,) int64; -1 without a sentence objective
    example_id: np.ndarray  # (B,) int64

    def __len__(self) -> int:
        return len(self.example_id)

    def __getitem__(self, i: int) -> Example:
        if not -len(self) <= i < len(self):
            raise IndexError(f"example {i} of a batch of {len(self)}")
        i %= len(self)
        lo, hi = self.offsets[i], self.offsets[i + 1]
        a, b = self.masked_offsets[i], self.masked_offsets[i + 1]
        return Example(
            self.input_ids[lo:hi],
            int(self.segment_b_start[i]),
            self.masked_lm_positions[a:b],
            self.masked_lm_labels[a:b],
            int(self.next_sentence_label[i]),
            int(self.example_id[i]),
        )

    @classmethod
    def of(cls, examples: Sequence[Example]) -> "ExampleBatch":
        """The batch of a list of examples (copies their arrays)."""
        return cls(
            _concat([e.input_ids for e in examples]),
            _offsets([len(e.input_ids) for e in examples]),
            np.array([e.segment_b_start for e in examples], dtype=np.int64),
            _concat([e.masked_lm_positions for e in examples]),
            _concat([e.masked_lm_labels for e in examples]),
            _offsets([len(e.masked_lm_positions) for e in examples]),
            np.array([e.next_sentence_label for e in examples], dtype=np.int64),
            np.array([e.example_id for e in examples], dtype=np.int64),
        )


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if len(parts) else np.zeros(0, np.int64)


def _offsets(lengths) -> np.ndarray:
    """(K+1,) int64 starts of K pieces of these lengths laid back to back; the last is their total."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


class _ChunkColumns:
    """Zero-copy numpy views of one memory-mapped record batch's columns."""

    def __init__(self, batch: pa.RecordBatch):
        names = set(batch.schema.names)
        ids = batch.column(contract.INPUT_IDS)
        self.ids_offsets = ids.offsets.to_numpy()  # (R+1,) into ids_values
        self.ids_values = ids.values.to_numpy()  # (N,) uint16 or int32
        self.segment_b_start = batch.column(contract.SEGMENT_B_START).to_numpy()  # (R,)
        self.example_id = batch.column(contract.EXAMPLE_ID).to_numpy()  # (R,)
        self.sentence_label = (
            batch.column(contract.NEXT_SENTENCE_LABEL).to_numpy() if contract.NEXT_SENTENCE_LABEL in names else None
        )  # (R,) int8
        self.mlm_offsets = self.mlm_positions = self.mlm_ids = None
        if contract.MASKED_LM_POSITIONS in names:
            positions = batch.column(contract.MASKED_LM_POSITIONS)
            self.mlm_offsets = positions.offsets.to_numpy()  # (R+1,)
            self.mlm_positions = positions.values.to_numpy()  # (P,)
            self.mlm_ids = batch.column(contract.MASKED_LM_IDS).values.to_numpy()  # (P,), same offsets

    def example(self, row: int) -> Example:
        lo, hi = self.ids_offsets[row], self.ids_offsets[row + 1]
        if self.mlm_offsets is None:
            positions = labels = np.zeros(0, np.int64)
        else:
            a, b = self.mlm_offsets[row], self.mlm_offsets[row + 1]
            positions, labels = self.mlm_positions[a:b], self.mlm_ids[a:b]
        label = -1 if self.sentence_label is None else int(self.sentence_label[row])
        return Example(
            self.ids_values[lo:hi], int(self.segment_b_start[row]), positions, labels, label, int(self.example_id[row])
        )


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


class ShardedSplit:
    """All rows of one split across its shards, memory-mapped; row i of the split is row
    ``i - shard_starts[s]`` of shard s (shards in manifest order, cumulative row counts).

    Opens the shards lazily in each process (pickling sends only the paths, so DataLoader workers
    started by spawn/forkserver map the files themselves instead of receiving a copy).
    """

    def __init__(self, data_dir: str, manifest: ShardManifest, split: str):
        self.split = split
        self.shards = manifest.shards_of(split)
        self.paths = [os.path.join(data_dir, s.file) for s in self.shards]
        self.schema = contract.example_schema(manifest.vocab_size, manifest.objective, manifest.masking.mode)
        self.shard_starts = np.concatenate([[0], np.cumsum([s.rows for s in self.shards])]).astype(np.int64)
        self._chunks: Optional[list[_ChunkColumns]] = None
        self._chunk_starts: Optional[np.ndarray] = None  # (C+1,) first split row of each record batch

    def __len__(self) -> int:
        return int(self.shard_starts[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_chunks": None, "_chunk_starts": None}

    def open(self) -> "ShardedSplit":
        """Map every shard and check its schema and row count against the manifest (idempotent)."""
        if self._chunks is not None:
            return self
        chunks, sizes = [], []
        for path, info in zip(self.paths, self.shards):
            table = contract.open_shard(path)
            if not table.schema.equals(self.schema, check_metadata=False):
                raise DataContractError(
                    f"{path}: columns {_columns(table.schema)} differ from what the "
                    f"manifest implies ({_columns(self.schema)}): the shard belongs to "
                    f"another run; re-run the pipeline or restore the manifest"
                )
            if table.num_rows != info.rows:
                raise DataContractError(f"{path} has {table.num_rows} rows, the manifest says {info.rows}")
            for batch in table.to_batches():
                chunks.append(_ChunkColumns(batch))
                sizes.append(batch.num_rows)
        self._chunks = chunks
        self._chunk_starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        return self

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row within shard) of global row indices (K,) -> two (K,) int64 arrays."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row index outside the {self.split} split of {len(self)} rows")
        shard = np.searchsorted(self.shard_starts, indices, side="right") - 1
        return shard, indices - self.shard_starts[shard]

    def _chunk_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(record batch, row within it) of global row indices (K,) -> two (K,) int64 arrays."""
        self.open()
        indices = np.asarray(indices, dtype=np.int64)
        self.locate(indices)  # bounds check
        chunk = np.searchsorted(self._chunk_starts, indices, side="right") - 1
        return chunk, indices - self._chunk_starts[chunk]

    def examples(self, indices: np.ndarray) -> list[Example]:
        """The stored examples at global row indices (K,), in that order, as views of the mapped rows."""
        chunk, row = self._chunk_rows(indices)
        return [self._chunks[c].example(int(r)) for c, r in zip(chunk, row)]

    def batch(self, indices: np.ndarray) -> ExampleBatch:
        """The stored examples at global row indices (K,), in that order, as one batch (what the
        loader reads). A shuffled micro batch of a large split takes about one row from each of K
        record batches, so rows are sliced one by one (a few scalar reads each), joined once."""
        chunk, row = self._chunk_rows(indices)
        ids, positions, labels = [], [], []
        b_start, sentence_label, example_id = (np.zeros(len(row), np.int64) for _ in range(3))
        for i, (c, r) in enumerate(zip(chunk.tolist(), row.tolist())):
            cols = self._chunks[c]
            lo, hi = cols.ids_offsets[r : r + 2]
            ids.append(cols.ids_values[lo:hi])
            if cols.mlm_offsets is not None:
                a, b = cols.mlm_offsets[r : r + 2]
                positions.append(cols.mlm_positions[a:b])
                labels.append(cols.mlm_ids[a:b])
            b_start[i], example_id[i] = cols.segment_b_start[r], cols.example_id[r]
            sentence_label[i] = -1 if cols.sentence_label is None else cols.sentence_label[r]
        return ExampleBatch(
            _concat(ids),
            _offsets([len(x) for x in ids]),
            b_start,
            _concat(positions),
            _concat(labels),
            _offsets([len(x) for x in positions] if positions else np.zeros(len(row), np.int64)),
            sentence_label,
            example_id,
        )


# --- masking and collation ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DynamicMasker:
    """Masks unmasked examples as ``mask_tokens`` would one by one, with a generator per example
    seeded by (seed, epoch, example_id); the whole batch at once (``mask_examples``)."""

    params: MaskingParams
    never_mask: np.ndarray  # (V,) bool
    is_continuation: np.ndarray  # (V,) bool
    mask_id: int
    vocab_size: int
    seed: int

    def rng(self, epoch: int, example_id: int) -> np.random.Generator:
        return rng_for("dynamic_masking", int(self.seed), int(epoch), int(example_id))

    def __call__(self, batch: ExampleBatch, epoch: int) -> ExampleBatch:
        tokens = batch.input_ids.astype(np.int32)  # (N,) private copy of the mapped rows
        masked, positions, labels, counts = mask_examples(
            tokens,
            batch.offsets,
            [self.rng(epoch, i) for i in batch.example_id.tolist()],
            self.params,
            self.never_mask,
            self.mask_id,
            self.vocab_size,
            self.is_continuation,
        )
        relative = positions - np.repeat(batch.offsets[:-1], counts)  # (P,) within each example
        return dataclasses.replace(
            batch,
            input_ids=masked,
            masked_lm_positions=relative.astype(np.int32),
            masked_lm_labels=labels,
            masked_offsets=_offsets(counts),
        )


class PretrainingExamples(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole micro batches: ``dataset[BatchRequest]`` is the
    ``ExampleBatch`` of that request, masked (what the collator takes)."""

    def __init__(self, split: ShardedSplit, masker: Optional[DynamicMasker]):
        self.split, self.masker = split, masker

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, request: BatchRequest) -> ExampleBatch:
        batch = self.split.batch(request.indices)
        return batch if self.masker is None else self.masker(batch, request.epoch)


@dataclass(frozen=True)
class Collator:
    """Pads a micro batch's examples into fixed-layout tensors.

    Takes an ``ExampleBatch`` (the loader's) or a list of ``Example``. Returns a dict of tensors:
      input_ids (B, T) long, [PAD] after each sequence; token_type_ids (B, T) long;
      attention_mask (B, T) long, 1 for real tokens; masked_lm_positions (B, P) long, 0 in padding
      slots; masked_lm_labels (B, P) long, -100 in padding slots; next_sentence_label (B,) long, only
      with a sentence objective; example_id (B,) long; num_tokens () long, the real tokens of the
      batch (for throughput and MFU); num_examples () long, its real rows; with ``unpad``, also
      unpad_index (N,) long and cu_seqlens (B+1,) int32.
    Rows added up to ``batch_size`` are all padding: example_id -1, input_ids [PAD], attention_mask
    0, labels -100 (next_sentence_label too), so they count for nothing.
    """

    pad_id: int
    with_sentence_label: bool
    pad_to_multiple_of: int = 1
    """T is the longest sequence rounded up to a multiple of this (when pad_to_length is unset)."""
    predictions_per_seq: Optional[int] = None
    """P of every batch (the shards' max_predictions_per_seq); None: the most predictions in the batch."""
    pad_to_length: Optional[int] = None
    """T of every batch (the shards' max_seq_length); None: the pad_to_multiple_of rule."""
    batch_size: Optional[int] = None
    """B of every batch: a shorter one (the last eval batch) gets padding rows; None: as many rows as examples."""
    unpad: bool = False
    """Also give the unpadded model its layout: unpad_index (N,), the row-major indices of the real
    tokens in the flattened B*T positions, and cu_seqlens (B+1,) int32, the cumulative real lengths
    from 0; the model then needs no data-dependent nonzero() on the device."""

    def __post_init__(self):
        for name in ("pad_to_multiple_of", "predictions_per_seq", "pad_to_length", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Collator {name} must be >= 1, got {value}")

    def __call__(self, examples: ExampleBatch | Sequence[Example]) -> dict[str, torch.Tensor]:
        batch = examples if isinstance(examples, ExampleBatch) else ExampleBatch.of(examples)
        n = len(batch)
        B = self._rows(n)
        lengths = np.zeros(B, dtype=np.int64)  # (B,) real tokens per row, 0 in padding rows
        lengths[:n] = np.diff(batch.offsets)
        T = self._length(lengths, batch.example_id)
        counts = np.diff(batch.masked_offsets)  # (n,)
        P = self._predictions(counts, batch.example_id)
        token_at = _flat_index(batch.offsets, T)  # (N,) each real token's place in the (B, T) layout
        input_ids = np.full(B * T, self.pad_id, dtype=np.int64)
        input_ids[token_at] = batch.input_ids
        positions = np.zeros(B * P, dtype=np.int64)
        labels = np.full(B * P, IGNORE_INDEX, dtype=np.int64)
        slot_at = _flat_index(batch.masked_offsets, P)  # (P_total,)
        positions[slot_at] = batch.masked_lm_positions
        labels[slot_at] = batch.masked_lm_labels
        columns = np.arange(T)[None, :]  # (1, T)
        attention_mask = (columns < lengths[:, None]).astype(np.int64)  # (B, T)
        b_start = np.zeros(B, dtype=np.int64)
        b_start[:n] = batch.segment_b_start
        token_type_ids = ((columns >= b_start[:, None]) & (attention_mask == 1)).astype(np.int64)  # (B, T)
        out = {
            "input_ids": torch.from_numpy(input_ids.reshape(B, T)),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "masked_lm_positions": torch.from_numpy(positions.reshape(B, P)),
            "masked_lm_labels": torch.from_numpy(labels.reshape(B, P)),
        }
        if self.with_sentence_label:
            out["next_sentence_label"] = torch.from_numpy(_padded(batch.next_sentence_label, B, IGNORE_INDEX))
        out["example_id"] = torch.from_numpy(_padded(batch.example_id, B, -1))
        out["num_tokens"] = torch.tensor(int(lengths.sum()), dtype=torch.long)
        out["num_examples"] = torch.tensor(n, dtype=torch.long)
        if self.unpad:
            out["unpad_index"] = torch.from_numpy(token_at)
            out["cu_seqlens"] = torch.from_numpy(_offsets(lengths).astype(np.int32))
        return out

    def _rows(self, n: int) -> int:
        if self.batch_size is None:
            return n
        if n > self.batch_size:
            raise ValueError(f"{n} examples for a collator of batch_size={self.batch_size}: ask for at most that many")
        return self.batch_size

    def _length(self, lengths: np.ndarray, example_id: np.ndarray) -> int:
        longest = int(lengths.max(initial=0))
        if self.pad_to_length is None:
            return -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        if longest > self.pad_to_length:
            raise ValueError(
                f"example {int(example_id[lengths.argmax()])} has {longest} tokens, more than the collator's "
                f"pad_to_length={self.pad_to_length}: the shards hold sequences longer than their manifest's "
                f"max_seq_length; rebuild them, or set data.pad_to_max_length=false"
            )
        return self.pad_to_length

    def _predictions(self, counts: np.ndarray, example_id: np.ndarray) -> int:
        most = int(counts.max(initial=0))
        if self.predictions_per_seq is None:
            return most
        if most > self.predictions_per_seq:
            raise ValueError(
                f"example {int(example_id[counts.argmax()])} has {most} masked positions, more than the "
                f"collator's predictions_per_seq={self.predictions_per_seq} (the masking rule's "
                f"max_predictions_per_seq): the shards' masks do not follow their manifest; rebuild them"
            )
        return self.predictions_per_seq


def _flat_index(offsets: np.ndarray, width: int) -> np.ndarray:
    """(N,) int64: where each item of rows laid back to back (row i is items offsets[i]:offsets[i+1])
    goes in a row-major (rows, width) array, each row left-aligned."""
    lengths = np.diff(offsets)
    row_start = np.arange(len(lengths), dtype=np.int64) * width - offsets[:-1]  # (rows,)
    return np.arange(int(offsets[-1]), dtype=np.int64) + np.repeat(row_start, lengths)


def _padded(values: np.ndarray, size: int, fill: int) -> np.ndarray:
    """(size,) int64: values, then fill."""
    out = np.full(size, fill, dtype=np.int64)
    out[: len(values)] = values
    return out


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keyword arguments of ``BertForPreTraining.forward`` in a collated batch."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


def dense_mlm_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T) labels for a dense MLM head (ours with ``dense_mlm_labels``, transformers' ``labels``)
    from a batch's sparse (B, P) positions/labels: the original id at each masked position,
    IGNORE_INDEX elsewhere. On the batch's device."""
    positions, labels = batch["masked_lm_positions"], batch["masked_lm_labels"]  # (B, P)
    B, T = batch["input_ids"].shape
    # Padding slots hold position 0 with label -100. [CLS] sits at position 0 and is never masked,
    # so writing -100 there would do no harm, but a scatter's order among equal indices is
    # unspecified: send the padding slots to an extra column T instead, then drop it. A scatter
    # has a fixed shape, where boolean-mask indexing would sync the host with the device.
    slots = torch.where(labels != IGNORE_INDEX, positions, T)  # (B, P)
    dense = torch.full((B, T + 1), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
    dense.scatter_(1, slots, labels)
    return dense[:, :T].contiguous()  # (B, T)


# --- loaders -----------------------------------------------------------------------------------


def _data_loader(dataset: PretrainingExamples, requests, collate: Collator, cfg: DataConfig) -> DataLoader:
    """A DataLoader over precomputed batch requests: batch_size=None hands each request to the
    dataset whole, so the workers never choose rows; order is kept whatever num_workers."""
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=requests,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        prefetch_factor=cfg.prefetch_factor if workers else None,
    )


class PretrainingLoader:
    """Training micro batches of one rank, epoch after epoch, with a resumable position.

    ``iter(loader)`` yields the rest of the current epoch (see ``training.sampler`` for the order;
    the tail of each epoch smaller than one global batch is dropped), then moves to the next
    epoch. The position counts the batches handed out, not those prefetched by workers: take
    ``state_dict()`` after training on the last batch received.
    """

    def __init__(self, dataset: PretrainingExamples, plan: TrainBatchPlan, collate: Collator, cfg: DataConfig):
        self.dataset, self.plan, self.collate, self.cfg = dataset, plan, collate, cfg
        self.epoch = 0
        self.samples_consumed = 0  # position in this epoch's global order, the same on every rank
        self._active: Optional[object] = None  # identifies the one live iterator

    def __len__(self) -> int:
        """Batches left in the current epoch on this rank."""
        return self.plan.batches_left(self.samples_consumed)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        token = self._active = object()
        requests = self.plan.requests(self.epoch, self.samples_consumed)
        for batch in _data_loader(self.dataset, requests, self.collate, self.cfg):
            if self._active is not token:
                raise RuntimeError("the loader was restarted or its state reloaded during this iteration")
            self.samples_consumed += self.plan.global_batch_size
            yield batch
        if self._active is token:
            self.epoch += 1
            self.samples_consumed = 0
            self._active = None

    def state_dict(self) -> dict[str, int]:
        """Position and what it depends on; identical on every rank."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "samples_consumed": self.samples_consumed,
            "batches_consumed": self.samples_consumed // self.plan.global_batch_size,
            "seed": self.plan.seed,
            "shuffle": self.plan.shuffle,
            "num_samples": self.plan.num_samples,
            "world_size": self.plan.world_size,
            "micro_batch_size": self.plan.micro_batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue exactly after the last batch the saved run consumed (by index arithmetic).

        A different world size or micro batch size is accepted: the position is a prefix of the
        epoch's global order, so the new layout takes up the remaining rows with none repeated or
        skipped (``batches_consumed`` then refers to the saved layout). A different seed, shuffle
        or split size is refused: the saved prefix would name other rows.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')!r}, this code reads {STATE_VERSION}")
        if state["seed"] != self.plan.seed:
            raise ValueError(
                f"the checkpoint's data order was drawn with seed {state['seed']} but this run has "
                f"seed={self.plan.seed}: resume with seed={state['seed']}"
            )
        if state["shuffle"] != self.plan.shuffle:
            raise ValueError(f"the checkpoint was trained with data.shuffle={state['shuffle']}: resume with it")
        if state["num_samples"] != self.plan.num_samples:
            raise ValueError(
                f"the checkpoint was trained on a split of {state['num_samples']} rows but this one has "
                f"{self.plan.num_samples}: resume on the same shards (data_dir)"
            )
        if not 0 <= state["samples_consumed"] <= self.plan.num_samples or state["epoch"] < 0:
            raise ValueError(f"corrupt data loader state {state}")
        self.epoch, self.samples_consumed = int(state["epoch"]), int(state["samples_consumed"])
        self._active = None


@dataclass
class PretrainingData:
    """Validated shards of one run and what its loaders need."""

    data_dir: str
    cfg: DataConfig
    seed: int
    """Seeds the epoch order and the dynamic masks."""
    manifest: ShardManifest
    vocab: list[str]
    pad_to_multiple_of: Optional[int] = None
    """Overrides data.pad_to_multiple_of (open_pretraining_data's argument); None: the config's."""
    unpad: bool = False
    """Batches also carry the unpadded layout (unpad_index, cu_seqlens): the trainer's trainer.unpad."""

    @property
    def special_tokens(self) -> SpecialTokens:
        return SpecialTokens(**self.manifest.special_tokens)

    @property
    def has_sentence_label(self) -> bool:
        return self.manifest.objective != "none"

    def split(self, split: str) -> ShardedSplit:
        return ShardedSplit(self.data_dir, self.manifest, split).open()

    def masking_rule(self, training: bool = True) -> MaskingParams:
        """The rule of training batches (``training_masking``: data.masking over the manifest's) or,
        training=False, of eval batches: the manifest's, whatever data.masking says, so held-out loss
        and accuracy of runs trained at different rates measure the same task."""
        return training_masking(self.manifest, self.cfg.masking) if training else masking_params(self.manifest)

    def masking_summary(self) -> str:
        """The masking training and evaluation use, in one line for the log at start."""
        length = self.manifest.max_seq_length
        if self.manifest.masking.mode != "dynamic":
            return f"masking: static, as stored ({describe_masking(self.masking_rule(False), length)})"
        train, held_out = self.masking_rule(True), self.masking_rule(False)
        if train == held_out:
            return f"masking: dynamic, the manifest's rule ({describe_masking(train, length)})"
        return (
            f"masking: dynamic, training {describe_masking(train, length)} (data.masking); evaluation keeps "
            f"the manifest's {describe_masking(held_out, length)}"
        )

    def masking_warnings(self) -> list[str]:
        """What the training rule does that the run may not have meant: a data.masking.max_predictions_per_seq
        below what the rate asks of a full example (``predictions_cap_warning``)."""
        if "max_predictions_per_seq" not in self.cfg.masking.given():
            return []
        line = predictions_cap_warning(self.masking_rule(True), self.manifest.max_seq_length)
        return [line] if line else []

    def masker(self, training: bool = True) -> Optional[DynamicMasker]:
        """None for static masking (masks are stored); else the masker of training batches or, with
        training=False, of eval batches (``masking_rule``)."""
        if self.manifest.masking.mode != "dynamic":
            return None
        tables = masking_vocabulary(self.vocab)
        return DynamicMasker(
            self.masking_rule(training),
            tables.never_mask,
            tables.is_continuation,
            tables.mask_id,
            tables.size,
            self.seed,
        )

    def collator(self, batch_size: Optional[int] = None, training: bool = True) -> Collator:
        """Batches of fixed P (the max_predictions_per_seq of training's or evaluation's ``masking_rule``),
        T padded by data.pad_to_multiple_of or, with data.pad_to_max_length, to the shards'
        max_seq_length; ``batch_size`` rows if given."""
        return Collator(
            self.special_tokens.pad,
            self.has_sentence_label,
            pad_to_multiple_of=self.pad_to_multiple_of or self.cfg.pad_to_multiple_of,
            predictions_per_seq=self.masking_rule(training).max_predictions_per_seq,
            pad_to_length=self.manifest.max_seq_length if self.cfg.pad_to_max_length else None,
            batch_size=batch_size,
            unpad=self.unpad,
        )

    def train_loader(
        self, rank: int = 0, world_size: int = 1, micro_batch_size: Optional[int] = None
    ) -> PretrainingLoader:
        """This rank's training batches (data.train_split); micro batch size: data.micro_batch_size."""
        split = self.split(self.cfg.train_split)
        size = micro_batch_size or self.cfg.micro_batch_size
        plan = TrainBatchPlan(len(split), size, self.seed, rank, world_size, self.cfg.shuffle)
        return PretrainingLoader(PretrainingExamples(split, self.masker()), plan, self.collator(size), self.cfg)

    def eval_loader(self, rank: int = 0, world_size: int = 1, micro_batch_size: Optional[int] = None) -> DataLoader:
        """The eval split in storage order, rank r taking rows r, r+W, ...; nothing dropped, so
        ranks may run a different number of batches (by one): evaluate without per-batch collectives
        and reduce the sums once at the end. Empty when the pipeline held out no eval rows.
        Micro batch size: data.eval_micro_batch_size, else data.micro_batch_size; a rank's last,
        shorter batch is filled with padding rows (example_id -1, no labels) to keep its shape.
        Dynamic masks: the manifest's rule as in epoch 0 (``masking_rule(training=False)``), whatever
        data.masking says."""
        split = self.split(self.cfg.eval_split)
        size = micro_batch_size or self.cfg.eval_micro_batch_size or self.cfg.micro_batch_size
        plan = EvalBatchPlan(len(split), size, rank, world_size)
        examples = PretrainingExamples(split, self.masker(training=False))
        return _data_loader(examples, plan.requests(EVAL_MASKING_EPOCH), self.collator(size, training=False), self.cfg)


def open_pretraining_data(
    data_dir: str,
    cfg: DataConfig,
    seed: int,
    expect: RunExpectations,
    pad_to_multiple_of: Optional[int] = None,
    unpad: bool = False,
) -> PretrainingData:
    """Read ``data_dir``'s manifest and validate it against the run and ``cfg``'s split names
    (DataContractError on any mismatch) and data.masking (``training_masking``: ConfigError), before
    any training.

    ``expect.max_seq_length`` defaults to ``cfg.max_seq_length``. ``pad_to_multiple_of``, if
    given, replaces data.pad_to_multiple_of (T up to a multiple; 1 pads to the longest sequence of
    each batch). ``unpad``: batches also carry unpad_index and cu_seqlens (trainer.unpad).
    """
    try:
        manifest = contract.read_manifest(data_dir)
    except ContractError as e:
        raise DataContractError(f"cannot use {data_dir} as training data: {e}") from e
    if expect.max_seq_length is None and cfg.max_seq_length is not None:
        expect = dataclasses.replace(expect, max_seq_length=cfg.max_seq_length)
    vocab = validate_manifest(manifest, data_dir, expect)
    training_masking(manifest, cfg.masking)  # ConfigError for an override the shards can not take
    splits = sorted({s.split for s in manifest.shards})
    if cfg.train_split not in splits:
        raise DataContractError(
            f"{data_dir} has no split {cfg.train_split!r} (its splits: {splits}): set data.train_split to one of them"
        )
    if not sum(s.rows for s in manifest.shards_of(cfg.train_split)):
        raise DataContractError(
            f"the split {cfg.train_split!r} of {data_dir} is empty (0 examples): the data job wrote no training "
            f"examples. Check its summary and {data_dir}/rejects/*.jsonl for what it dropped (inputs that "
            f"matched nothing useful, documents under cleaning.min_document_chars, an eval_fraction that held "
            f"out every document), then rerun the data job (python -m pipeline ...) on enough input"
        )
    if cfg.eval_split not in splits and cfg.eval_split not in contract.SPLITS:
        raise DataContractError(
            f"{data_dir} has no split {cfg.eval_split!r} (its splits: {splits}): set data.eval_split to one of them"
        )
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
    return PretrainingData(data_dir, cfg, seed, manifest, vocab, pad_to_multiple_of, unpad)
