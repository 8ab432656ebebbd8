"""Our WordPiece equals transformers' BertTokenizerFast with the same vocabulary, token for token."""

import pytest
from transformers import BertTokenizerFast

from pipeline.tokenization import (SPECIAL_TOKENS, build_tokenizer, encode_sentences, is_uncased,
                                   train_vocabulary)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Anarchism is a political philosophy and movement that is sceptical of authority.",
    "Café résumé naïve façade — Ångström coöperate, 東京 and ﬁne ligatures.",
    "Numbers like 3.14159, 1,000,000 and e-mail addresses: someone@example.org!",
    "ALL CAPS Mixed Case unbelievably-hyphenated words, (parentheses) and \"quotes\".",
    "supercalifragilisticexpialidocious " + "x" * 120,  # a word over 100 characters is [UNK]
    "\tTabs\tand   odd\u00a0spaces\u200b here.",
]


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def vocab_and_case(request, sample_paragraphs):
    lowercase = request.param
    vocab = train_vocabulary(sample_paragraphs, vocab_size=4000, lowercase=lowercase, min_frequency=2,
                             limit_alphabet=500)
    return vocab, lowercase


def test_trained_vocabulary_has_bert_special_tokens_first(vocab_and_case):
    vocab, lowercase = vocab_and_case
    assert vocab[:5] == SPECIAL_TOKENS
    assert any(t.startswith("##") for t in vocab)
    assert is_uncased(vocab) == lowercase


def test_equals_bert_tokenizer_fast(vocab_and_case, sample_paragraphs, tmp_path):
    vocab, lowercase = vocab_and_case
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # Loaded from a directory holding vocab.txt, as users load it (transformers 5's constructor
    # takes `vocab=`, and silently ignores the older `vocab_file=`).
    reference = BertTokenizerFast.from_pretrained(str(tmp_path), do_lower_case=lowercase)
    assert len(reference) == len(vocab)
    ours = build_tokenizer(vocab, lowercase)
    texts = TEXTS + sample_paragraphs[:300]
    expected = [reference(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert encode_sentences(ours, texts) == expected
    assert sum(map(len, expected)) > 10_000  # a real amount of text was compared


def test_training_is_deterministic(sample_paragraphs):
    a = train_vocabulary(sample_paragraphs[:200], 2000, True, 2, 300)
    b = train_vocabulary(sample_paragraphs[:200], 2000, True, 2, 300)
    assert a == b
