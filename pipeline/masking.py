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


def num_to_predict(length: int, params: MaskingParams) -> int:
    """The original formula; ``length`` counts the special tokens too (Python 3 rounding)."""
    return min(params.max_predictions_per_seq, max(1, int(round(length * params.masked_lm_prob))))


def word_groups(candidates: np.ndarray, tokens: np.ndarray, is_continuation: np.ndarray) -> list[np.ndarray]:
    """Whole words among the candidate positions: a ``##`` piece right after another
    candidate joins that word (a piece after [CLS]/[SEP] starts its own)."""
    cont = is_continuation[tokens[candidates]]
    adjacent = np.empty(len(candidates), dtype=bool)
    adjacent[:1] = False
    np.equal(candidates[1:], candidates[:-1] + 1, out=adjacent[1:])
    starts = np.flatnonzero(~(cont & adjacent))
    return np.split(candidates, starts[1:])


def mask_tokens(
    tokens: np.ndarray,
    rng: np.random.Generator,
    params: MaskingParams,
    never_mask: np.ndarray,
    mask_id: int,
    vocab_size: int,
    is_continuation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose and corrupt the MLM predictions of one example.

    tokens: (T,) ids with [CLS]/[SEP]. never_mask: (V,) bool, True for ids never predicted
    ([CLS], [SEP], [PAD], [MASK]). is_continuation: (V,) bool, True for ``##`` pieces; used
    only with whole-word masking. Returns (masked (T,), positions (P,) sorted, labels (P,)).
    """
    tokens = np.asarray(tokens)
    candidates = np.flatnonzero(~never_mask[tokens])
    budget = num_to_predict(len(tokens), params)
    if params.whole_word and is_continuation is not None:
        groups = word_groups(candidates, tokens, is_continuation)
        chosen: list[np.ndarray] = []
        count = 0
        for g in rng.permutation(len(groups)):  # words in random order, as the original shuffles them
            if count >= budget:
                break
            if count + len(groups[g]) > budget:
                continue  # a word that would exceed the budget is skipped, as in the original
            chosen.append(groups[g])
            count += len(groups[g])
        positions = np.sort(np.concatenate(chosen)) if chosen else candidates[:0]
    else:
        # Single-token words: the first `budget` of a random permutation of the candidates.
        positions = np.sort(candidates[rng.permutation(len(candidates))[:budget]])
    labels = tokens[positions]
    masked = tokens.copy()
    # One draw decides [MASK] / random / keep per position; random ids span the whole vocabulary.
    u = rng.random(len(positions))
    random_ids = rng.integers(0, vocab_size, size=len(positions))
    to_mask = u < params.mask_prob
    to_random = ~to_mask & (u < params.mask_prob + params.random_prob)
    masked[positions[to_mask]] = mask_id
    masked[positions[to_random]] = random_ids[to_random]
    return masked, positions.astype(np.int32), labels.astype(np.int32)
