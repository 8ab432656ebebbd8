"""Accent stripping keeps the letters of other alphabets (pipeline/accents.py) and leaves English
and Latin text as BERT's uncased normaliser does; the vocabulary fit figures and their check."""

import unicodedata
from collections import Counter

from tokenizers import normalizers

from cyrillic_prose import BULGARIAN, RUSSIAN
from paths import real_uncased_vocab
from pipeline.accents import merges_letters, normalizer, strip_accents, stripped_characters
from pipeline.output_checks import accent_merge_warning, check_vocabulary_fit
from pipeline.tokenization import (
    build_tokenizer,
    decide_casing,
    letter_words,
    split_into_characters,
    train_vocabulary,
    training_casing,
)

# One line per script: what stripping with keep_letters gives, lowercased.
SCRIPTS = {
    "Молодой человек ещё спал, её не было.": "молодой человек ещё спал, её не было.",  # Russian й ё kept
    "Її ўсё Ѓорѓи Ќерка": "її ўсё ѓорѓи ќерка",  # Ukrainian, Belarusian, Macedonian letters
    "Москва́ и ѝ": "москва и и",  # a stress mark, a stressed ѝ: accents
    "Café Ångström naïve": "cafe angstrom naive",  # Latin: as BERT uncased
    "Ελληνικά άϊ": "ελληνικα αι",  # Greek tonos and dialytika: as BERT uncased
    "हिंदी कुछ": "हिंदी कुछ",  # Devanagari vowel signs and anusvara kept
    "ภาษาไทย น้ำ": "ภาษาไทย น้ำ",  # Thai vowel and tone marks kept
    "がガぱ": "がガぱ",  # kana voicing marks kept
    "مَدْرَسَة أإآؤئ": "مدرسة أإآؤئ",  # Arabic harakat stripped, hamza letters kept
    "שָׁלוֹם": "שלום",  # Hebrew niqqud stripped
}


def test_each_script_keeps_its_letters_and_loses_its_accents():
    keep = normalizer(lowercase=True, keep_letters=True)
    for text, expected in SCRIPTS.items():
        assert keep.normalize_str(text) == expected, text
        assert strip_accents(text, keep_letters=True).lower() == expected, text  # the reference agrees
    bert = normalizer(lowercase=True)
    assert bert.normalize_str("Молодой ещё") == "молодои еще"  # BERT's stripping, unchanged


def test_latin_and_english_text_normalise_as_bert_does(sample_documents):
    keep = normalizer(lowercase=True, keep_letters=True)
    bert = normalizers.BertNormalizer(lowercase=True)
    sentences = [s for d in sample_documents for s in d.sentences]
    latin = [s for s in sentences if all(ord(c) < 0x370 or c.isspace() or not c.isalpha() for c in s)]
    assert len(latin) > 17_000
    for s in latin:
        assert keep.normalize_str(s) == unicodedata.normalize("NFC", bert.normalize_str(s)), s


def test_a_vocabulary_trained_on_russian_keeps_its_letters():
    casing = training_casing()
    assert casing.strip_accents and casing.keep_letters and "Cyrillic й ё" in casing.reason
    vocab = train_vocabulary(RUSSIAN, 30522, True, 2, 1000, keep_letters=casing.keep_letters)
    assert "##й" in vocab and "##ой" in vocab and any("ё" in p for p in vocab)
    tok = build_tokenizer(vocab, True, None, keep_letters=True)
    assert "".join(tok.encode("Молодой", add_special_tokens=False).tokens).replace("##", "") == "молодой"
    # Read back as a given vocabulary (phase 2), it is normalised the same way.
    decided = decide_casing(vocab)
    assert (decided.lowercase, decided.strip_accents, decided.keep_letters) == (True, True, True), decided.reason
    assert decide_casing(real_uncased_vocab()).keep_letters is False  # bert-base-uncased: every mark, as BERT


def test_what_stripping_changed_is_counted_and_merged_letters_found():
    text = " ".join(RUSSIAN)
    forced = stripped_characters(text, keep_letters=False, lowercase=True)
    assert forced == Counter({"й->и": 37, "ё->е": 15})
    assert stripped_characters(text, keep_letters=True, lowercase=True) == Counter()
    assert stripped_characters("Café Москва́", keep_letters=True, lowercase=True) == Counter({"é->e": 1, "а́->а": 1})
    assert merges_letters("й->и") and merges_letters("कु->क") and not merges_letters("é->e")
    stats = {"accents_stripped": {"й->и": 37, "ё->е": 15, "é->e": 3}}
    warning = accent_merge_warning(stats, training_casing(True, True), None)
    assert "52 times (й->и 37, ё->е 15)" in warning and "tokenizer.strip_accents=true" in warning
    assert accent_merge_warning({"accents_stripped": {"é->e": 3}}, training_casing(True, True), None) == ""


def _fit(vocab, texts, **casing):
    tok = build_tokenizer(vocab, True, **casing)
    words = pieces = single = 0
    for text, e in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        for _, p in letter_words(text, e):
            words, pieces, single = words + 1, pieces + len(p), single + split_into_characters(p)
    return pieces / words, single / words


def test_fit_figures_separate_a_fitting_vocabulary_from_one_that_does_not(sample_paragraphs):
    vocab = real_uncased_vocab()
    english = _fit(vocab, sample_paragraphs)
    assert english[0] < 1.2 and english[1] < 0.002  # 1.12 pieces per word, 0.07% in single characters
    for texts in (BULGARIAN, RUSSIAN):
        pieces, single = _fit(vocab, texts)
        assert pieces > 4 and single > 0.6  # 4.61 / 67.5% and 4.94 / 77.7% measured
    assert not split_into_characters(["a"]) and split_into_characters(["н", "##а"])
    assert not split_into_characters(["на", "##а"])


def test_fit_check_names_figures_words_and_cause():
    stats = {"words": {"train": 1000}, "word_pieces": {"train": 4800}, "single_char_words": {"train": 650}}
    words = [(("седмица", "с ##е ##д ##м ##и ##ц ##а"), 3)]
    message = check_vocabulary_fit(stats, words, 0.2, 3.0)
    assert "65.0% of the words are split into single characters" in message and "4.80 pieces" in message
    assert "'седмица' -> с ##е ##д ##м ##и ##ц ##а (3)" in message and "another script than Latin" in message
    assert "too small" in check_vocabulary_fit(stats, words, 0.2, 3.0, trained_pieces=297)
    assert check_vocabulary_fit(stats, words, 0.7, 5.0) is None
    assert check_vocabulary_fit({}, [], 0.2, 3.0) is None
