"""mask_tokens against the original recipe (shared/REFERENCE.md section 1, step 7)."""

import numpy as np
import pytest

from pipeline.masking import MaskingParams, mask_batch, mask_tokens, num_to_predict, word_groups

CLS, SEP, MASK, V = 2, 3, 4, 1000
SPECIAL = np.array([0, 2, 3, 4])
NEVER = np.isin(np.arange(V), SPECIAL)


def example(n_a=40, n_b=60, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([[CLS], rng.integers(10, V, n_a), [SEP], rng.integers(10, V, n_b), [SEP]])


def test_budget_formula_counts_special_tokens_and_caps():
    p = MaskingParams(masked_lm_prob=0.15, max_predictions_per_seq=20)
    assert num_to_predict(128, p) == 19  # round(19.2)
    assert num_to_predict(512, p) == 20  # capped
    assert num_to_predict(3, p) == 1  # at least one
    assert num_to_predict(10, p) == 2  # round(1.5) == 2 (Python 3 rounds half to even)


def test_exact_count_sorted_positions_labels_and_specials_untouched():
    p = MaskingParams()
    for seed in range(50):
        tokens = example(seed=seed)
        masked, pos, labels = mask_tokens(tokens, np.random.default_rng(seed), p, NEVER, MASK, V)
        assert len(pos) == num_to_predict(len(tokens), p)
        assert np.all(np.diff(pos) > 0)
        assert np.array_equal(labels, tokens[pos])
        assert not np.isin(tokens[pos], SPECIAL).any()
        untouched = np.setdiff1d(np.arange(len(tokens)), pos)
        assert np.array_equal(masked[untouched], tokens[untouched])


def test_80_10_10_split():
    p = MaskingParams(max_predictions_per_seq=80)
    kinds = np.zeros(3)
    rng = np.random.default_rng(1)
    for seed in range(400):
        tokens = example(200, 300, seed)
        masked, pos, labels = mask_tokens(tokens, rng, p, NEVER, MASK, V)
        is_mask = masked[pos] == MASK
        kept = (masked[pos] == labels) & ~is_mask
        kinds += [is_mask.sum(), kept.sum(), (~is_mask & ~kept).sum()]
    frac = kinds / kinds.sum()
    # A random replacement can draw the original id (1/V): "kept" absorbs that, as in the original.
    assert abs(frac[0] - 0.8) < 0.01 and abs(frac[1] - 0.1) < 0.01 and abs(frac[2] - 0.1) < 0.01


def test_whole_word_masks_words_as_units_and_within_budget():
    is_cont = np.zeros(V, bool)
    is_cont[500:] = True  # ids >= 500 are "##" pieces
    p = MaskingParams(whole_word=True, max_predictions_per_seq=20)
    for seed in range(50):
        tokens = example(seed=seed)
        groups = word_groups(np.flatnonzero(~NEVER[tokens]), tokens, is_cont)
        _, pos, _ = mask_tokens(tokens, np.random.default_rng(seed), p, NEVER, MASK, V, is_cont)
        chosen = set(pos.tolist())
        assert len(pos) <= num_to_predict(len(tokens), p)
        for g in groups:  # every word is fully in or fully out
            assert {int(i) in chosen for i in g} in ({True}, {False})


def test_word_groups_do_not_join_across_special_tokens():
    is_cont = np.zeros(V, bool)
    is_cont[900] = True
    tokens = np.array([CLS, 10, 900, SEP, 900, 11, SEP])
    groups = [g.tolist() for g in word_groups(np.flatnonzero(~NEVER[tokens]), tokens, is_cont)]
    assert groups == [[1, 2], [4], [5]]


def test_invalid_params_fail_clearly():
    with pytest.raises(ValueError, match="masked_lm_prob"):
        MaskingParams(masked_lm_prob=0.0)


def test_mask_batch_masks_each_example_on_its_own():
    exs = [example(n_a, n_b, seed=s) for s, (n_a, n_b) in enumerate([(3, 4), (40, 60), (1, 1), (200, 300)])]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in exs])])
    tokens = np.concatenate(exs)
    p = MaskingParams(max_predictions_per_seq=20)
    masked, pos, labels = mask_batch(tokens, offsets, np.random.default_rng(0), p, NEVER, MASK, V)
    owner = np.searchsorted(offsets, pos, side="right") - 1
    for e, ex in enumerate(exs):
        assert np.sum(owner == e) == min(num_to_predict(len(ex), p), len(ex) - 3)
    assert np.array_equal(labels, tokens[pos]) and not NEVER[tokens[pos]].any()
    assert np.all(np.diff(pos) > 0)


def test_every_candidate_position_is_equally_likely():
    """Positions are a uniform draw without replacement among the candidates (the original's
    shuffle-and-take): no bias towards the start, the end, or either segment."""
    p = MaskingParams()
    tokens = example(n_a=10, n_b=15)  # 28 tokens, 25 candidates, budget round(4.2) = 4
    counts = np.zeros(len(tokens))
    draws = 20000
    rng = np.random.default_rng(1)
    for _ in range(draws // 50):  # 50 copies of the example per call, as the job masks a pass
        offsets = np.arange(51) * len(tokens)
        _, pos, _ = mask_batch(np.tile(tokens, 50), offsets, rng, p, NEVER, MASK, V)
        np.add.at(counts, pos % len(tokens), 1)
    candidates = ~np.isin(tokens, SPECIAL)
    assert counts[~candidates].sum() == 0
    expected = draws * 4 / candidates.sum()  # 3,200 per position; binomial sd about 50
    assert np.all(np.abs(counts[candidates] - expected) < 5 * np.sqrt(expected))
