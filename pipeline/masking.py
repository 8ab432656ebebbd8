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


def word_groups(tokens: np.ndarray, special: np.ndarray, is_continuation: np.ndarray | None) -> list[np.ndarray]:
    """Candidate groups: one per token, or per whole word (a ``##`` piece joins the previous word)."""
    positions = np.flatnonzero(~special)
    if is_continuation is None or len(positions) == 0:
        return [positions[i:i + 1] for i in range(len(positions))]
    cont = is_continuation[tokens[positions]]
    # A continuation piece right after a non-special token extends the current word.
    prev_adjacent = np.concatenate(([False], positions[1:] == positions[:-1] + 1))
    starts = np.flatnonzero(~(cont & prev_adjacent))
    return np.split(positions, starts[1:])


def mask_tokens(
    tokens: np.ndarray,
    rng: np.random.Generator,
    params: MaskingParams,
    special_ids: np.ndarray,
    mask_id: int,
    vocab_size: int,
    is_continuation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose and corrupt the MLM predictions of one example.

    tokens: (T,) ids with [CLS]/[SEP]. special_ids: ids never masked. is_continuation: (V,) bool,
    True for ``##`` pieces; given only for whole-word masking.
    Returns (masked_tokens (T,), positions (P,) sorted, labels (P,) the original ids).
    """
    tokens = np.asarray(tokens)
    special = np.isin(tokens, special_ids)
    groups = word_groups(tokens, special, is_continuation if params.whole_word else None)
    budget = num_to_predict(len(tokens), params)
    order = rng.permutation(len(groups))
    chosen: list[np.ndarray] = []
    count = 0
    for g in order:
        if count >= budget:
            break
        group = groups[g]
        if count + len(group) > budget:
            continue  # a word that would exceed the budget is skipped, as in the original
        chosen.append(group)
        count += len(group)
    positions = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    labels = tokens[positions].copy()
    masked = tokens.copy()
    # One draw decides [MASK] / keep / random for every position; random ids span the whole vocabulary.
    u = rng.random(len(positions))
    random_ids = rng.integers(0, vocab_size, size=len(positions))
    to_mask = u < params.mask_prob
    to_random = (u >= params.mask_prob) & (u < params.mask_prob + params.random_prob)
    masked[positions[to_mask]] = mask_id
    masked[positions[to_random]] = random_ids[to_random]
    return masked, positions.astype(np.int32), labels.astype(np.int32)
