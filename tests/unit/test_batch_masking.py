"""mask_examples (a whole batch, a generator per example) gives exactly mask_tokens' masks, example by
example, on real WordPiece sequences: the sample's Wikipedia text in bert-base-uncased's pieces."""

import numpy as np
import pytest

from paths import real_uncased_vocab
from pipeline.masking import MaskingParams, mask_examples, mask_tokens
from pipeline.seeding import rng_for
from pipeline.tokenization import build_tokenizer, encode_sentences, masking_vocabulary

LENGTHS = [2, 3, 4, 7, 12, 40, 64, 128, 128, 128, 128, 200, 512]  # with [CLS] and [SEP]s; 2: no candidate


@pytest.fixture(scope="module")
def vocab():
    return masking_vocabulary(real_uncased_vocab())


@pytest.fixture(scope="module")
def pieces(sample_documents):
    """(M,) the ids of the sample's first 200 documents' sentences, back to back."""
    tokenizer = build_tokenizer(real_uncased_vocab(), lowercase=True)
    sentences = [s for d in sample_documents[:200] for s in d.sentences]
    return np.concatenate([np.array(ids, np.int32) for ids in encode_sentences(tokenizer, sentences) if ids])


def real_examples(pieces, vocab, count, seed):
    """``count`` sequences [CLS] A [SEP] B [SEP] cut anywhere from the real text (so a segment may
    start with a ## piece), of the lengths above; one in five has a [MASK], [PAD] or [UNK] inside."""
    rng = np.random.default_rng(seed)
    special = [vocab.mask_id, 0, 100]  # [PAD] is 0 and [UNK] 100 in bert-base-uncased
    examples = []
    for _ in range(count):
        length = int(rng.choice(LENGTHS))
        start = int(rng.integers(0, len(pieces) - length))
        ids = pieces[start : start + length].copy()
        ids[0], ids[-1] = vocab.cls_id, vocab.sep_id
        if length >= 5:
            ids[int(rng.integers(2, length - 2))] = vocab.sep_id
            if rng.random() < 0.2:
                ids[int(rng.integers(1, length - 1))] = rng.choice(special)
        examples.append(ids)
    return examples


def per_example(examples, generators, params, vocab, continuation):
    return [
        mask_tokens(e, g, params, vocab.never_mask, vocab.mask_id, vocab.size, continuation)
        for e, g in zip(examples, generators)
    ]


def generators(epoch, count):
    return [rng_for("dynamic_masking", 11, epoch, example_id) for example_id in range(count)]


CASES = [
    MaskingParams(),  # BERT: 15%, at most 20
    MaskingParams(masked_lm_prob=0.3, max_predictions_per_seq=80),  # MosaicBERT's rate, phase 2's cap
    MaskingParams(max_predictions_per_seq=3, mask_prob=0.5, random_prob=0.3),  # a small budget: words skipped
]


@pytest.mark.parametrize("whole_word", [False, True], ids=["dynamic", "whole-word"])
@pytest.mark.parametrize("params", CASES, ids=["bert", "rate-0.3-cap-80", "cap-3"])
def test_equal_to_mask_tokens_example_by_example(pieces, vocab, params, whole_word):
    params = MaskingParams(**{**params.__dict__, "whole_word": whole_word})
    examples = real_examples(pieces, vocab, 400, seed=params.max_predictions_per_seq)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in examples])])
    batch_rngs, reference_rngs = generators(3, len(examples)), generators(3, len(examples))
    masked, positions, labels, counts = mask_examples(
        np.concatenate(examples),
        offsets,
        batch_rngs,
        params,
        vocab.never_mask,
        vocab.mask_id,
        vocab.size,
        vocab.is_continuation,
    )
    expected = per_example(examples, reference_rngs, params, vocab, vocab.is_continuation)
    assert np.array_equal(masked, np.concatenate([m for m, _, _ in expected]))
    assert np.array_equal(positions, np.concatenate([p + offsets[i] for i, (_, p, _) in enumerate(expected)]))
    assert np.array_equal(labels, np.concatenate([lab for _, _, lab in expected]))
    assert counts.tolist() == [len(p) for _, p, _ in expected]
    # the same draws from each generator: each is left in the state mask_tokens leaves it in
    for a, b in zip(batch_rngs, reference_rngs):
        assert a.bit_generator.state == b.bit_generator.state
    # what the comparison covered: no prediction where there is no candidate, words across pieces
    assert counts[[len(e) == 2 for e in examples]].sum() == 0
    continued = vocab.is_continuation[np.concatenate(examples)[positions]]
    assert continued.sum() > 20  # ## pieces were masked (with their word, under whole-word masking)
    after_special = [
        e for e in examples if vocab.is_continuation[e[1:]][vocab.never_mask[e[:-1]]].any()
    ]  # a ## piece right after [CLS]/[SEP]/[MASK]/[PAD]: a word of its own
    assert len(after_special) >= 5


def test_whole_word_without_continuation_table_is_dynamic_masking(pieces, vocab):
    """As mask_tokens: whole_word with no ## table masks single pieces."""
    params = MaskingParams(whole_word=True)
    examples = real_examples(pieces, vocab, 100, seed=1)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in examples])])
    masked, positions, _, _ = mask_examples(
        np.concatenate(examples), offsets, generators(0, 100), params, vocab.never_mask, vocab.mask_id, vocab.size
    )
    expected = per_example(examples, generators(0, 100), params, vocab, None)
    assert np.array_equal(masked, np.concatenate([m for m, _, _ in expected]))
    assert np.array_equal(positions, np.concatenate([p + offsets[i] for i, (_, p, _) in enumerate(expected)]))


def test_masks_of_an_example_do_not_depend_on_its_batch(pieces, vocab):
    params = MaskingParams(whole_word=True)
    examples = real_examples(pieces, vocab, 6, seed=2)

    def masks(order):
        chosen = [examples[i] for i in order]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in chosen])])
        rngs = [rng_for("dynamic_masking", 11, 0, i) for i in order]
        masked, *_ = mask_examples(
            np.concatenate(chosen),
            offsets,
            rngs,
            params,
            vocab.never_mask,
            vocab.mask_id,
            vocab.size,
            vocab.is_continuation,
        )
        return {i: masked[offsets[k] : offsets[k + 1]] for k, i in enumerate(order)}

    alone, together = masks([4]), masks([5, 0, 4, 2])
    assert np.array_equal(alone[4], together[4])


def test_empty_batch_and_one_generator_per_example(vocab):
    params = MaskingParams()
    masked, positions, labels, counts = mask_examples(
        np.zeros(0, np.int32), np.array([0]), [], params, vocab.never_mask, vocab.mask_id, vocab.size
    )
    assert len(masked) == len(positions) == len(labels) == len(counts) == 0
    tokens = np.array([vocab.cls_id, 2000, 2001, vocab.sep_id], np.int32)
    with pytest.raises(ValueError, match="one generator per example: 1 for 2 examples"):
        mask_examples(
            np.tile(tokens, 2),
            np.array([0, 4, 8]),
            generators(0, 1),
            params,
            vocab.never_mask,
            vocab.mask_id,
            vocab.size,
        )
