"""Casing of a given vocabulary: decided from its pieces, robust to a few odd symbols, overridable."""

import os
import unicodedata

import numpy as np
import pytest

from paths import real_uncased_vocab
from pipeline.tokenization import A_FEW, decide_casing, training_casing


def published_pieces(model: str, size: int) -> list[str]:
    """The pieces of a published BERT vocabulary as blingfire's id-to-word models hold them
    (each id decoded on its own, so a continuation shows without its ## mark)."""
    import blingfire

    h = blingfire.load_model(os.path.join(os.path.dirname(blingfire.__file__), model))
    try:
        return [blingfire.ids_to_text(h, np.array([i], np.int32), skip_special_tokens=False) for i in range(size)]
    finally:
        blingfire.free_model(h)


def bert_uncased_normalisation(piece: str, strip_accents: bool) -> str:
    piece = piece.lower()
    if strip_accents:
        piece = "".join(c for c in unicodedata.normalize("NFD", piece) if unicodedata.category(c) != "Mn")
    return piece


@pytest.fixture(scope="module")
def cased_vocab(sample_vocabulary):
    return sample_vocabulary(False)


def test_bert_base_uncased_is_uncased_and_strips_accents():
    vocab = real_uncased_vocab()
    assert len(vocab) == 30522 and "ℝ" in vocab and "##ℝ" in vocab  # isupper() is true for these
    decision = decide_casing(vocab)
    assert (decision.lowercase, decision.strip_accents) == (True, True)
    assert "0 of 26,930" in decision.reason and "0 of 28,160" in decision.reason


def test_published_cased_vocabularies_keep_case_and_accents():
    for model, size in (("bert_base_cased_tok.i2w", 28996), ("bert_multi_cased.i2w", 119547)):
        decision = decide_casing(published_pieces(model, size))
        assert (decision.lowercase, decision.strip_accents) == (False, False), (model, decision.reason)


def test_multilingual_uncased_pieces_lowercase_and_strip_accents():
    # bert-base-multilingual-uncased is multilingual-cased's text normalised as BERT uncased does.
    pieces = published_pieces("bert_multi_cased.i2w", 119547)
    uncased = [p if p.startswith("[") else bert_uncased_normalisation(p, True) for p in pieces]
    decision = decide_casing(uncased)
    assert (decision.lowercase, decision.strip_accents) == (True, True), decision.reason
    # An uncased vocabulary that kept its accents (as some language-specific uncased BERTs do).
    with_accents = [p if p.startswith("[") else bert_uncased_normalisation(p, False) for p in pieces]
    decision = decide_casing(with_accents)
    assert (decision.lowercase, decision.strip_accents) == (True, False), decision.reason


def test_a_cased_vocabulary_from_real_text_is_cased(cased_vocab):
    decision = decide_casing(cased_vocab)
    assert (decision.lowercase, decision.strip_accents) == (False, False), decision.reason


def test_a_few_odd_symbols_do_not_make_a_vocabulary_cased():
    odd = ["Ω", "##Ω", "Ⅷ", "##Ⅷ", "ǅ", "Ꭰ", "##Ꭰ", "Ა", "K", "Å"]  # lowercasing changes each
    assert len(odd) == A_FEW and all(p.lower() != p for p in odd)
    decision = decide_casing(real_uncased_vocab() + odd)
    assert decision.lowercase and decision.strip_accents, decision.reason
    assert not decide_casing(real_uncased_vocab() + odd + ["Ǆ"] * 300).lowercase  # more than a few


def test_given_settings_win(cased_vocab):
    vocab = real_uncased_vocab()
    assert (decide_casing(vocab, lowercase=False).lowercase, decide_casing(vocab, lowercase=False).strip_accents) == (
        False,
        False,
    )
    assert decide_casing(vocab, strip_accents=False).strip_accents is False
    forced = decide_casing(cased_vocab, lowercase=True)
    assert forced.lowercase and "lowercase=true given" in forced.reason
    assert decide_casing(cased_vocab, strip_accents=True).strip_accents is True


def test_a_trained_vocabulary_follows_its_settings():
    assert (training_casing().lowercase, training_casing().strip_accents) == (True, True)
    assert (training_casing(False).lowercase, training_casing(False).strip_accents) == (False, False)
    assert training_casing(True, False).strip_accents is False
