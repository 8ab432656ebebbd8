"""Span masking (SpanBERT, Joshi et al. 2020) in the one masking rule: span lengths, whole words, the
budget, 80/10/10 per span, static and dynamic paths alike, and the manifest that records it."""

import dataclasses
import json

import numpy as np
import pytest

from paths import real_uncased_vocab
from pipeline import contract
from pipeline.config import MaskingConfig
from pipeline.masking import (
    MaskingParams,
    choose_spans,
    mask_batch,
    mask_examples,
    mask_tokens,
    num_to_predict,
    span_length_probabilities,
    span_lengths,
    word_groups,
)
from pipeline.seeding import rng_for
from pipeline.tokenization import build_tokenizer, encode_sentences, masking_vocabulary
from training.data import DataContractError, RunExpectations, masking_params, validate_manifest

CLS, SEP, MASK, PAD, V = 2, 3, 4, 0, 100_000
NEVER = np.isin(np.arange(V), [PAD, CLS, SEP, MASK])  # never predicted
CONTINUATION = np.arange(V) >= 70_000  # ids from 70,000 are "##" pieces
SPANS = MaskingParams(spans=True)
SPANBERT_MEAN = 3.797  # geometric(0.2) on 1..10 words, renormalised
SPEC_STATIC = contract.MaskingSpec("static", 0.15, 20, False, 5)


def synthetic(n_a, n_b, rng, continuation_rate=0.3):
    """[CLS] A [SEP] B [SEP] of random ids, about ``continuation_rate`` of the pieces ## pieces."""

    def segment(n):
        ids = rng.integers(10, 70_000, n)
        cont = rng.random(n) < continuation_rate
        ids[cont] = rng.integers(70_000, V, int(cont.sum()))
        return ids

    return np.concatenate([[CLS], segment(n_a), [SEP], segment(n_b), [SEP]]).astype(np.int64)


def one_piece_words(n, rng):
    return np.concatenate([[CLS], rng.integers(10, 70_000, n), [SEP]]).astype(np.int64)


def batch_of(examples):
    return np.concatenate(examples), np.concatenate([[0], np.cumsum([len(e) for e in examples])]).astype(np.int64)


def spans_of(tokens, offsets, choice):
    """[(example, positions of the span)] from a SpanChoice."""
    owner = np.searchsorted(offsets, choice.positions, side="right") - 1
    return [(int(owner[choice.span == s][0]), choice.positions[choice.span == s]) for s in range(len(choice.words))]


# --- span lengths --------------------------------------------------------------------------------


def test_span_length_probabilities_are_spanberts():
    probs = span_length_probabilities(0.2, 10)
    assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-12
    assert abs(probs[0] - 0.2 / (1 - 0.8**10)) < 1e-12 and np.allclose(probs[1:] / probs[:-1], 0.8)
    assert abs(probs @ np.arange(1, 11) - SPANBERT_MEAN) < 1e-3  # the paper's 3.8, not 4.46 of min(geometric, 10)


@pytest.mark.parametrize("span_p,max_span_words", [(0.2, 10), (0.5, 3), (1.0, 10), (0.2, 1)])
def test_span_lengths_invert_the_distribution(span_p, max_span_words):
    """The closed form gives the table's lengths: exactly at a grid of draws, and in frequency."""
    cdf = np.cumsum(span_length_probabilities(span_p, max_span_words))
    grid = np.linspace(0, 1, 100_001)[:-1]
    by_table = np.minimum(np.searchsorted(cdf, grid, side="right") + 1, max_span_words)
    near_a_step = np.abs(grid[:, None] - cdf[None, :]).min(axis=1) < 1e-9
    assert np.array_equal(span_lengths(grid, span_p, max_span_words)[~near_a_step], by_table[~near_a_step])
    drawn = span_lengths(np.random.default_rng(0).random(200_000), span_p, max_span_words)
    frequency = np.bincount(drawn, minlength=max_span_words + 1)[1:] / len(drawn)
    assert drawn.min() >= 1 and np.abs(frequency - span_length_probabilities(span_p, max_span_words)).max() < 0.004


def test_spans_lengths_follow_the_geometric_distribution_when_budgets_allow():
    """Long examples at a low rate: few spans meet each other or the budget's end, so the spans chosen
    have nearly the drawn lengths. Each example's last span is cut by the budget and a span stops at a
    word already taken, so they run a little shorter (3.66 words here against 3.80 drawn); min(geometric,
    10) would give 4.46, geometric(0.25) on 1..10 3.41, so the bounds tell the distribution apart."""
    params = MaskingParams(masked_lm_prob=0.04, max_predictions_per_seq=1000, spans=True)
    rng = np.random.default_rng(0)
    tokens, offsets = batch_of([one_piece_words(3000, rng) for _ in range(400)])
    choice = choose_spans(tokens, offsets, [rng_for("spans", i) for i in range(400)], params, NEVER, CONTINUATION)
    lengths = choice.words
    assert len(lengths) > 12_000 and lengths.min() >= 1 and lengths.max() <= 10
    frequency = np.bincount(lengths, minlength=11)[1:] / len(lengths)
    assert SPANBERT_MEAN - 0.25 < lengths.mean() < SPANBERT_MEAN + 0.05, lengths.mean()
    assert np.abs(frequency - span_length_probabilities(0.2, 10)).max() < 0.02, frequency


def test_other_span_settings_change_the_lengths():
    params = MaskingParams(masked_lm_prob=0.04, max_predictions_per_seq=1000, spans=True, span_p=0.5, max_span_words=3)
    rng = np.random.default_rng(1)
    tokens, offsets = batch_of([one_piece_words(3000, rng) for _ in range(20)])
    lengths = choose_spans(tokens, offsets, [rng_for("spans", i) for i in range(20)], params, NEVER).words
    assert lengths.max() == 3 and abs(lengths.mean() - span_length_probabilities(0.5, 3) @ [1, 2, 3]) < 0.1


# --- the rule: whole words, contiguous, the budget --------------------------------------------------


def reference_spans(tokens, rng, params, never_mask, is_continuation):
    """The rule written out for one example, word by word: [(start word, words)] in visit order."""
    words = word_groups(np.flatnonzero(~never_mask[tokens]), tokens, is_continuation)
    visits = rng.permutation(len(words))
    cdf = np.cumsum(span_length_probabilities(params.span_p, params.max_span_words))
    lengths = [int(np.searchsorted(cdf[:-1], u, side="right")) + 1 for u in rng.random(len(words))]
    budget, taken, spans = num_to_predict(len(tokens), params), set(), []
    for w, length in zip(visits.tolist(), lengths):
        count = sum(len(words[t]) for t in taken)
        if count >= budget:
            break
        span = []
        for j in range(w, min(w + length, len(words))):
            contiguous = j == w or words[j][0] == words[j - 1][-1] + 1
            if j in taken or not contiguous or count + len(words[j]) > budget:
                break
            span.append(j)
            count += len(words[j])
        taken.update(span)
        if span:
            spans.append([int(i) for j in span for i in words[j]])
    return sorted(spans)


@pytest.mark.parametrize("cap", [20, 3, 80], ids=["bert-cap", "small-budget", "rate-0.3"])
def test_choice_is_the_rule_written_out_word_by_word(cap):
    params = MaskingParams(masked_lm_prob=0.3 if cap == 80 else 0.15, max_predictions_per_seq=cap, spans=True)
    rng = np.random.default_rng(cap)
    examples = [synthetic(int(rng.integers(0, 120)), int(rng.integers(0, 200)), rng) for _ in range(300)]
    for e, tokens in enumerate(examples):
        choice = choose_spans(tokens, np.array([0, len(tokens)]), [rng_for("r", e)], params, NEVER, CONTINUATION)
        got = [positions.tolist() for _, positions in spans_of(tokens, np.array([0, len(tokens)]), choice)]
        assert got == reference_spans(tokens, rng_for("r", e), params, NEVER, CONTINUATION)


def test_spans_are_contiguous_whole_words_never_special_and_within_budget():
    rng = np.random.default_rng(2)
    examples = [synthetic(int(rng.integers(1, 60)), int(rng.integers(1, 70)), rng, 0.5) for _ in range(400)]
    for e in examples[::5]:  # a [PAD] or [MASK] inside some: never predicted, and a span stops there
        e[int(rng.integers(1, len(e) - 1))] = rng.choice([PAD, MASK])
    tokens, offsets = batch_of(examples)
    choice = choose_spans(tokens, offsets, [rng_for("s", i) for i in range(len(examples))], SPANS, NEVER, CONTINUATION)
    assert not NEVER[tokens[choice.positions]].any()
    chosen = np.zeros(len(tokens), bool)
    chosen[choice.positions] = True
    for _, positions in spans_of(tokens, offsets, choice):
        assert np.all(np.diff(positions) == 1)  # contiguous: no special token inside
        first, last = positions[0], positions[-1]
        assert not (CONTINUATION[tokens[first]] and not NEVER[tokens[first - 1]])  # starts at a word's start
        assert not CONTINUATION[tokens[last + 1]]  # ends at a word's end (after it: a new word or a special)
    assert np.array_equal(np.sort(choice.positions), choice.positions)  # sorted, so no overlap
    for e, tokens_e in enumerate(examples):
        lo = offsets[e]
        words = word_groups(np.flatnonzero(~NEVER[tokens_e]), tokens_e, CONTINUATION)
        inside = [chosen[lo + w] for w in words]
        assert all(x.all() or not x.any() for x in inside)  # whole words
        budget = num_to_predict(len(tokens_e), SPANS)
        count = chosen[lo : offsets[e + 1]].sum()
        left = [len(w) for w, x in zip(words, inside) if not x.any()]
        assert count <= budget and (count == budget or min(left, default=budget + 1) > budget - count)
    assert choice.per_example.sum() == len(choice.words) and choice.words.sum() > 0


def test_one_piece_words_fill_the_budget_exactly():
    rng = np.random.default_rng(3)
    examples = [one_piece_words(int(n), rng) for n in rng.integers(0, 510, 300)]
    tokens, offsets = batch_of(examples)
    params = MaskingParams(max_predictions_per_seq=80, spans=True)
    rngs = [rng_for("o", i) for i in range(len(examples))]
    _, _, _, counts = mask_examples(tokens, offsets, rngs, params, NEVER, MASK, V, CONTINUATION)
    expected = [min(num_to_predict(len(e), params), len(e) - 2) for e in examples]
    assert counts.tolist() == expected


def test_a_span_never_crosses_the_separator():
    """Every word of A and B visited with spans of up to 10 words: the spans end at [SEP]."""
    params = MaskingParams(masked_lm_prob=0.9, max_predictions_per_seq=500, spans=True, span_p=0.01)
    rng = np.random.default_rng(4)
    tokens = np.concatenate([one_piece_words(6, rng), one_piece_words(6, rng)[1:]])  # [CLS] 6 [SEP] 6 [SEP]
    for seed in range(50):
        choice = choose_spans(tokens, np.array([0, len(tokens)]), [rng_for("x", seed)], params, NEVER)
        for _, positions in spans_of(tokens, np.array([0, len(tokens)]), choice):
            assert positions[-1] < 7 or positions[0] > 7


def test_empty_batches_examples_without_candidates_and_no_continuation_table():
    masked, positions, labels, counts = mask_examples(np.zeros(0, np.int64), np.array([0]), [], SPANS, NEVER, MASK, V)
    assert len(masked) == len(positions) == len(labels) == len(counts) == 0
    masked, positions, _ = mask_tokens(np.array([CLS, SEP]), np.random.default_rng(0), SPANS, NEVER, MASK, V)
    assert masked.tolist() == [CLS, SEP] and len(positions) == 0
    # without a ## table every piece is a word of its own: a span may end inside a word
    rng = np.random.default_rng(9)
    examples = [synthetic(60, 60, rng, 0.5) for _ in range(200)]
    tokens, offsets = batch_of(examples)
    choice = choose_spans(tokens, offsets, [rng_for("n", i) for i in range(200)], SPANS, NEVER)
    after = tokens[[positions[-1] + 1 for _, positions in spans_of(tokens, offsets, choice)]]
    assert CONTINUATION[after].any() and choice.words.max() == 10


# --- corruption per span ---------------------------------------------------------------------------


def test_80_10_10_decided_per_span():
    rng = np.random.default_rng(5)
    examples = [synthetic(60, 60, rng) for _ in range(1500)]
    tokens, offsets = batch_of(examples)
    rngs = [rng_for("c", i) for i in range(len(examples))]
    choice = choose_spans(tokens, offsets, rngs, SPANS, NEVER, CONTINUATION)
    rngs = [rng_for("c", i) for i in range(len(examples))]
    masked, positions, labels, _ = mask_examples(tokens, offsets, rngs, SPANS, NEVER, MASK, V, CONTINUATION)
    assert np.array_equal(positions, choice.positions) and np.array_equal(labels, tokens[positions])
    outcome = np.where(masked[positions] == MASK, 0, np.where(masked[positions] == labels, 2, 1))  # (P,)
    kinds = np.zeros(3)
    for s in range(len(choice.words)):
        kind = np.unique(outcome[choice.span == s])
        assert len(kind) == 1, f"span {s} mixes outcomes {kind}"  # one decision for all its pieces
        kinds[kind[0]] += 1
    frac = kinds / kinds.sum()
    assert kinds.sum() > 5000 and (choice.words > 1).mean() > 0.5  # mostly spans of several words
    assert abs(frac[0] - 0.8) < 0.02 and abs(frac[1] - 0.1) < 0.015 and abs(frac[2] - 0.1) < 0.015, frac
    untouched = np.ones(len(tokens), bool)
    untouched[positions] = False
    assert np.array_equal(masked[untouched], tokens[untouched])


# --- one rule, static and dynamic ------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab():
    return masking_vocabulary(real_uncased_vocab())


@pytest.fixture(scope="module")
def real_examples(sample_documents, vocab):
    """400 sequences [CLS] A [SEP] B [SEP] cut from the sample's text in bert-base-uncased's pieces (a
    segment may start with a ## piece), of lengths 2 to 512."""
    tokenizer = build_tokenizer(real_uncased_vocab(), lowercase=True)
    sentences = [s for d in sample_documents[:200] for s in d.sentences]
    pieces = np.concatenate([np.array(ids, np.int32) for ids in encode_sentences(tokenizer, sentences) if ids])
    rng = np.random.default_rng(6)
    examples = []
    for length in rng.choice([2, 3, 7, 40, 128, 128, 128, 200, 512], 400):
        start = int(rng.integers(0, len(pieces) - length))
        ids = pieces[start : start + length].copy()
        ids[0], ids[-1] = vocab.cls_id, vocab.sep_id
        if length >= 5:
            ids[int(rng.integers(2, length - 2))] = vocab.sep_id
        examples.append(ids)
    return examples


def generators(epoch, count):
    return [rng_for("dynamic_masking", 11, epoch, example_id) for example_id in range(count)]


@pytest.mark.parametrize(
    "params",
    [SPANS, MaskingParams(masked_lm_prob=0.3, max_predictions_per_seq=80, spans=True, mask_prob=0.5, random_prob=0.3)],
    ids=["spanbert", "rate-0.3"],
)
def test_batch_masks_equal_the_per_example_masks(real_examples, vocab, params):
    """mask_examples (the loader: a batch, a generator per example) gives exactly mask_tokens' masks
    (mask_batch of one example, as the data job's static masking runs it), and leaves each generator
    where mask_tokens leaves it."""
    tokens, offsets = batch_of(real_examples)
    batch_rngs, reference_rngs = generators(3, len(real_examples)), generators(3, len(real_examples))
    tables = (vocab.never_mask, vocab.mask_id, vocab.size, vocab.is_continuation)
    masked, positions, labels, counts = mask_examples(tokens, offsets, batch_rngs, params, *tables)
    expected = [mask_tokens(e, g, params, *tables) for e, g in zip(real_examples, reference_rngs)]
    assert np.array_equal(masked, np.concatenate([m for m, _, _ in expected]))
    assert np.array_equal(positions, np.concatenate([p + offsets[i] for i, (_, p, _) in enumerate(expected)]))
    assert np.array_equal(labels, np.concatenate([lab for _, _, lab in expected]))
    assert counts.tolist() == [len(p) for _, p, _ in expected]
    for a, b in zip(batch_rngs, reference_rngs):
        assert a.bit_generator.state == b.bit_generator.state
    assert vocab.is_continuation[tokens[positions]].sum() > 50  # ## pieces went with their words


def test_static_masks_of_a_pass_are_deterministic_and_follow_the_rule(real_examples, vocab):
    """mask_batch (the data job: one generator for a document's examples) per seed: the same masks
    again, other masks for another seed, each example within its budget."""
    tokens, offsets = batch_of(real_examples[:50])
    tables = (vocab.never_mask, vocab.mask_id, vocab.size, vocab.is_continuation)
    a = mask_batch(tokens, offsets, np.random.default_rng(7), SPANS, *tables)
    b = mask_batch(tokens, offsets, np.random.default_rng(7), SPANS, *tables)
    c = mask_batch(tokens, offsets, np.random.default_rng(8), SPANS, *tables)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[1], c[1])
    owner = np.searchsorted(offsets, a[1], side="right") - 1
    budgets = num_to_predict(np.diff(offsets), SPANS)
    assert np.all(np.bincount(owner, minlength=50) <= budgets) and not vocab.never_mask[tokens[a[1]]].any()


def test_rate_0_3_predicts_0_3_of_the_candidates(real_examples, vocab):
    """masked_lm_prob=0.3 end to end from the config: the recipe's cap (40 at 128) lets the budget
    through, and spans fill it: 0.3 of the tokens, about 0.3 of the candidates."""
    params = MaskingConfig(mode="dynamic", masked_lm_prob=0.3, spans=True).masking_params(128)
    assert params.max_predictions_per_seq == 40 and params.spans
    full = [e for e in real_examples if len(e) == 128]
    tokens, offsets = batch_of(full)
    tables = (vocab.never_mask, vocab.mask_id, vocab.size, vocab.is_continuation)
    _, _, _, counts = mask_examples(tokens, offsets, generators(0, len(full)), params, *tables)
    candidates = np.array([(~vocab.never_mask[e]).sum() for e in full])
    assert len(full) > 100 and np.mean(counts == 38) > 0.9  # round(0.3 x 128) = 38, under the cap of 40
    assert abs(counts.sum() / candidates.sum() - 0.3) < 0.01


# --- settings and the manifest ---------------------------------------------------------------------


def test_bad_span_settings_fail_clearly():
    with pytest.raises(ValueError, match="masking.span_p must be in"):
        MaskingConfig(spans=True, span_p=0.0)
    with pytest.raises(ValueError, match="masking.max_span_words must be in"):
        MaskingConfig(spans=True, max_span_words=0)
    with pytest.raises(ValueError, match="span_p"):
        MaskingParams(spans=True, span_p=1.5)


def manifest_dict(masking: dict) -> dict:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "##s"]
    manifest = contract.ShardManifest.from_job(
        vocab=vocab,
        vocab_sha256="ab" * 32,
        lowercase=True,
        strip_accents=True,
        casing_reason="",
        max_seq_length=128,
        objective="none",
        masking=contract.MaskingSpec("dynamic", 0.15, 20, False, 1),
        seed=7,
        shards=[],
        statistics={},
        config={},
    )
    d = json.loads(manifest.to_json())
    d["masking"] = masking
    return d


def test_a_manifest_from_before_spans_reads_with_spans_off_and_keeps_its_fingerprint():
    old = {
        "mode": "dynamic",
        "masked_lm_prob": 0.15,
        "max_predictions_per_seq": 20,
        "whole_word": True,
        "dupe_factor": 1,
        "mask_prob": 0.8,
        "random_prob": 0.1,
    }  # what the job wrote before span masking
    manifest = contract.ShardManifest.from_dict(manifest_dict(old))
    assert not manifest.masking.spans and not masking_params(manifest).spans and masking_params(manifest).whole_word
    assert manifest.masking.identity() == old  # data fingerprints of runs made before are unchanged


def test_the_manifest_records_spans_and_the_trainer_reads_them(tmp_path):
    spec = contract.MaskingSpec("dynamic", 0.3, 40, False, 1, spans=True, span_p=0.25, max_span_words=8)
    manifest = contract.ShardManifest.from_dict(manifest_dict(dataclasses.asdict(spec)))
    assert manifest.masking == spec and contract.ShardManifest.from_dict(json.loads(manifest.to_json())) == manifest
    params = masking_params(manifest)
    assert (params.spans, params.span_p, params.max_span_words, params.masked_lm_prob) == (True, 0.25, 8, 0.3)
    assert manifest.masking.identity()["spans"] is True


def test_a_manifest_with_unknown_or_invalid_masking_is_refused(tmp_path):
    with pytest.raises(contract.ContractError, match="fields this code does not know \\(span_shape\\)"):
        contract.ShardManifest.from_dict(manifest_dict({**dataclasses.asdict(SPEC_STATIC), "span_shape": "x"}))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "##s"]
    (tmp_path / contract.VOCAB_FILE).write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    d = manifest_dict(dataclasses.asdict(dataclasses.replace(SPEC_STATIC, spans=True, max_span_words=0)))
    d["vocab_sha256"] = contract.sha256_file(str(tmp_path / contract.VOCAB_FILE))
    expect = RunExpectations(vocab_size=len(vocab), max_position_embeddings=128, with_nsp_head=False)
    with pytest.raises(DataContractError, match="static masking settings are invalid \\(max_span_words must be"):
        validate_manifest(contract.ShardManifest.from_dict(d), str(tmp_path), expect)
