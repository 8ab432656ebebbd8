"""Masked-LM masking as in the original BERT recipe; one rule for static and dynamic masking.

The Beam job calls it ``dupe_factor`` times per document (static masking, ``mask_batch``); the
trainer's loader masks per (seed, epoch, sample) at load time (dynamic masking): ``mask_tokens``
with a generator per example, a whole micro batch at once through ``mask_examples``. numpy only.
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

    def __post_init__(self):
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.max_predictions_per_seq < 1:
            raise ValueError("max_predictions_per_seq must be >= 1")
        if self.mask_prob < 0 or self.random_prob < 0 or self.mask_prob + self.random_prob > 1:
            raise ValueError("mask_prob and random_prob must be >= 0 and sum to at most 1")


_KEY_BITS = 42
_KEY_LIMIT = 1 << 40
_NOT_CANDIDATE = 1 << 41
_MAX_EXAMPLES = 1 << (63 - _KEY_BITS)
_POSITION_BITS = 16  # mask_examples packs (key, position) into one int64: keys < 2^40, positions < 2^16
_NOT_CHOSEN = np.iinfo(np.int64).max


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
    [MASK]). is_continuation: (V,) bool for ``##`` pieces, used with whole-word masking.
    Returns (masked (N,), positions (P,) sorted absolute indices into tokens, labels (P,)).

    Per example: ``num_to_predict`` positions drawn uniformly without replacement among the
    candidates (the first of a random order, as the original's shuffle-and-take), or whole words
    in random order skipping a word that would exceed the budget; then each chosen position is
    [MASK] with p=0.8, a random id from the whole vocabulary with p=0.1, else kept.
    """
    tokens = np.asarray(tokens)
    lengths = np.diff(offsets)
    n_examples = len(lengths)
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
    makes the draws ``mask_tokens`` makes of it, in the same order and sizes (a key per token, or
    an order of the words; then the 80/10/10 draws), so the masks are equal; choosing the positions
    and corrupting them run over the whole batch at once.

    Returns (masked (N,), positions (P,) sorted absolute indices into tokens, labels (P,),
    counts (E,) predictions per example).
    """
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)  # (E,)
    if len(rngs) != len(lengths):
        raise ValueError(f"mask_examples needs one generator per example: {len(rngs)} for {len(lengths)} examples")
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


def _whole_words_of_each(tokens, owner, candidate, budgets, rngs, is_continuation) -> np.ndarray:
    """(P,) sorted token indices of the words ``_whole_words`` chooses in each example, each
    example's words visited in the order its generator's ``permutation`` gives."""
    cand = np.flatnonzero(candidate)  # (C,)
    cand_owner = owner[cand]
    # word_groups over the batch: a ## piece right after a candidate of the same example joins its word
    joins = np.zeros(len(cand), dtype=bool)
    joins[1:] = is_continuation[tokens[cand[1:]]] & (cand[1:] == cand[:-1] + 1) & (cand_owner[1:] == cand_owner[:-1])
    word_first = np.flatnonzero(~joins)  # (W,) each word's first piece, an index into cand
    word_size = np.diff(np.append(word_first, len(cand)))  # (W,)
    word_owner = cand_owner[word_first]  # (W,) ascending
    n_words = np.bincount(word_owner, minlength=len(budgets))  # (E,)
    first_word = np.concatenate([[0], np.cumsum(n_words)[:-1]]).astype(np.int64)  # (E,)
    perms = [rng.permutation(n) for rng, n in zip(rngs, n_words.tolist())]
    visit = first_word[word_owner] + _concat(perms, np.int64)  # (W,) the word each example visits k-th
    column = np.arange(len(word_first)) - first_word[word_owner]  # (W,) that k
    never_fits = int(budgets.max(initial=0)) + 1
    sizes = np.full((len(budgets), int(n_words.max(initial=0))), never_fits, dtype=np.int64)  # (E, K)
    sizes[word_owner, column] = word_size[visit]
    taken = np.zeros(len(word_first), dtype=bool)
    taken[visit[_fill_budgets(sizes, budgets)[word_owner, column]]] = True
    return cand[np.repeat(taken, word_size)]


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
