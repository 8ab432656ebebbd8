"""Masked-LM masking as in the original BERT recipe; one rule for static and dynamic masking.

The Beam job calls it ``dupe_factor`` times per document (static masking, ``mask_batch``); the
trainer's loader masks per (seed, epoch, sample) at load time (dynamic masking): ``mask_tokens``
with a generator per example, a whole micro batch at once through ``mask_examples``. numpy only.

Three units of prediction: single pieces (BERT), whole words (``whole_word``), and spans of whole
words (``spans``, SpanBERT: Joshi et al. 2020), each within the same budget (``num_to_predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class MaskingParams:
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word: bool = False
    mask_prob: float = 0.8  # chosen positions -> [MASK]
    random_prob: float = 0.1  # chosen positions -> a random id from the whole vocabulary; rest unchanged
    spans: bool = False  # SpanBERT: spans of whole words (whatever whole_word says), 80/10/10 per span
    span_p: float = 0.2  # span lengths in words: geometric(span_p) restricted to 1..max_span_words
    max_span_words: int = 10  # longest span, in words

    def __post_init__(self):
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.max_predictions_per_seq < 1:
            raise ValueError("max_predictions_per_seq must be >= 1")
        if self.mask_prob < 0 or self.random_prob < 0 or self.mask_prob + self.random_prob > 1:
            raise ValueError("mask_prob and random_prob must be >= 0 and sum to at most 1")
        check_span_lengths(self.span_p, self.max_span_words)


def check_span_lengths(span_p: float, max_span_words: int) -> None:
    """ValueError naming the setting to change when span lengths can not be drawn (checked whether or
    not spans are on, so a manifest or config never records settings that would fail once turned on)."""
    if not 0.0 < span_p <= 1.0:
        raise ValueError(f"span_p must be in (0, 1] (SpanBERT: 0.2), got {span_p}")
    if not 1 <= max_span_words <= _MAX_SPAN_WORDS:
        raise ValueError(f"max_span_words must be in [1, {_MAX_SPAN_WORDS}] (SpanBERT: 10), got {max_span_words}")


def span_length_probabilities(span_p: float, max_span_words: int) -> np.ndarray:
    """(L,) the probability of a span of 1..L words: geometric(span_p), p(1-p)^(l-1), restricted to
    l <= L and renormalised, as SpanBERT draws them (p=0.2, L=10: mean 3.80 words)."""
    lengths = np.arange(1, max_span_words + 1)
    weights = span_p * (1.0 - span_p) ** (lengths - 1)
    return weights / weights.sum()


def span_lengths(u: np.ndarray, span_p: float, max_span_words: int) -> np.ndarray:
    """(n,) span lengths in words from (n,) uniform draws in [0, 1): the inverse of the cumulative
    distribution of ``span_length_probabilities``, F(l) = (1 - q^l) / (1 - q^L) with q = 1 - span_p,
    in closed form (a few times quicker than a search of the table)."""
    if span_p == 1.0:
        return np.ones(len(u), dtype=np.int64)
    q = 1.0 - span_p
    lengths = np.floor(np.log1p(-u * (1.0 - q**max_span_words)) / np.log(q)).astype(np.int64) + 1
    return np.clip(lengths, 1, max_span_words)


_KEY_BITS = 42
_KEY_LIMIT = 1 << 40
_NOT_CANDIDATE = 1 << 41
_MAX_EXAMPLES = 1 << (63 - _KEY_BITS)
_POSITION_BITS = 16  # mask_examples packs (key, position) into one int64: keys < 2^40, positions < 2^16
_NOT_CHOSEN = np.iinfo(np.int64).max
_MAX_SPAN_WORDS = 512  # a window of this many words is read per span drawn


def num_to_predict(length, params: MaskingParams):
    """The original formula; ``length`` counts the special tokens too. Takes an int or an array of
    lengths (np.rint rounds half to even, exactly like Python 3's round())."""
    n = np.minimum(
        params.max_predictions_per_seq,
        np.maximum(1, np.rint(np.asarray(length) * params.masked_lm_prob).astype(np.int64)),
    )
    return int(n) if n.ndim == 0 else n


def word_groups(candidates: np.ndarray, tokens: np.ndarray, is_continuation: np.ndarray) -> list[np.ndarray]:
    """Whole words among the candidate positions: a ``##`` piece right after another
    candidate joins that word (a piece after [CLS]/[SEP] starts its own)."""
    cont = is_continuation[tokens[candidates]]
    adjacent = np.empty(len(candidates), dtype=bool)
    adjacent[:1] = False
    np.equal(candidates[1:], candidates[:-1] + 1, out=adjacent[1:])
    starts = np.flatnonzero(~(cont & adjacent))
    return np.split(candidates, starts[1:])


def mask_batch(
    tokens: np.ndarray,
    offsets: np.ndarray,
    rng: np.random.Generator,
    params: MaskingParams,
    never_mask: np.ndarray,
    mask_id: int,
    vocab_size: int,
    is_continuation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose and corrupt the MLM predictions of many examples at once.

    tokens: (N,) ids of E examples back to back, example e is tokens[offsets[e]:offsets[e+1]],
    each with its [CLS]/[SEP]. never_mask: (V,) bool, ids never predicted ([CLS], [SEP], [PAD],
    [MASK]). is_continuation: (V,) bool for ``##`` pieces, used with whole-word and span masking.
    Returns (masked (N,), positions (P,) sorted absolute indices into tokens, labels (P,)).

    Per example: ``num_to_predict`` positions drawn uniformly without replacement among the
    candidates (the first of a random order, as the original's shuffle-and-take), or whole words
    in random order skipping a word that would exceed the budget, or spans of whole words
    (``choose_spans``); then each chosen position is [MASK] with p=0.8, a random id from the whole
    vocabulary with p=0.1, else kept (with spans: one draw per span, for all its pieces).
    """
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    n_examples = len(lengths)
    if params.spans:  # the generator serves the examples in turn: their span plans, then the 80/10/10
        spans = choose_spans(tokens, offsets, [rng] * n_examples, params, never_mask, is_continuation)
        u = rng.random(len(spans.words))[spans.span]  # (P,) its span's draw
        random_ids = rng.integers(0, vocab_size, size=len(spans.positions))
        return _corrupt(tokens, spans.positions, u, random_ids, params, mask_id)
    example = np.repeat(np.arange(n_examples), lengths)  # (N,) example of each token
    budgets = num_to_predict(lengths, params)
    candidate = ~never_mask[tokens]
    if params.whole_word and is_continuation is not None:
        positions = np.concatenate(
            [np.zeros(0, np.int64)]
            + [
                offsets[e]
                + _whole_words(
                    tokens[offsets[e] : offsets[e + 1]],
                    candidate[offsets[e] : offsets[e + 1]],
                    int(budgets[e]),
                    rng,
                    is_continuation,
                )
                for e in range(n_examples)
            ]
        )
    else:
        # A random 40-bit key per token (non-candidates get 2^41, after every candidate); per
        # example, the `budget` candidates with the smallest keys. Example index in the high
        # bits: one integer argsort groups by example with random order inside (5x quicker
        # than lexsort on two keys).
        if n_examples >= _MAX_EXAMPLES:
            raise ValueError(f"mask_batch takes fewer than {_MAX_EXAMPLES} examples per call, got {n_examples}")
        keys = rng.integers(0, _KEY_LIMIT, len(tokens))
        keys[~candidate] = _NOT_CANDIDATE
        order = np.argsort((example.astype(np.int64) << _KEY_BITS) | keys, kind="stable")
        rank = np.arange(len(tokens)) - offsets[example[order]]
        take = (rank < budgets[example[order]]) & (keys[order] < _KEY_LIMIT)
        positions = np.sort(order[take])
    u = rng.random(len(positions))
    random_ids = rng.integers(0, vocab_size, size=len(positions))
    return _corrupt(tokens, positions, u, random_ids, params, mask_id)


def _corrupt(tokens, positions, u, random_ids, params: MaskingParams, mask_id: int):
    """(masked (N,), positions (P,), labels (P,)): each chosen position [MASK] where its draw u < mask_prob,
    its random id where u < mask_prob + random_prob, else kept."""
    labels = tokens[positions]
    masked = tokens.copy()
    to_mask = u < params.mask_prob
    to_random = ~to_mask & (u < params.mask_prob + params.random_prob)
    masked[positions[to_mask]] = mask_id
    masked[positions[to_random]] = random_ids[to_random]
    return masked, positions, labels


def _whole_words(tokens, candidate, budget, rng, is_continuation) -> np.ndarray:
    groups = word_groups(np.flatnonzero(candidate), tokens, is_continuation)
    chosen: list[np.ndarray] = []
    count = 0
    for g in rng.permutation(len(groups)):  # words in random order, as the original shuffles them
        if count >= budget:
            break
        if count + len(groups[g]) > budget:
            continue  # a word that would exceed the budget is skipped, as in the original
        chosen.append(groups[g])
        count += len(groups[g])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def mask_tokens(
    tokens: np.ndarray,
    rng: np.random.Generator,
    params: MaskingParams,
    never_mask: np.ndarray,
    mask_id: int,
    vocab_size: int,
    is_continuation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mask_batch`` for one example: (masked (T,), positions (P,) sorted, labels (P,))."""
    masked, positions, labels = mask_batch(
        tokens, np.array([0, len(tokens)]), rng, params, never_mask, mask_id, vocab_size, is_continuation
    )
    return masked, positions.astype(np.int32), labels.astype(np.int32)


def mask_examples(
    tokens: np.ndarray,
    offsets: np.ndarray,
    rngs: Sequence[np.random.Generator],
    params: MaskingParams,
    never_mask: np.ndarray,
    mask_id: int,
    vocab_size: int,
    is_continuation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``mask_tokens`` for E examples at once, example e with its own generator ``rngs[e]``: its masks
    are exactly those of ``mask_tokens(tokens[offsets[e]:offsets[e+1]], rngs[e], ...)``.

    The loader's dynamic masking, where each example has a generator of its own (seeded by seed,
    epoch and example id) so that its masks do not depend on the batch it lands in. Each generator
    makes the draws ``mask_tokens`` makes of it, in the same order and sizes (a key per token, an
    order of the words, or an order of the words and a span length each; then the 80/10/10 draws),
    so the masks are equal; choosing the positions and corrupting them run over the whole batch at once.

    Returns (masked (N,), positions (P,) sorted absolute indices into tokens, labels (P,),
    counts (E,) predictions per example).
    """
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)  # (E,)
    if len(rngs) != len(lengths):
        raise ValueError(f"mask_examples needs one generator per example: {len(rngs)} for {len(lengths)} examples")
    if params.spans:
        return _mask_spans_of_each(tokens, offsets, rngs, params, never_mask, mask_id, vocab_size, is_continuation)
    budgets = np.asarray(num_to_predict(lengths, params), dtype=np.int64).reshape(-1)  # (E,)
    candidate = ~never_mask[tokens]  # (N,)
    owner = np.repeat(np.arange(len(lengths)), lengths)  # (N,) example of each token
    if params.whole_word and is_continuation is not None:
        chosen = _whole_words_of_each(tokens, owner, candidate, budgets, rngs, is_continuation)
        counts = np.bincount(owner[chosen], minlength=len(lengths))
        draws = [(rng.random(n), rng.integers(0, vocab_size, size=n)) for rng, n in zip(rngs, counts.tolist())]
    else:
        # mask_tokens takes the min(budget, candidates) candidates of smallest key: the count is known
        # before the keys are drawn, so each generator makes all its draws in one visit.
        counts = np.minimum(budgets, np.bincount(owner[candidate], minlength=len(lengths)))
        keys, draws = [], []
        for rng, length, n in zip(rngs, lengths.tolist(), counts.tolist()):
            keys.append(rng.integers(0, _KEY_LIMIT, length))
            draws.append((rng.random(n), rng.integers(0, vocab_size, size=n)))
        chosen = _smallest_keys(_concat(keys, np.int64), offsets, candidate, counts)
    u = _concat([d[0] for d in draws], np.float64)  # (P,) in the order of the sorted positions
    random_ids = _concat([d[1] for d in draws], np.int64)
    masked, positions, labels = _corrupt(tokens, chosen, u, random_ids, params, mask_id)
    return masked, positions, labels, counts


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _smallest_keys(keys: np.ndarray, offsets: np.ndarray, candidate: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(P,) sorted token indices: per example, its counts[e] candidates of smallest key (equal keys
    by position, as ``mask_batch``'s stable sort). keys, candidate: (N,) per token; offsets (E+1,)."""
    lengths = np.diff(offsets)  # (E,)
    width = int(lengths.max(initial=0))
    if width > 1 << _POSITION_BITS:
        raise ValueError(f"mask_examples takes sequences of at most {1 << _POSITION_BITS} tokens, got {width}")
    starts = np.repeat(offsets[:-1], lengths)  # (N,) each token's example start
    local = np.arange(len(keys)) - starts  # (N,) position within the example
    # (key, position) in one integer, so a plain sort orders by key then position; one row per
    # example, non-candidates and padding last. Sorting (E, T) rows is several times quicker than
    # one argsort of the batch.
    table = np.full((len(lengths), width), _NOT_CHOSEN, dtype=np.int64)  # (E, T)
    table.reshape(-1)[local + np.repeat(np.arange(len(lengths)) * width, lengths)] = np.where(
        candidate, (keys << _POSITION_BITS) | local, _NOT_CHOSEN
    )
    table.sort(axis=1)
    chosen = table[np.arange(width) < counts[:, None]] & ((1 << _POSITION_BITS) - 1)  # (P,) row by row
    return np.sort(np.repeat(offsets[:-1], counts) + chosen)


@dataclass(frozen=True)
class CandidateWords:
    """The whole words among a batch's candidate pieces, in position order: a word is a candidate
    and the ``##`` pieces right after it (``word_groups`` over the batch; a ``##`` piece after a
    special token, or first in its example, starts a word of its own)."""

    first: np.ndarray  # (W,) token index of each word's first piece
    size: np.ndarray  # (W,) pieces
    owner: np.ndarray  # (W,) example, ascending
    column: np.ndarray  # (W,) index of the word within its example
    per_example: np.ndarray  # (E,) words of each example

    @classmethod
    def of(cls, tokens, offsets, candidate, is_continuation: np.ndarray | None) -> "CandidateWords":
        """tokens, candidate: (N,); offsets: (E+1,). Without ``is_continuation`` every piece is a word."""
        lengths = np.diff(offsets)  # (E,)
        cand = np.flatnonzero(candidate)  # (C,)
        cand_owner = np.repeat(np.arange(len(lengths)), lengths)[cand]
        joins = np.zeros(len(cand), dtype=bool)  # (C,) a ## piece right after a candidate of its example
        if is_continuation is not None:
            joins[1:] = (
                is_continuation[tokens[cand[1:]]] & (cand[1:] == cand[:-1] + 1) & (cand_owner[1:] == cand_owner[:-1])
            )
        word_first = np.flatnonzero(~joins)  # (W,) an index into cand
        owner = cand_owner[word_first]
        per_example = np.bincount(owner, minlength=len(lengths))
        starts = np.concatenate([[0], np.cumsum(per_example)[:-1]]).astype(np.int64)  # (E,) first word of each
        return cls(
            first=cand[word_first],
            size=np.diff(np.append(word_first, len(cand))),
            owner=owner,
            column=np.arange(len(word_first)) - starts[owner],
            per_example=per_example,
        )

    def pieces(self, words: np.ndarray) -> np.ndarray:
        """(P,) sorted token indices of the pieces of the words where ``words`` (W,) bool is set."""
        size = self.size[words]
        within = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)  # 0.. in each word
        return np.repeat(self.first[words], size) + within


def _whole_words_of_each(tokens, owner, candidate, budgets, rngs, is_continuation) -> np.ndarray:
    """(P,) sorted token indices of the words ``_whole_words`` chooses in each example, each
    example's words visited in the order its generator's ``permutation`` gives."""
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(budgets)))]).astype(np.int64)
    words = CandidateWords.of(tokens, offsets, candidate, is_continuation)
    n_words = words.per_example  # (E,)
    first_word = np.concatenate([[0], np.cumsum(n_words)[:-1]]).astype(np.int64)  # (E,)
    perms = [rng.permutation(n) for rng, n in zip(rngs, n_words.tolist())]
    visit = first_word[words.owner] + _concat(perms, np.int64)  # (W,) the word each example visits k-th
    never_fits = int(budgets.max(initial=0)) + 1
    sizes = np.full((len(budgets), int(n_words.max(initial=0))), never_fits, dtype=np.int64)  # (E, K)
    sizes[words.owner, words.column] = words.size[visit]
    taken = np.zeros(len(words.first), dtype=bool)
    taken[visit[_fill_budgets(sizes, budgets)[words.owner, words.column]]] = True
    return words.pieces(taken)


def _fill_budgets(sizes: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """(E, K) bool: the words taken when each row visits its words in order, taking each that still
    fits its budget and skipping one that would exceed it (the original's rule, so a later shorter
    word may still fit). sizes: (E, K) pieces of the k-th visited word; budgets: (E,)."""
    taken = np.zeros(sizes.shape, dtype=bool)
    count = np.zeros(len(budgets), dtype=np.int64)
    smallest_from = np.minimum.accumulate(sizes[:, ::-1], axis=1)[:, ::-1]  # (E, K) smallest word at k or later
    for k in range(sizes.shape[1]):
        room = budgets - count
        if not (smallest_from[:, k] <= room).any():
            break  # no row has a word left that fits
        fits = sizes[:, k] <= room  # a row at its budget takes nothing more (the original's break)
        taken[:, k] = fits
        count += np.where(fits, sizes[:, k], 0)
    return taken


# --- span masking (SpanBERT) ---------------------------------------------------------------------


@dataclass(frozen=True)
class SpanChoice:
    """The spans chosen in a batch. Spans are numbered 0..S-1 in position order (example by example)."""

    positions: np.ndarray  # (P,) sorted token indices of the chosen pieces
    span: np.ndarray  # (P,) the span each piece belongs to
    words: np.ndarray  # (S,) words in each span
    per_example: np.ndarray  # (E,) spans in each example


def choose_spans(
    tokens: np.ndarray,
    offsets: np.ndarray,
    rngs: Sequence[np.random.Generator],
    params: MaskingParams,
    never_mask: np.ndarray,
    is_continuation: np.ndarray | None = None,
) -> SpanChoice:
    """SpanBERT's choice of predictions: spans of whole words, within each example's ``num_to_predict``.

    tokens: (N,) ids of E examples back to back (``mask_batch``'s layout), offsets (E+1,); rngs: (E,)
    generators, the same one E times when one serves the batch (``mask_batch``). Example e's
    generator draws, in this order, its words' visiting order (``permutation``) and a span length per
    visit (``random``, mapped through ``span_lengths``), before the next example's draws.

    Per example, the words are visited in that order; a visited word not yet taken starts a span of
    up to its drawn length in words, running over the next words while they are free, contiguous
    (no special token between: a span never crosses [SEP]) and within the remaining budget. A span
    the budget cuts is shortened to the words that fit; one whose first word alone does not fit is
    skipped (a later, shorter word may still fit, as whole-word masking skips). It stops when the
    budget is spent or every word was visited, so with one-piece words it fills the budget exactly.
    SpanBERT instead cuts the last span mid-word at the budget and lets spans run into masked words.
    """
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    budgets = np.asarray(num_to_predict(np.diff(offsets), params), dtype=np.int64).reshape(-1)  # (E,)
    words = CandidateWords.of(tokens, offsets, ~never_mask[tokens], is_continuation)
    visits, uniforms = [], []
    for rng, n in zip(rngs, words.per_example.tolist()):
        visits.append(rng.permutation(n))
        uniforms.append(rng.random(n))
    lengths = span_lengths(_concat(uniforms, np.float64), params.span_p, params.max_span_words)
    taken, starts = _fill_spans(words, budgets, _concat(visits, np.int64), lengths, params.max_span_words)
    span_of_word = np.cumsum(starts[taken]) - 1  # (taken words,) starts imply taken
    return SpanChoice(
        positions=words.pieces(taken),
        span=np.repeat(span_of_word, words.size[taken]),
        words=np.bincount(span_of_word, minlength=int(starts.sum())),
        per_example=np.bincount(words.owner[starts], minlength=len(budgets)),
    )


def _fill_spans(
    words: CandidateWords, budgets: np.ndarray, visits: np.ndarray, lengths: np.ndarray, max_span_words: int
) -> tuple[np.ndarray, np.ndarray]:
    """(taken (W,), starts (W,)) bool: the words in a span, and those that start one, as ``choose_spans``
    describes. visits, lengths: (W,) laid out as the words, example e's k-th visit at its k-th word:
    the word visited (its index within the example) and the span length drawn for it.

    All examples advance one visit per step; each reads the window of ``max_span_words`` words from
    the one it visits (flat word indices: the windows of one step are one (E, L) gather)."""
    n_words, n_examples = len(words.size), len(budgets)
    first_word = np.concatenate([[0], np.cumsum(words.per_example)[:-1]]).astype(np.int64)  # (E,)
    # (W,) words a span from here may cover before a special token or the example's end breaks it
    joins_next = np.zeros(n_words, dtype=bool)
    joins_next[:-1] = (words.first[:-1] + words.size[:-1] == words.first[1:]) & (words.owner[:-1] == words.owner[1:])
    run_last = np.flatnonzero(~joins_next)  # (R,) the last word of each contiguous run
    reach = run_last[np.searchsorted(run_last, np.arange(n_words))] - np.arange(n_words) + 1
    # (W + L,) per word; the L entries past the last word keep every window in bounds, never free
    blocked = np.ones(n_words + max_span_words, dtype=bool)  # taken, or no word there
    blocked[:n_words] = False
    size = np.append(words.size, np.zeros(max_span_words, dtype=words.size.dtype))
    starts = np.zeros(n_words, dtype=bool)
    count = np.zeros(n_examples, dtype=np.int64)
    steps = np.arange(max_span_words)  # (L,)
    with_words = np.flatnonzero(words.per_example > 0)
    open_rows = words.per_example > 0
    for k in range(int(words.per_example.max(initial=0))):
        open_rows &= (count < budgets) & (k < words.per_example)
        if k % 8 == 0:  # rows where no free word fits any more would take nothing again: close them
            free_sizes = np.where(blocked[:n_words], np.iinfo(np.int64).max, words.size)
            smallest = np.full(n_examples, np.iinfo(np.int64).max)
            smallest[with_words] = np.minimum.reduceat(free_sizes, first_word[with_words])
            open_rows &= smallest <= budgets - count
        if not open_rows.any():
            break
        slot = np.minimum(first_word + k, n_words - 1)  # (E,) this step's visit, of the open rows
        visited = np.where(open_rows, first_word + visits[slot], n_words)  # (E,) closed rows: past the last word
        limit = np.minimum(lengths[slot], reach[np.minimum(visited, n_words - 1)])  # (E,)
        window = visited[:, None] + steps  # (E, L) the span's possible words
        ok = np.logical_and.accumulate(~blocked[window] & (steps < limit[:, None]), axis=1)
        pieces = np.cumsum(np.where(ok, size[window], 0), axis=1)  # (E, L) pieces of the first l+1 words
        fits = ok & (pieces <= (budgets - count)[:, None])
        blocked[window[fits]] = True
        starts[visited[fits[:, 0]]] = True
        count += np.where(fits, pieces, 0).max(axis=1)
    return blocked[:n_words], starts


def _mask_spans_of_each(tokens, offsets, rngs, params, never_mask, mask_id, vocab_size, is_continuation):
    """``mask_examples`` with spans: each generator draws its span plan (``choose_spans``), then one
    80/10/10 draw per span and a random id per piece, as ``mask_tokens`` draws them."""
    spans = choose_spans(tokens, offsets, rngs, params, never_mask, is_continuation)
    owner = np.searchsorted(offsets, spans.positions, side="right") - 1  # (P,)
    counts = np.bincount(owner, minlength=len(rngs))  # (E,) predictions per example
    draws = [
        (rng.random(s), rng.integers(0, vocab_size, size=n))
        for rng, s, n in zip(rngs, spans.per_example.tolist(), counts.tolist())
    ]
    u = _concat([d[0] for d in draws], np.float64)[spans.span]  # (P,) its span's draw
    random_ids = _concat([d[1] for d in draws], np.int64)
    masked, positions, labels = _corrupt(tokens, spans.positions, u, random_ids, params, mask_id)
    return masked, positions, labels, counts
