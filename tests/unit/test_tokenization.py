"""Our WordPiece equals transformers' BertTokenizerFast, and the original (slow, Python) BertTokenizer
with the casing decided for the vocabulary, token for token."""

import os
import re

import pytest
from transformers import BertTokenizerFast
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from paths import real_uncased_vocab
from pipeline.tokenization import SPECIAL_TOKENS, build_tokenizer, decide_casing, encode_sentences, train_vocabulary

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Anarchism is a political philosophy and movement that is sceptical of authority.",
    "Café résumé naïve façade — Ångström coöperate, 東京 and ﬁne ligatures.",
    "Numbers like 3.14159, 1,000,000 and e-mail addresses: someone@example.org!",
    'ALL CAPS Mixed Case unbelievably-hyphenated words, (parentheses) and "quotes".',
    "supercalifragilisticexpialidocious " + "x" * 120,  # a word over 100 characters is [UNK]
    "\tTabs\tand   odd\u00a0spaces\u200b here.",
]


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def vocab_and_case(request, sample_vocabulary):
    lowercase = request.param
    return sample_vocabulary(lowercase), lowercase


def test_trained_vocabulary_has_bert_special_tokens_first(vocab_and_case):
    vocab, lowercase = vocab_and_case
    assert vocab[:5] == SPECIAL_TOKENS
    assert any(t.startswith("##") for t in vocab)
    decision = decide_casing(vocab)
    assert (decision.lowercase, decision.strip_accents) == (lowercase, lowercase)


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


def test_training_is_deterministic(sample_paragraphs, sample_vocabulary):
    """A second training on the same text gives the session's vocabulary again, piece for piece."""
    again = train_vocabulary(sample_paragraphs, vocab_size=4000, lowercase=True, min_frequency=2, limit_alphabet=500)
    assert again == sample_vocabulary(True)


# Real Chinese, Japanese and Korean sentences (the demo text of the `rich` package).
CJK = [
    "该库支持中文，日文和韩文文本！",
    "ライブラリは中国語、日本語、韓国語のテキストをサポートしています",
    "이 라이브러리는 중국어, 일본어 및 한국어 텍스트를 지원합니다",
]


@pytest.fixture(scope="module")
def hard_sentences(sample_documents):
    """Real sentences with capitals, accents, CJK and punctuation: the English sample's that
    have accents or CJK or much punctuation, Bulgarian Wikipedia's (Cyrillic), and CJK."""
    import gensim

    from pipeline.config import CleaningConfig, SourceConfig
    from pipeline.documents import prepare_document
    from pipeline.records import RawDocument
    from pipeline.sources import read_source

    english = [s for d in sample_documents for s in d.sentences]
    accents = [s for s in english if re.search(r"[À-ɏ]", s)]
    punctuation = [s for s in english if len(re.findall(r"[^\w\s]", s)) >= 8 and re.search(r"[A-Z]", s)]
    cjk = [s for s in english if re.search(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]", s)]
    path = os.path.join(
        os.path.dirname(gensim.__file__), "test/test_data/bgwiki-latest-pages-articles-shortened.xml.bz2"
    )
    raws = [r for r in read_source(path, lambda: open(path, "rb"), SourceConfig()) if isinstance(r, RawDocument)]
    bulgarian = [s for r in raws for d in [prepare_document(r, CleaningConfig())[0]] if d for s in d.sentences]
    chosen = accents[:150] + punctuation[:150] + cjk + bulgarian[:100] + CJK
    assert len(accents) >= 150 and len(punctuation) >= 150 and cjk and len(bulgarian) >= 40
    return chosen


@pytest.fixture(scope="module", params=["bert-base-uncased", "cased-from-sample"])
def vocab_file(request, sample_vocabulary, tmp_path_factory):
    vocab = real_uncased_vocab() if request.param == "bert-base-uncased" else sample_vocabulary(False)
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab, str(path)


def test_equals_the_original_bert_tokenizer_with_the_decided_casing(vocab_file, hard_sentences):
    vocab, path = vocab_file
    casing = decide_casing(vocab)
    reference = BertTokenizerLegacy(path, do_lower_case=casing.lowercase, strip_accents=casing.strip_accents)
    ours = encode_sentences(build_tokenizer(vocab, casing.lowercase, casing.strip_accents), hard_sentences)
    for sentence, ids in zip(hard_sentences, ours):
        assert ids == reference.convert_tokens_to_ids(reference.tokenize(sentence)), sentence
    unk = vocab.index("[UNK]")
    assert sum(i == unk for ids in ours for i in ids) < 0.05 * sum(map(len, ours))  # real words, mostly known
