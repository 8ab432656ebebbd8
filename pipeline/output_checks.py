"""Checks on a finished job's statistics, run by the finalize step before anything is committed.

Each returns None when the output is sound, or one message saying what is wrong, with the counts
that show it and what to try. A job with a message fails (``pipeline.run``): no manifest is
written, so nothing downstream trains on shards that are mostly [UNK] or empty.

``stats`` is the manifest's nested statistics: {"tokens": {"train": 480000, "eval": 4000}, ...}.
"""

from __future__ import annotations

import unicodedata
from typing import Mapping, Optional, Sequence

from pipeline.stats import unk_rates
from pipeline.tokenization import CasingDecision, has_accent

FIRST_REJECTS = 5  # rejects quoted in the message about an empty train split


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
