"""Deterministic WordPiece vocabulary training.

Hugging Face's WordPiece trainer gives a different vocabulary from run to run on the same text
(measured here: 26,682 to 26,684 pieces over six runs, single-threaded too: its counts live in
hash maps with per-process seeds, so ties break differently). Shards must be byte-identical for
the same inputs and seed, so the job trains with this module instead:

1. ``count_words``: BERT's own normaliser and pre-tokeniser (from ``tokenizers``, so words are
   exactly what the WordPiece model will later see), counted per document; Beam sums the counts.
2. ``train_wordpiece``: the same scheme as the Hugging Face trainer (BPE merges over words whose
   non-initial characters carry the ``##`` prefix; vocabulary = special tokens + alphabet +
   merged pieces), with ties broken by the pieces themselves, so the result depends only on the
   word counts.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Optional

from tokenizers import pre_tokenizers

from pipeline import accents

PREFIX = "##"


class WordCounter:
    """Words of a text as BERT's WordPiece sees them (normalised, split on whitespace/punctuation),
    normalised as ``pipeline.tokenization.build_tokenizer`` does with the same settings
    (strip_accents=None follows ``lowercase``; ``keep_letters``: see ``pipeline.accents``)."""

    def __init__(self, lowercase: bool, strip_accents: Optional[bool] = None, keep_letters: bool = False):
        self.normalizer = accents.normalizer(lowercase, strip_accents, keep_letters)
        self.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def count(self, texts: Iterable[str]) -> Counter:
        counts: Counter = Counter()
        for text in texts:
            normalized = self.normalizer.normalize_str(text)
            counts.update(w for w, _ in self.pre_tokenizer.pre_tokenize_str(normalized))
        return counts


def _piece(symbol: str, first: bool) -> str:
    return symbol if first else PREFIX + symbol


def _merge(a: str, b: str) -> str:
    return a + b[len(PREFIX) :]  # b always carries the prefix: it is never a word's first piece


def train_wordpiece(
    word_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: list[str],
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    max_word_chars: int = 100,
) -> list[str]:
    """Vocabulary (a list: id -> piece) from word counts; deterministic for the same counts."""
    words = sorted((w, c) for w, c in word_counts.items() if 0 < len(w) <= max_word_chars)
    # Alphabet: the `limit_alphabet` most frequent characters (ties by character).
    char_counts: Counter = Counter()
    for w, c in words:
        for ch in w:
            char_counts[ch] += c
    alphabet = {ch for ch, _ in sorted(char_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit_alphabet]}

    symbols: list[list[str]] = []
    counts: list[int] = []
    for w, c in words:
        if all(ch in alphabet for ch in w):  # a word with a dropped character can only be [UNK]
            symbols.append([_piece(ch, i == 0) for i, ch in enumerate(w)])
            counts.append(c)

    vocab = list(special_tokens)
    seen = set(vocab)
    for piece in sorted({s for syms in symbols for s in syms}):
        if piece not in seen:
            vocab.append(piece)
            seen.add(piece)

    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for wi, syms in enumerate(symbols):
        for pair in zip(syms, syms[1:]):
            pair_counts[pair] += counts[wi]
            where[pair].add(wi)
    # Max-heap on count; among equal counts the smallest pair (lexicographic) wins.
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue  # stale heap entry: the count changed since it was pushed
        if -neg < min_frequency:
            break
        new = _merge(*pair)
        if new not in seen:
            vocab.append(new)
            seen.add(new)
        changed: set[tuple[str, str]] = set()
        for wi in sorted(where.pop(pair, ())):
            old = symbols[wi]
            merged, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and old[i] == pair[0] and old[i + 1] == pair[1]:
                    merged.append(new)
                    i += 2
                else:
                    merged.append(old[i])
                    i += 1
            if len(merged) == len(old):
                continue  # an earlier merge already removed the pair from this word
            # Only the pairs around the merge sites change; the multiset difference finds them.
            delta = Counter(zip(merged, merged[1:]))
            delta.subtract(zip(old, old[1:]))
            c = counts[wi]
            for p, d in delta.items():
                if d:
                    pair_counts[p] += d * c
                    changed.add(p)
                    if d > 0:
                        where[p].add(wi)
            symbols[wi] = merged
        pair_counts.pop(pair, None)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
                where.pop(p, None)
    return vocab
