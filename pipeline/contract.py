"""The shard contract: the one definition of what the Beam job writes and the trainer reads.

Imports pyarrow and numpy only (no Beam, no torch), so both sides import it.

Layout of an output directory::

    output_dir/
      manifest.json                     # ShardManifest below
      vocab.txt                         # the WordPiece vocabulary the ids refer to
      train/part-00000-of-00016.arrow   # Arrow IPC files, memory-mappable
      eval/part-00000-of-00001.arrow
      documents/part-...-of-....arrow   # doc_id -> source, record id, title, split
      rejects/part-...-of-....jsonl     # every rejected document or unreadable part

One row of a train/eval shard is one pre-training example (unpadded)::

    input_ids            list<uint16|int32>  [CLS] A [SEP] B [SEP]; masked when masking is static
    segment_b_start      uint16              index of B's first token; token types are 0 before it, 1 from it
                                              (== len(input_ids) when there is no B: objective "none")
    next_sentence_label  int8                1 = B is random (nsp) or swapped (sop); absent for "none"
    masked_lm_positions  list<uint16>        sorted positions of the predictions (static masking only)
    masked_lm_ids        list<uint16|int32>  the original ids at those positions (static masking only)
    example_id           int64               stable id of this example (provenance, resume checks)
    doc_id_a, doc_id_b   int64               compact ids of the documents A and B came from
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
VOCAB_FILE = "vocab.txt"
SHARD_SUFFIX = ".arrow"
SPLITS = ("train", "eval")
OBJECTIVES = ("nsp", "sop", "none")
MASKING_MODES = ("static", "dynamic")
SCHEMA_METADATA_KEY = b"bert_pretrain.schema_version"

# Column names, written once.
INPUT_IDS = "input_ids"
SEGMENT_B_START = "segment_b_start"
NEXT_SENTENCE_LABEL = "next_sentence_label"
MASKED_LM_POSITIONS = "masked_lm_positions"
MASKED_LM_IDS = "masked_lm_ids"
EXAMPLE_ID = "example_id"
DOC_ID_A = "doc_id_a"
DOC_ID_B = "doc_id_b"


class ContractError(ValueError):
    """Shards or manifest do not match what a reader expects."""


def token_id_type(vocab_size: int) -> pa.DataType:
    """The most compact Arrow integer type that holds every token id."""
    return pa.uint16() if vocab_size <= np.iinfo(np.uint16).max + 1 else pa.int32()


def example_schema(vocab_size: int, objective: str, masking: str) -> pa.Schema:
    if objective not in OBJECTIVES:
        raise ContractError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if masking not in MASKING_MODES:
        raise ContractError(f"masking must be one of {MASKING_MODES}, got {masking!r}")
    ids = token_id_type(vocab_size)
    fields = [
        pa.field(INPUT_IDS, pa.list_(ids), nullable=False),
        pa.field(SEGMENT_B_START, pa.uint16(), nullable=False),
    ]
    if objective != "none":
        fields.append(pa.field(NEXT_SENTENCE_LABEL, pa.int8(), nullable=False))
    if masking == "static":
        fields += [
            pa.field(MASKED_LM_POSITIONS, pa.list_(pa.uint16()), nullable=False),
            pa.field(MASKED_LM_IDS, pa.list_(ids), nullable=False),
        ]
    fields += [
        pa.field(EXAMPLE_ID, pa.int64(), nullable=False),
        pa.field(DOC_ID_A, pa.int64(), nullable=False),
        pa.field(DOC_ID_B, pa.int64(), nullable=False),
    ]
    return pa.schema(fields, metadata={SCHEMA_METADATA_KEY: str(SCHEMA_VERSION).encode()})


@dataclass(frozen=True)
class ExampleColumns:
    """Many examples, columnar (how the pipeline builds them; ``to_record_batch`` makes Arrow rows).

    Example e's ids are ``input_ids[offsets[e]:offsets[e+1]]`` and its predictions
    ``masked_lm_*[masked_offsets[e]:masked_offsets[e+1]]`` (positions relative to the example).
    """

    input_ids: np.ndarray  # (N,) int32, with [CLS]/[SEP]; masked when masking is static
    offsets: np.ndarray  # (E+1,) int64
    segment_b_start: np.ndarray  # (E,)
    next_sentence_label: np.ndarray  # (E,) int8; -1 where the objective has no sentence-pair label
    masked_lm_positions: np.ndarray  # (P,) int32, sorted within each example; empty when dynamic
    masked_offsets: np.ndarray  # (E+1,) int64
    masked_lm_ids: np.ndarray  # (P,) int32, the original ids at those positions
    example_id: np.ndarray  # (E,) int64
    doc_id_a: np.ndarray  # (E,) int64
    doc_id_b: np.ndarray  # (E,) int64

    def __len__(self) -> int:
        return len(self.example_id)

    @classmethod
    def concat(cls, parts: Sequence["ExampleColumns"]) -> "ExampleColumns":
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_columns()
        if len(parts) == 1:
            return parts[0]

        def offsets(name):
            pieces = [getattr(parts[0], name)]
            base = pieces[0][-1]
            for p in parts[1:]:
                pieces.append(getattr(p, name)[1:] + base)
                base = pieces[-1][-1]
            return np.concatenate(pieces)

        flat = {
            f.name: np.concatenate([getattr(p, f.name) for p in parts])
            for f in dataclasses.fields(cls)
            if f.name not in ("offsets", "masked_offsets")
        }
        return cls(offsets=offsets("offsets"), masked_offsets=offsets("masked_offsets"), **flat)

    @classmethod
    def of_example(
        cls,
        input_ids,
        segment_b_start: int,
        next_sentence_label: int,
        masked_lm_positions,
        masked_lm_ids,
        example_id: int,
        doc_id_a: int,
        doc_id_b: int,
    ) -> "ExampleColumns":
        """One example (tests and small tools)."""
        ids, pos = np.asarray(input_ids, np.int32), np.asarray(masked_lm_positions, np.int32)
        return cls(
            ids,
            np.array([0, len(ids)]),
            np.array([segment_b_start]),
            np.array([next_sentence_label], np.int8),
            pos,
            np.array([0, len(pos)]),
            np.asarray(masked_lm_ids, np.int32),
            np.array([example_id]),
            np.array([doc_id_a]),
            np.array([doc_id_b]),
        )


def empty_columns() -> ExampleColumns:
    z = np.zeros(0, np.int64)
    return ExampleColumns(
        z.astype(np.int32),
        np.zeros(1, np.int64),
        z,
        z.astype(np.int8),
        z.astype(np.int32),
        np.zeros(1, np.int64),
        z.astype(np.int32),
        z,
        z,
        z,
    )


def _list_array(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32), type=pa.int32()),
        pa.array(values.astype(np.dtype(str(value_type)), copy=False), type=value_type),
    )


def to_record_batch(cols: ExampleColumns, schema: pa.Schema) -> pa.RecordBatch:
    names = set(schema.names)
    ids_type = schema.field(INPUT_IDS).type.value_type
    arrays: dict[str, pa.Array] = {
        INPUT_IDS: _list_array(cols.offsets, cols.input_ids, ids_type),
        SEGMENT_B_START: pa.array(cols.segment_b_start.astype(np.uint16), type=pa.uint16()),
    }
    if NEXT_SENTENCE_LABEL in names:
        arrays[NEXT_SENTENCE_LABEL] = pa.array(cols.next_sentence_label.astype(np.int8), type=pa.int8())
    if MASKED_LM_POSITIONS in names:
        arrays[MASKED_LM_POSITIONS] = _list_array(cols.masked_offsets, cols.masked_lm_positions, pa.uint16())
        arrays[MASKED_LM_IDS] = _list_array(cols.masked_offsets, cols.masked_lm_ids, ids_type)
    for name in (EXAMPLE_ID, DOC_ID_A, DOC_ID_B):
        arrays[name] = pa.array(getattr(cols, name).astype(np.int64), type=pa.int64())
    return pa.RecordBatch.from_arrays([arrays[n] for n in schema.names], schema=schema)


def token_type_ids(segment_b_start: int, length: int) -> np.ndarray:
    """(T,) int8: 0 for [CLS] A [SEP], 1 for B [SEP]."""
    return (np.arange(length) >= segment_b_start).astype(np.int8)


def open_shard(path: str) -> pa.Table:
    """Memory-map one shard (zero-copy) and check its schema version."""
    reader = pa.ipc.open_file(pa.memory_map(path, "r"))
    version = (reader.schema.metadata or {}).get(SCHEMA_METADATA_KEY)
    if version != str(SCHEMA_VERSION).encode():
        raise ContractError(f"{path}: shard schema version {version!r}, this code reads {SCHEMA_VERSION}")
    return reader.read_all()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class SpecialTokens:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    NAMES = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}

    @classmethod
    def from_vocab(cls, vocab: Sequence[str]) -> "SpecialTokens":
        index = {tok: i for i, tok in enumerate(vocab)}
        missing = [tok for tok in cls.NAMES.values() if tok not in index]
        if missing:
            raise ContractError(f"vocabulary lacks BERT's special tokens {missing}")
        return cls(**{name: index[tok] for name, tok in cls.NAMES.items()})

    def ids(self) -> list[int]:
        return [self.pad, self.unk, self.cls, self.sep, self.mask]


@dataclass
class ShardInfo:
    file: str  # relative to the output directory, e.g. "train/part-00000-of-00016.arrow"
    split: str
    rows: int
    tokens: int  # non-padding tokens (examples are stored unpadded)
    sha256: str
    bytes: int


@dataclass
class MaskingSpec:
    mode: str  # "static" (stored masks) or "dynamic" (the trainer masks at load time)
    masked_lm_prob: float
    max_predictions_per_seq: int
    whole_word: bool
    dupe_factor: int
    mask_prob: float = 0.8  # of the chosen positions: [MASK]
    random_prob: float = 0.1  # random token; the rest keep the original
    # Added after the first manifests (SpanBERT span masking): the defaults read those as they were made.
    spans: bool = False  # spans of whole words, 80/10/10 per span (``pipeline.masking.choose_spans``)
    span_p: float = 0.2  # span lengths in words: geometric(span_p) on 1..max_span_words
    max_span_words: int = 10

    @classmethod
    def from_dict(cls, d: dict) -> "MaskingSpec":
        """The manifest's ``masking`` object; fields added later take their defaults when absent.
        ContractError for a field this code does not know (a manifest from a newer version)."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ContractError(
                f"the manifest's masking has fields this code does not know ({', '.join(unknown)}): "
                "read the shards with the code that wrote them, or rebuild them"
            )
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that say how the shards are masked, for a fingerprint: the span fields are left
        out while spans are off (they change no mask then), so a manifest from before them keeps its
        fingerprint (``training.checkpoint.data_identity``)."""
        d = dataclasses.asdict(self)
        if not self.spans:
            for name in _SPAN_FIELDS:
                d.pop(name)
        return d


_SPAN_FIELDS = ("spans", "span_p", "max_span_words")


@dataclass
class ShardManifest:
    """``output_dir/manifest.json``; the trainer validates a run against it before training."""

    schema_version: int
    vocab_file: str
    vocab_sha256: str
    vocab_size: int
    lowercase: bool
    special_tokens: dict[str, int]
    max_seq_length: int
    objective: str
    masking: MaskingSpec
    seed: int
    shards: list[ShardInfo]
    # Added after the first manifests: defaults keep those loading. None: accents stripped
    # exactly when lowercasing (what every manifest without the field was made with).
    strip_accents: Optional[bool] = None
    # Stripping kept the letters written with marks (й, ё, kana, Indic vowel signs), removing
    # only accents (``pipeline.accents``); False: every mark, as BERT does.
    keep_letters: bool = False
    casing_reason: str = ""  # why lowercase/strip_accents were chosen (counts over the vocabulary)
    statistics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # What the job noticed that does not stop it but makes a split measure little (no eval split,
    # eval labels all one class): ``pipeline.heldout.split_warnings``; the trainer says the eval ones again at start.
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_job(
        cls,
        *,
        vocab: Sequence[str],
        vocab_sha256: str,
        lowercase: bool,
        strip_accents: bool,
        casing_reason: str,
        keep_letters: bool = False,
        max_seq_length: int,
        objective: str,
        masking: MaskingSpec,
        seed: int,
        shards: Sequence[ShardInfo],
        statistics: dict[str, Any],
        config: dict[str, Any],
        warnings: Sequence[str] = (),
    ) -> "ShardManifest":
        """The manifest of a finished job, from its parts: the vocabulary written to VOCAB_FILE
        (``vocab``, in id order, and the sha256 of that file), how its text was normalised, the
        example settings, the committed shards, the summed statistics and the (redacted)
        configuration. This contract's schema version and file name are filled in, and the
        special tokens' ids looked up in ``vocab`` (ContractError when one is missing)."""
        special = SpecialTokens.from_vocab(vocab)
        return cls(
            schema_version=SCHEMA_VERSION,
            vocab_file=VOCAB_FILE,
            vocab_sha256=vocab_sha256,
            vocab_size=len(vocab),
            lowercase=lowercase,
            special_tokens={name: getattr(special, name) for name in SpecialTokens.NAMES},
            max_seq_length=max_seq_length,
            objective=objective,
            masking=masking,
            seed=seed,
            shards=list(shards),
            strip_accents=strip_accents,
            keep_letters=keep_letters,
            casing_reason=casing_reason,
            statistics=statistics,
            config=config,
            warnings=list(warnings),
        )

    @property
    def strips_accents(self) -> bool:
        """Whether the shards' text had accents stripped (resolving an older manifest's None)."""
        return self.lowercase if self.strip_accents is None else self.strip_accents

    def shards_of(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "ShardManifest":
        d = dict(d)
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ContractError(
                f"manifest schema version {d.get('schema_version')!r}; this code reads {SCHEMA_VERSION}"
            )
        d["masking"] = MaskingSpec.from_dict(d["masking"])
        d["shards"] = [ShardInfo(**s) for s in d["shards"]]
        return cls(**d)


def read_manifest(output_dir: str) -> ShardManifest:
    path = os.path.join(output_dir, MANIFEST_FILE)
    if not os.path.isdir(output_dir):
        raise ContractError(
            f"{output_dir} does not exist" if not os.path.exists(output_dir) else f"{output_dir} is not a directory"
        )
    if not os.path.exists(path):
        raise ContractError(f"no {MANIFEST_FILE} in {output_dir}: not a finished pipeline output")
    with open(path, encoding="utf-8") as f:
        return ShardManifest.from_dict(json.load(f))


def read_vocab(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]
