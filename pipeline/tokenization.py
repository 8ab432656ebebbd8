"""WordPiece with Hugging Face ``tokenizers``: load a vocab.txt or train one on the corpus.

The tokenizer built here is the one transformers' ``BertTokenizerFast`` builds for the same
vocabulary (BERT normaliser, BERT pre-tokeniser, WordPiece with ``##`` continuations, 100
characters per word at most), so ids agree token for token (tests/unit/test_tokenization.py).
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from pipeline import accents
from pipeline.contract import SpecialTokens
from pipeline.instances import Vocabulary
from pipeline.vocab_training import WordCounter, train_wordpiece

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab_sha256(vocab: Sequence[str]) -> str:
    return hashlib.sha256(("\n".join(vocab) + "\n").encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CasingDecision:
    """How text is normalised before WordPiece, and why (one line, shown in the job's summary)."""

    lowercase: bool
    strip_accents: bool
    reason: str
    keep_letters: bool = False  # stripping keeps marks that make letters (й, ё, kana, vowel signs): pipeline.accents

    def __post_init__(self):
        if not all(isinstance(v, bool) for v in (self.lowercase, self.strip_accents, self.keep_letters)):
            raise TypeError("CasingDecision.lowercase, .strip_accents and .keep_letters must be bools")
        if self.keep_letters and not self.strip_accents:
            raise ValueError("CasingDecision.keep_letters qualifies stripping: it needs strip_accents")


A_FEW = 10
"""Up to this many pieces are odd symbols, not evidence: bert-base-uncased holds `ℝ` and `##ℝ`
(``str.isupper`` is true, yet lowercasing leaves them), a multilingual vocabulary may hold a few
letters whose case mapping arrived in a later Unicode version (Cherokee, Georgian)."""
CASED_FRACTION = 0.01
"""A cased vocabulary: over this fraction of its pieces with cased letters change when lowercased
(capitalised words; measured: 0 of 28,160 in bert-base-uncased)."""
ACCENT_FRACTION = 0.001
"""An uncased vocabulary that kept accents: over this fraction of its letter pieces carry an
accent (bert-base-uncased: 0, BERT's stripping removes every one); so many with letters that
BERT's stripping merges (й, ё, kana, vowel signs) mark a vocabulary made keeping them."""
KEPT_LETTERS = (
    "letters written with marks kept (Cyrillic й ё ї ў, Arabic hamza forms, kana, Indic and Thai vowel signs)"
)


def _is_special(piece: str) -> bool:
    return piece.startswith("[") and piece.endswith("]")


def has_accent(piece: str) -> bool:
    # An accent stripping removes even when it keeps letters (é, ά, Cyrillic stress): pipeline.accents.
    return accents.strip_accents(piece, keep_letters=True) != unicodedata.normalize("NFC", piece)


def has_letter_mark(piece: str) -> bool:
    # A mark BERT's stripping removes that makes a letter (й, が, Devanagari vowel signs).
    return accents.strip_accents(piece, keep_letters=False) != accents.strip_accents(piece, keep_letters=True)


def _more_than_a_few(count: int, total: int, fraction: float) -> bool:
    return count > max(A_FEW, fraction * total)


def _follows(lowercase: bool, strip_accents: Optional[bool], decided: bool) -> tuple[bool, str]:
    if strip_accents is not None:
        return strip_accents, f"strip_accents={str(strip_accents).lower()} given"
    return (decided, "") if lowercase else (False, "accents kept as cased BERT does")


def decide_casing(
    vocab: Sequence[str], lowercase: Optional[bool] = None, strip_accents: Optional[bool] = None
) -> CasingDecision:
    """Lowercasing and accent stripping for an existing vocabulary; a given setting wins.

    Cased: more than a few of the pieces with cased letters change when lowercased (counting only
    those, not ``isupper``: see A_FEW). Accents: an uncased vocabulary is stripped unless more than
    a few of its letter pieces carry accents (some language-specific uncased BERTs keep them); a
    cased one keeps them, as BERT's cased models do. Stripping keeps letters written with marks
    (``pipeline.accents``) when more than a few pieces hold such letters (a vocabulary trained by
    this job on Cyrillic, Indic... text); otherwise every mark goes, as the vocabulary's own
    pieces were made (bert-base-uncased: none).
    """
    body = [t for t in vocab if not _is_special(t)]
    cased_letters = sum(any(c.lower() != c.upper() for c in t) for t in body)
    changed = sum(t.lower() != t for t in body)
    letters = sum(any(c.isalpha() for c in t) for t in body)
    accented = sum(has_accent(t) for t in body)
    lettered = sum(has_letter_mark(t) for t in body)
    looks_cased = _more_than_a_few(changed, cased_letters, CASED_FRACTION)
    looks_accented = _more_than_a_few(accented, letters, ACCENT_FRACTION)
    case_counts = f"{changed:,} of {cased_letters:,} pieces with cased letters change when lowercased"
    accent_counts = f"{accented:,} of {letters:,} letter pieces carry accents"
    if lowercase is None:
        lowercase = not looks_cased
        case_why = f"{'cased' if looks_cased else 'uncased'} vocabulary ({case_counts})"
    else:
        case_why = f"lowercase={str(lowercase).lower()} given ({case_counts})"
    strip, accent_why = _follows(lowercase, strip_accents, not looks_accented)
    keep = strip and strip_accents is None and _more_than_a_few(lettered, letters, ACCENT_FRACTION)
    if not accent_why:
        accent_why = f"accents {'stripped' if strip else 'kept'} ({accent_counts})"
        if keep:
            accent_why += f", {KEPT_LETTERS}: {lettered:,} pieces hold them"
        elif strip:
            accent_why += f", every mark as BERT does ({lettered:,} pieces hold letters with marks)"
    return CasingDecision(lowercase, strip, f"{case_why}; {accent_why}", keep)


def training_casing(lowercase: Optional[bool] = None, strip_accents: Optional[bool] = None) -> CasingDecision:
    """A vocabulary the job trains: lowercased unless told otherwise, accents follow lowercase
    (BERT's default) but, unless strip_accents is given, letters written with marks are kept
    (``pipeline.accents``: Latin é and Greek ά lose their accents, Cyrillic й and ё stay); its
    words are counted with exactly these settings."""
    lowercase = True if lowercase is None else lowercase
    strip, accent_why = _follows(lowercase, strip_accents, True)
    keep = strip and strip_accents is None
    if keep:
        accent_why = (
            f"accents stripped with lowercasing (Latin, Greek, Cyrillic stress, Arabic/Hebrew pointing); {KEPT_LETTERS}"
        )
    elif strip:
        accent_why += ": every mark stripped as BERT does, on every script (й->и, ё->е, Indic vowel signs lost)"
    return CasingDecision(
        lowercase, strip, f"vocabulary trained by the job with lowercase={str(lowercase).lower()}; {accent_why}", keep
    )


def build_tokenizer(
    vocab: Sequence[str], lowercase: bool, strip_accents: Optional[bool] = None, keep_letters: bool = False
) -> BertWordPieceTokenizer:
    # strip_accents=None follows `lowercase`, as BERT's uncased models do; keep_letters: pipeline.accents.
    tokenizer = BertWordPieceTokenizer(
        {tok: i for i, tok in enumerate(vocab)},
        lowercase=lowercase,
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=strip_accents,
    )
    if keep_letters:
        tokenizer.normalizer = accents.normalizer(lowercase, strip_accents, keep_letters)
    return tokenizer


def train_vocabulary(
    texts: Iterable[str],
    vocab_size: int,
    lowercase: bool,
    min_frequency: int,
    limit_alphabet: int,
    strip_accents: Optional[bool] = None,
    keep_letters: bool = False,
) -> list[str]:
    """A WordPiece vocabulary with BERT's special tokens first; deterministic (see
    ``pipeline.vocab_training``, which the Beam job uses piecewise: counts per document, summed).
    strip_accents=None follows ``lowercase``; keep_letters: ``pipeline.accents``."""
    counts = WordCounter(lowercase, strip_accents, keep_letters).count(texts)
    return train_wordpiece(counts, vocab_size, SPECIAL_TOKENS, min_frequency, limit_alphabet)


def masking_vocabulary(vocab: Sequence[str]) -> Vocabulary:
    special = SpecialTokens.from_vocab(vocab)
    never_mask = np.zeros(len(vocab), dtype=bool)
    never_mask[[special.pad, special.cls, special.sep, special.mask]] = True  # [UNK] is a real prediction
    return Vocabulary(
        size=len(vocab),
        cls_id=special.cls,
        sep_id=special.sep,
        mask_id=special.mask,
        never_mask=never_mask,
        is_continuation=np.array([t.startswith("##") for t in vocab], dtype=bool),
    )


def letter_words(sentence: str, encoding) -> Iterator[tuple[str, list[str]]]:
    """(word as written in ``sentence``, its pieces) for each word of an encoding (BERT's
    pre-tokeniser's: split on whitespace and punctuation) that holds a letter."""
    pieces, word_ids, offsets = encoding.tokens, encoding.word_ids, encoding.offsets
    i = 0
    while i < len(pieces):
        j = i + 1
        while j < len(pieces) and word_ids[j] == word_ids[i]:
            j += 1
        text = sentence[offsets[i][0] : offsets[j - 1][1]]  # pieces i..j-1 are one word
        if text.isalpha() or any(c.isalpha() for c in text):  # the first test settles most words, quickly
            yield text, pieces[i:j]
        i = j


def split_into_characters(pieces: Sequence[str]) -> bool:
    """A word split entirely into single characters (one piece, however short, is not)."""
    return len(pieces) > 1 and all(len(p) == 1 or (len(p) == 3 and p.startswith("##")) for p in pieces)


def encode_sentences(tokenizer: Tokenizer | BertWordPieceTokenizer, sentences: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(list(sentences), add_special_tokens=False)]
