"""WordPiece with Hugging Face ``tokenizers``: load a vocab.txt or train one on the corpus.

The tokenizer built here is the one transformers' ``BertTokenizerFast`` builds for the same
vocabulary (BERT normaliser, BERT pre-tokeniser, WordPiece with ``##`` continuations, 100
characters per word at most), so ids agree token for token (tests/test_tokenization.py).
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from pipeline.contract import SpecialTokens
from pipeline.instances import Vocabulary
from pipeline.vocab_training import WordCounter, train_wordpiece

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab_sha256(vocab: Sequence[str]) -> str:
    return hashlib.sha256(("\n".join(vocab) + "\n").encode("utf-8")).hexdigest()


def is_uncased(vocab: Sequence[str]) -> bool:
    """An uncased vocabulary has no upper-case letters outside its [SPECIAL] tokens."""
    return not any(any(c.isupper() for c in tok) for tok in vocab
                   if not (tok.startswith("[") and tok.endswith("]")))


def build_tokenizer(vocab: Sequence[str], lowercase: bool) -> BertWordPieceTokenizer:
    # strip_accents=None follows `lowercase`, as BERT's uncased models do.
    return BertWordPieceTokenizer({tok: i for i, tok in enumerate(vocab)}, lowercase=lowercase,
                                  clean_text=True, handle_chinese_chars=True, strip_accents=None)


def train_vocabulary(texts: Iterable[str], vocab_size: int, lowercase: bool, min_frequency: int,
                     limit_alphabet: int) -> list[str]:
    """A WordPiece vocabulary with BERT's special tokens first; deterministic (see
    ``pipeline.vocab_training``, which the Beam job uses piecewise: counts per document, summed)."""
    counts = WordCounter(lowercase).count(texts)
    return train_wordpiece(counts, vocab_size, SPECIAL_TOKENS, min_frequency, limit_alphabet)


def masking_vocabulary(vocab: Sequence[str]) -> Vocabulary:
    special = SpecialTokens.from_vocab(vocab)
    never_mask = np.zeros(len(vocab), dtype=bool)
    never_mask[[special.pad, special.cls, special.sep, special.mask]] = True  # [UNK] is a real prediction
    return Vocabulary(
        size=len(vocab), cls_id=special.cls, sep_id=special.sep, mask_id=special.mask, never_mask=never_mask,
        is_continuation=np.array([t.startswith("##") for t in vocab], dtype=bool))


def encode_sentences(tokenizer: Tokenizer | BertWordPieceTokenizer, sentences: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(list(sentences), add_special_tokens=False)]
