"""Masked-LM masking as in the original BERT recipe; one function for static and dynamic masking.

The Beam job calls it ``dupe_factor`` times per document (static masking); the trainer's
loader calls it per (seed, epoch, sample) at load time (dynamic masking). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    labels = tokens[positions]
    masked = tokens.copy()
    u = rng.random(len(positions))
    random_ids = rng.integers(0, vocab_size, size=len(positions))
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
