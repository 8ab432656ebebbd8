"""Pre-training instances from tokenised documents: google-research/bert's algorithm, from its spec.

``create_instances`` follows shared/REFERENCE.md section 1 step by step for the ``nsp``
objective, and adapts it for ``sop`` (ALBERT) and ``none`` (RoBERTa-style packing).

Documents are processed in *pools* (see ``pipeline.transforms.CreateExamples``): the random B
of an NSP pair comes from another document of the same pool, so one worker holds one pool
(thousands of documents), never the whole corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.contract import ExampleColumns, empty_columns
from pipeline.masking import MaskingParams, mask_batch
from pipeline.seeding import MASK63, derive_seed, mix64, rng_for


@dataclass(frozen=True)
class TokenizedDocument:
    """A document as WordPiece ids: ``ids`` (N,) all sentences back to back; sentence k is
    ``ids[bounds[k]:bounds[k + 1]]``. Flat arrays keep Beam's (de)serialisation cheap."""

    doc_id: int
    ids: np.ndarray  # (N,) int32
    bounds: np.ndarray  # (S + 1,) int64, bounds[0] == 0, bounds[-1] == N

    @classmethod
    def from_sentences(cls, doc_id: int, sentences: Sequence[Sequence[int]]) -> "TokenizedDocument":
        sentences = [s for s in sentences if len(s)]
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        bounds = np.zeros(len(sentences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        ids = np.fromiter((t for s in sentences for t in s), dtype=np.int32, count=int(bounds[-1]))
        return cls(doc_id, ids, bounds)

    def __reduce__(self):
        # Tokenized documents are the job's largest shuffle (into the pools): ids travel as
        # uint16 when the vocabulary allows (half the bytes), bounds as int32.
        ids = self.ids.astype(np.uint16) if self.ids.size == 0 or int(self.ids.max()) < 1 << 16 else self.ids
        return _unpack_tokenized, (self.doc_id, ids, self.bounds.astype(np.int32))

    @property
    def num_sentences(self) -> int:
        return len(self.bounds) - 1

    def sentence(self, k: int) -> np.ndarray:
        return self.ids[self.bounds[k] : self.bounds[k + 1]]

    def span(self, start: int, stop: int) -> np.ndarray:
        """Sentences [start, stop) concatenated (a view, no copy)."""
        return self.ids[self.bounds[start] : self.bounds[stop]]


def _unpack_tokenized(doc_id: int, ids: np.ndarray, bounds: np.ndarray) -> TokenizedDocument:
    return TokenizedDocument(doc_id, ids.astype(np.int32), bounds.astype(np.int64))


@dataclass(frozen=True)
class InstanceParams:
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    objective: str = "nsp"  # "nsp" | "sop" | "none"


@dataclass(frozen=True)
class RawInstance:
    """An example before masking: A and B as id arrays (B empty for "none")."""

    tokens_a: np.ndarray
    tokens_b: np.ndarray
    label: int  # 1 = B random (nsp) / swapped (sop), 0 = continuation, -1 = no label ("none")
    doc_id_b: int


def truncate_seq_pair(
    a: np.ndarray, b: np.ndarray, max_num_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Trim the longer of A and B, one token at a time from its front or back (p = 0.5 each).

    Step k trims A if A is then strictly longer, else B, using coin k (front or back). Which
    side each step trims follows from the lengths alone: the first ``p = min(|len A - len B|,
    excess)`` steps trim the longer side, then B and A alternate (B first: equal lengths trim
    B). So the coins are counted per side with slices instead of a loop per token."""
    excess = len(a) + len(b) - max_num_tokens
    if excess <= 0:
        return a, b
    fronts = (rng.random(excess) < 0.5).tolist()  # one coin per trimmed token, drawn at once
    d = len(a) - len(b)
    p = min(abs(d), excess)
    if d > 0:
        a_steps, b_steps = fronts[:p] + fronts[p + 1 :: 2], fronts[p::2]
    else:
        a_steps, b_steps = fronts[p + 1 :: 2], fronts[:p] + fronts[p::2]
    a_front, b_front = sum(a_steps), sum(b_steps)
    return (a[a_front : len(a) - (len(a_steps) - a_front)], b[b_front : len(b) - (len(b_steps) - b_front)])


def _target_length(max_num_tokens: int, short_seq_prob: float, rng: np.random.Generator) -> int:
    # Drawn once per document per pass (as in the original).
    if rng.random() < short_seq_prob:
        return int(rng.integers(2, max_num_tokens, endpoint=True))
    return max_num_tokens


def _random_other(pool_size: int, index: int, rng: np.random.Generator) -> int:
    """A uniformly random document of the pool other than ``index`` (pool_size >= 2)."""
    j = int(rng.integers(0, pool_size - 1))
    return j + 1 if j >= index else j


def create_instances(
    pool: Sequence[TokenizedDocument], index: int, params: InstanceParams, rng: np.random.Generator
) -> list[RawInstance]:
    """All instances of ``pool[index]`` for one pass."""
    if params.objective == "none":
        return _packed_instances(pool[index], params, rng)
    doc = pool[index]
    max_num_tokens = params.max_seq_length - 3  # [CLS] A [SEP] B [SEP]
    target = _target_length(max_num_tokens, params.short_seq_prob, rng)
    out: list[RawInstance] = []
    chunk_start, length, i = 0, 0, 0
    n = doc.num_sentences
    bounds = doc.bounds.tolist()  # Python ints: this loop runs once per sentence
    while i < n:
        length += bounds[i + 1] - bounds[i]
        if i == n - 1 or length >= target:
            chunk_len = i + 1 - chunk_start
            a_end = int(rng.integers(1, chunk_len - 1, endpoint=True)) if chunk_len >= 2 else 1
            tokens_a = doc.span(chunk_start, chunk_start + a_end)
            if params.objective == "nsp":
                instance, i = _nsp_pair(pool, index, chunk_start, chunk_len, a_end, i, tokens_a, target, rng)
            else:
                instance = _sop_pair(doc, chunk_start, chunk_len, a_end, tokens_a, rng)
            if instance is not None:
                a, b = truncate_seq_pair(instance.tokens_a, instance.tokens_b, max_num_tokens, rng)
                if len(a) >= 1 and len(b) >= 1:
                    out.append(RawInstance(a, b, instance.label, instance.doc_id_b))
            chunk_start, length = i + 1, 0
        i += 1
    return out


def _nsp_pair(pool, index, chunk_start, chunk_len, a_end, i, tokens_a, target, rng):
    doc = pool[index]
    if chunk_len == 1 or rng.random() < 0.5:
        if len(pool) < 2:
            return None, i  # no other document to draw B from: no pair rather than a wrong label
        other = pool[_random_other(len(pool), index, rng)]
        target_b = target - len(tokens_a)
        n_other = other.num_sentences
        start = int(rng.integers(0, n_other - 1, endpoint=True))
        # Fill B from a random sentence of the other document until it reaches target_b: the
        # first stop in (start, n] with bounds[stop] - bounds[start] >= target_b, else n.
        reach = int(np.searchsorted(other.bounds, other.bounds[start] + target_b, side="left"))
        stop = min(max(reach, start + 1), n_other)
        # The chunk's unused sentences go back: the loop resumes right after A.
        i -= chunk_len - a_end
        return RawInstance(tokens_a, other.span(start, stop), 1, other.doc_id), i
    return RawInstance(tokens_a, doc.span(chunk_start + a_end, chunk_start + chunk_len), 0, doc.doc_id), i


def _sop_pair(doc, chunk_start, chunk_len, a_end, tokens_a, rng):
    if chunk_len >= 2:
        tokens_b = doc.span(chunk_start + a_end, chunk_start + chunk_len)
    else:
        # One sentence: split it at a random token so both segments are non-empty.
        sentence = doc.span(chunk_start, chunk_start + 1)
        if len(sentence) < 2:
            return None
        cut = int(rng.integers(1, len(sentence) - 1, endpoint=True))
        tokens_a, tokens_b = sentence[:cut], sentence[cut:]
    if rng.random() < 0.5:
        return RawInstance(tokens_b, tokens_a, 1, doc.doc_id)  # swapped order: label 1
    return RawInstance(tokens_a, tokens_b, 0, doc.doc_id)


def _packed_instances(doc: TokenizedDocument, params: InstanceParams, rng) -> list[RawInstance]:
    """RoBERTa DOC-SENTENCES: whole sentences packed up to the target; a sentence longer than
    the maximum is split across examples rather than dropped."""
    max_num_tokens = params.max_seq_length - 2  # [CLS] X [SEP]
    target = _target_length(max_num_tokens, params.short_seq_prob, rng)
    empty = doc.ids[:0]
    out, start = [], 0
    for k in range(doc.num_sentences):
        length = doc.bounds[k + 1] - doc.bounds[start]
        if length > target and k > start:
            out.append(RawInstance(doc.span(start, k), empty, -1, doc.doc_id))
            start = k
        if doc.bounds[k + 1] - doc.bounds[start] > max_num_tokens:  # one over-long sentence
            long = doc.span(start, k + 1)
            for lo in range(0, len(long), max_num_tokens):
                out.append(RawInstance(long[lo : lo + max_num_tokens], empty, -1, doc.doc_id))
            start = k + 1
    if start < doc.num_sentences:
        out.append(RawInstance(doc.span(start, doc.num_sentences), empty, -1, doc.doc_id))
    return out


@dataclass(frozen=True)
class Vocabulary:
    """What masking needs to know of the vocabulary."""

    size: int
    cls_id: int
    sep_id: int
    mask_id: int
    never_mask: np.ndarray  # (V,) bool: [CLS], [SEP], [PAD], [MASK] are never predicted
    is_continuation: np.ndarray  # (V,) bool, True for "##" pieces


def example_ids(seed: int, doc_id: int, pass_index: int, count: int) -> np.ndarray:
    """(count,) int64: the stable ids of a document pass's examples, in creation order."""
    return (
        mix64(np.arange(count, dtype=np.int64), derive_seed("example", seed, doc_id, pass_index)) & np.uint64(MASK63)
    ).astype(np.int64)


def assemble(raws: Sequence[RawInstance], vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[CLS] A [SEP] B [SEP]`` (``[CLS] A [SEP]`` without B) for each instance, back to back.
    Returns (tokens (N,) int32, offsets (E+1,), segment_b_start (E,))."""
    cls, sep = np.array([vocab.cls_id], np.int32), np.array([vocab.sep_id], np.int32)
    parts: list[np.ndarray] = []
    lengths = np.empty(len(raws), np.int64)
    b_start = np.empty(len(raws), np.int64)
    for e, raw in enumerate(raws):
        la, lb = len(raw.tokens_a), len(raw.tokens_b)
        parts += [cls, raw.tokens_a, sep] + ([raw.tokens_b, sep] if lb else [])
        lengths[e] = la + lb + (3 if lb else 2)
        b_start[e] = la + 2 if lb else lengths[e]
    offsets = np.zeros(len(raws) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(parts).astype(np.int32, copy=False) if parts else np.zeros(0, np.int32)
    return tokens, offsets, b_start


def examples_for_document(
    pool: Sequence[TokenizedDocument],
    index: int,
    pass_index: int,
    seed: int,
    params: InstanceParams,
    masking: MaskingParams | None,
    vocab: Vocabulary,
) -> ExampleColumns:
    """One pass over one document: instances, then (static masking) their masks, as columns.

    Seeded by (seed, doc_id, pass) alone, so the result does not depend on where or how
    often it runs. ``masking=None`` stores the examples unmasked (dynamic masking).
    """
    doc = pool[index]
    rng = rng_for(seed, doc.doc_id, pass_index)
    raws = create_instances(pool, index, params, rng)
    if not raws:
        return empty_columns()
    tokens, offsets, b_start = assemble(raws, vocab)
    n = len(raws)
    if masking is not None:
        tokens, positions, labels = mask_batch(
            tokens, offsets, rng, masking, vocab.never_mask, vocab.mask_id, vocab.size, vocab.is_continuation
        )
        owner = np.searchsorted(offsets, positions, side="right") - 1  # example of each position
        masked_offsets = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(owner, minlength=n), out=masked_offsets[1:])
        positions = (positions - offsets[owner]).astype(np.int32)
        labels = labels.astype(np.int32)
    else:
        positions = labels = np.zeros(0, np.int32)
        masked_offsets = np.zeros(n + 1, np.int64)
    return ExampleColumns(
        input_ids=tokens,
        offsets=offsets,
        segment_b_start=b_start,
        next_sentence_label=np.array([r.label for r in raws], np.int8),
        masked_lm_positions=positions,
        masked_offsets=masked_offsets,
        masked_lm_ids=labels,
        example_id=example_ids(seed, doc.doc_id, pass_index, n),
        doc_id_a=np.full(n, doc.doc_id, np.int64),
        doc_id_b=np.array([r.doc_id_b for r in raws], np.int64),
    )
