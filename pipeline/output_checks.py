"""Checks on a finished job's statistics, run by the finalize step before anything is committed.

Each returns None when the output is sound, or one message saying what is wrong, with the counts
that show it and what to try. A job with a message fails (``pipeline.run``): no manifest is
written, so nothing downstream trains on shards that are mostly [UNK] or empty.

``stats`` is the manifest's nested statistics: {"tokens": {"train": 480000, "eval": 4000}, ...}.
"""

from __future__ import annotations

import unicodedata
from typing import Mapping, Optional, Sequence

from pipeline.accents import merges_letters
from pipeline.stats import unk_rates, vocabulary_fit
from pipeline.tokenization import A_FEW, CasingDecision, has_accent

FIRST_REJECTS = 5  # rejects quoted in the message about an empty train split
MERGED_PER_WORD = 0.001
"""Letters merged by accent stripping are worth a warning above this many per word: the English
sample's few Arabic and Russian words (6 merges in 400,397 words with bert-base-uncased) are not."""


def _per_split(stats: Mapping, name: str) -> dict[str, int]:
    node = stats.get(name)
    return dict(node) if isinstance(node, Mapping) else {}


def _has_capital(word: str) -> bool:
    return word.lower() != word


def _is_latin_or_digits(word: str) -> bool:
    return all(not c.isalpha() or "LATIN" in unicodedata.name(c, "") for c in word)


def _likely_causes(words: Sequence[str], casing: CasingDecision) -> list[str]:
    """What to try, most likely first, judged from the words that became [UNK]."""
    half = max(1, len(words)) / 2
    causes = []
    capitals = sum(map(_has_capital, words))
    if not casing.lowercase:
        causes.append(
            f"casing: the text is not lowercased and {capitals} of these {len(words)} words have capitals;"
            " an uncased vocabulary read as cased gives this: try tokenizer.lowercase=true"
        )
    else:
        causes.append(
            "casing: the text is lowercased; a cased vocabulary read as uncased gives this:"
            " try tokenizer.lowercase=false"
        )
    if not casing.strip_accents and sum(map(has_accent, words)) >= half:
        causes.append(
            "accents: most of these words carry accents the vocabulary lacks: try tokenizer.strip_accents=true"
        )
    foreign = sum(not _is_latin_or_digits(w) for w in words)
    script = f" ({foreign} of these words are in another script than Latin)" if foreign else ""
    causes.append(
        f"language: text in another language or script than the vocabulary's{script}:"
        " use a vocabulary made for it, or train one on the corpus (tokenizer=train)"
    )
    if foreign >= half or (capitals < half and not casing.lowercase):
        causes.insert(0, causes.pop())  # the words do not point at casing: the language is likelier
    return causes


def check_unk_rate(
    stats: Mapping, unknown_words: Sequence[tuple[str, int]], casing: CasingDecision, max_unk_fraction: float
) -> Optional[str]:
    """Fails when over ``max_unk_fraction`` of all tokens are [UNK]; names the words behind them."""
    tokens = sum(_per_split(stats, "tokens").values())
    unk = sum(_per_split(stats, "unk_tokens").values())
    if not tokens or unk / tokens <= max_unk_fraction:
        return None
    rates = ", ".join(f"{split} {rate:.2%}" for split, rate in unk_rates(stats).items())
    words = ", ".join(f"{w!r} {n:,}" for w, n in unknown_words) or "none collected"
    causes = "; ".join(_likely_causes([w for w, _ in unknown_words], casing))
    return (
        f"{unk / tokens:.2%} of the tokens are [UNK] ({unk:,} of {tokens:,}: {rates}), above "
        f"tokenizer.max_unk_fraction={max_unk_fraction}. Words most often [UNK]: {words}. "
        f"Tokenizer: lowercase={str(casing.lowercase).lower()}, strip_accents={str(casing.strip_accents).lower()}"
        f" ({casing.reason}). Likely causes: {causes}."
    )


def check_vocabulary_fit(
    stats: Mapping,
    split_words: Sequence[tuple[tuple[str, str], int]],
    max_single_char_word_fraction: float,
    max_pieces_per_word: float,
    trained_pieces: Optional[int] = None,
) -> Optional[str]:
    """Fails when the vocabulary does not fit the text although few tokens are [UNK]: over
    ``max_single_char_word_fraction`` of the words with letters split into single characters, or
    over ``max_pieces_per_word`` pieces per word (``pipeline.stats.vocabulary_fit``). Names the
    figures, the words most often split (``split_words``: ((word, pieces), count)) and the likely
    cause: for a given vocabulary, text in another language or script; for one the job trained
    (``trained_pieces``: its size), a vocab_size too small for the corpus."""
    fit = vocabulary_fit(stats)
    if not fit:
        return None
    pieces, single = fit.get("all", next(iter(fit.values())))
    over = []
    if single > max_single_char_word_fraction:
        over.append(
            f"{single:.1%} of the words are split into single characters, above "
            f"tokenizer.max_single_char_word_fraction={max_single_char_word_fraction}"
        )
    if pieces > max_pieces_per_word:
        over.append(f"words average {pieces:.2f} pieces, above tokenizer.max_pieces_per_word={max_pieces_per_word}")
    if not over:
        return None
    words = [w for (w, _), _ in split_words]
    per_split = "; ".join(
        f"{split} {p:.2f} pieces per word, {c:.1%} in single characters" for split, (p, c) in fit.items()
    )
    examples = ", ".join(f"{w!r} -> {p} ({n:,})" for (w, p), n in split_words) or "none collected"
    if trained_pieces is not None:
        cause = (
            f"the vocabulary trained on the corpus ({trained_pieces:,} pieces) is too small for it: raise"
            " tokenizer.vocab_size (BERT's is 30,522; a trained vocabulary also stays small when few pairs of"
            " pieces occur tokenizer.min_frequency times)"
        )
    else:
        foreign = sum(not _is_latin_or_digits(w) for w in words)
        script = f" ({foreign} of these {len(words)} words are in another script than Latin)" if foreign else ""
        cause = (
            f"text in another language or script than the vocabulary's{script}: the vocabulary holds the letters"
            " but not the words, so few tokens are [UNK]; use a vocabulary made for this language, or train one"
            " on the corpus (tokenizer=train)"
        )
    return (
        f"the vocabulary does not fit the text: {'; '.join(over)} ({per_split}). Words most often split into"
        f" single characters: {examples}. Likely cause: {cause}."
    )


def accent_merge_warning(stats: Mapping, casing: CasingDecision, vocab_file: Optional[str]) -> str:
    """One line when accent stripping merged letters of a script's alphabet (й->и, ё->е, が->か,
    Devanagari vowel signs lost; ``pipeline.accents.merges_letters``) more than a few times (over
    A_FEW and MERGED_PER_WORD of the words), with how often; "" when not."""
    stripped = stats.get("accents_stripped")
    merged = {k: n for k, n in (stripped if isinstance(stripped, Mapping) else {}).items() if merges_letters(k)}
    if sum(merged.values()) <= max(A_FEW, MERGED_PER_WORD * sum(_per_split(stats, "words").values())):
        return ""
    top = ", ".join(f"{k} {n:,}" for k, n in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:FIRST_REJECTS])
    if vocab_file:
        why = (
            f"{vocab_file} was made stripping every mark (as BERT's uncased vocabularies were), so it has no pieces"
            " for these letters: a vocabulary trained on the corpus (tokenizer=train) keeps them"
        )
    else:
        why = "tokenizer.strip_accents=true strips every mark as BERT does: leave it unset to keep these letters"
    return f"accent stripping merged letters of their alphabet {sum(merged.values()):,} times ({top}): {why}"


def check_train_split(stats: Mapping, first_rejects: Sequence[Mapping]) -> Optional[str]:
    """Fails when the train split has no examples: says whether nothing was read or all was
    rejected, with the reject counts by reason and the first few rejects (source, reason, detail)."""
    if _per_split(stats, "examples").get("train", 0):
        return None
    read = sum(_per_split(stats, "documents_read").values())
    kept = _per_split(stats, "documents_kept").get("train", 0)
    rejected = _per_split(stats, "rejected")
    by_reason = ", ".join(f"{reason} {n:,}" for reason, n in sorted(rejected.items(), key=lambda kv: -kv[1])) or "none"
    files = stats.get("files_read", 0)
    if not read:
        why = f"no documents were read from the {files:,} input file(s)"
    elif not kept:
        why = f"all {read:,} documents read were rejected or went to eval"
    else:
        why = f"{kept:,} training documents gave no example"
    quoted = "; ".join(
        f"{r.get('source')} ({r.get('reason')}: {r.get('detail')})" for r in first_rejects[:FIRST_REJECTS]
    )
    return f"the train split has no examples: {why}. Rejected by reason: {by_reason}." + (
        f" First rejects: {quoted}." if quoted else ""
    )
