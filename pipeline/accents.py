"""Accent stripping that keeps letters: which marks are accents, per script, and what stripping changed.

BERT's uncased normaliser removes every nonspacing mark (Unicode category Mn) after NFD. For Latin
and Greek that is its purpose: é, ü, ά are accented variants of e, u, α. Elsewhere it merges or
mangles letters: Cyrillic й (и + breve) becomes и, ё becomes е, Ukrainian ї becomes і; Devanagari
and Thai lose their vowel signs; Japanese kana lose their voicing marks (が becomes か).

With ``keep_letters`` the job strips only accents, decided per script:

- Latin, Greek, and the generic combining marks on any letter (U+0300 block and its extensions:
  acute, grave, diaeresis, tonos, Cyrillic stress marks) are stripped, as BERT uncased does.
- Cyrillic letters of national alphabets written with a mark (й ё ї ў ѓ ќ and Chuvash, Tajik,
  Moldovan... letters) are kept; grave-accented ѐ ѝ, which only mark stress, are stripped.
- Arabic harakat and Hebrew niqqud (optional vowel pointing, absent from most text; Arabic BERTs
  drop them too) are stripped; the hamza and madda letters (أ إ آ ؤ ئ) are kept.
- Marks of a script's own block (Indic vowel signs and virama, Thai, Lao, Tibetan, Myanmar,
  Khmer...) and kana voicing marks are part of the writing and are never stripped.

Text is in NFC after stripping (BERT's is in NFD: the same for Latin, Greek and Cyrillic once the
accents are gone; Hangul stays in syllables instead of jamo). The same normaliser serves the
tokenizer and the vocabulary trainer (``normalizer``); ``stripped_characters`` counts what
stripping changed, for the job's statistics.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections import Counter
from typing import Optional

from tokenizers import Regex, normalizers

ACCENT_BLOCKS = (
    (0x0300, 0x036F),  # Combining Diacritical Marks (Latin, Greek, Cyrillic accents and stress)
    (0x1AB0, 0x1AFF),  # Combining Diacritical Marks Extended
    (0x1DC0, 0x1DFF),  # Combining Diacritical Marks Supplement
    (0x20D0, 0x20FF),  # Combining Diacritical Marks for Symbols
    (0xFE20, 0xFE2F),  # Combining Half Marks
    (0x0591, 0x05C7),  # Hebrew cantillation and niqqud
    (0x0610, 0x061A),  # Arabic honorifics and small letters above
    (0x064B, 0x065F),  # Arabic harakat, shadda, sukun (and the hamza/madda marks, see LETTER_MARKS)
    (0x0670, 0x0670),  # Arabic superscript alef
    (0x06D6, 0x06ED),  # Arabic Quranic annotation marks
)
STRESS_ONLY = set("ѐЀѝЍѷѶ")  # Cyrillic letters whose mark only shows stress (Bulgarian, Macedonian, Church Slavonic)
ARABIC_LETTER_MARKS = set("\u0653\u0654\u0655")  # madda, hamza above, hamza below: أ إ آ ؤ ئ are letters


def _is_accent(c: str) -> bool:
    cp = ord(c)
    return unicodedata.category(c) == "Mn" and any(lo <= cp <= hi for lo, hi in ACCENT_BLOCKS)


@functools.cache
def letters_with_marks() -> dict[str, tuple[str, str]]:
    """Letters kept whole although their NFD ends in an accent: letter -> (base, mark)."""
    out = {}
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        d = unicodedata.normalize("NFD", c)
        if len(d) != 2 or not _is_accent(d[1]) or c in STRESS_ONLY:
            continue
        script = unicodedata.name(d[0], "").split(" ")[0]
        if script == "CYRILLIC" or (script == "ARABIC" and d[1] in ARABIC_LETTER_MARKS):
            out[c] = (d[0], d[1])
    return out


def _char_class(chars) -> str:
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


@functools.cache
def accent_pattern() -> str:
    """A regex (the same for Python's ``re`` and the tokenizers' Oniguruma) matching each accent
    to strip in NFD text: any accent mark, except a mark right after the base it makes a letter with."""
    bases: dict[str, set[str]] = {}
    for base, mark in letters_with_marks().values():
        bases.setdefault(mark, set()).add(base)
    accents = [chr(cp) for lo, hi in ACCENT_BLOCKS for cp in range(lo, hi + 1) if _is_accent(chr(cp))]
    plain = _char_class(a for a in accents if a not in bases)
    guarded = [f"(?<!{_char_class(b)}){re.escape(m)}" for m, b in sorted(bases.items())]
    return "|".join(guarded + [plain])


@functools.cache
def _accent_re() -> re.Pattern:
    return re.compile(accent_pattern())


@functools.cache
def _nonspacing_marks() -> str:
    """Every character of Unicode category Mn, escaped for a regex character class."""
    return "".join(re.escape(chr(cp)) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Mn")


@functools.cache
def _mark_re() -> re.Pattern:
    return re.compile(f"[{_nonspacing_marks()}]")


@functools.cache
def _marked_cluster_re() -> re.Pattern:
    # A character followed by nonspacing marks, in NFD text: the unit whose stripping is counted.
    marks = _nonspacing_marks()
    return re.compile(f"[^{marks}][{marks}]+")


def strip_accents(text: str, keep_letters: bool) -> str:
    """What the normaliser's stripping does to ``text``: every Mn mark after NFD (BERT), or with
    ``keep_letters`` only accents (see the module docstring), then NFC."""
    nfd = unicodedata.normalize("NFD", text)
    if keep_letters:
        return unicodedata.normalize("NFC", _accent_re().sub("", nfd))
    return unicodedata.normalize("NFC", "".join(c for c in nfd if unicodedata.category(c) != "Mn"))


def normalizer(lowercase: bool, strip_accents: Optional[bool] = None, keep_letters: bool = False):
    """The tokenizers normaliser for these settings: BERT's (strip_accents=None follows
    ``lowercase``), or with ``keep_letters`` and stripping on, BERT's cleaning and Chinese
    spacing, then NFD, accents removed (``accent_pattern``), NFC, lowercase."""
    strip = lowercase if strip_accents is None else strip_accents
    if not (strip and keep_letters):
        return normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
        )
    steps = [
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False),
        normalizers.NFD(),
        normalizers.Replace(Regex(accent_pattern()), ""),
        normalizers.NFC(),
    ]
    return normalizers.Sequence(steps + ([normalizers.Lowercase()] if lowercase else []))


@functools.lru_cache(maxsize=65536)
def _change(cluster: str, keep_letters: bool, lowercase: bool) -> Optional[str]:
    before = unicodedata.normalize("NFC", cluster)
    after = strip_accents(cluster, keep_letters)
    if after == before:
        return None
    if lowercase:
        before, after = before.lower(), after.lower()
    return f"{before}->{after}"


def stripped_characters(text: str, keep_letters: bool, lowercase: bool) -> Counter:
    """What stripping changes in ``text``: Counter of "é->e" (a character with its marks -> what
    is left, lowercased as the tokens are when ``lowercase``)."""
    counts: Counter = Counter()
    if text.isascii():  # most sentences of most corpora: no mark, nothing to scan
        return counts
    nfd = unicodedata.normalize("NFD", text)
    if not _mark_re().search(nfd):  # one class test per character, 40x quicker than the cluster scan
        return counts
    for m in _marked_cluster_re().finditer(nfd):
        change = _change(m.group(), keep_letters, lowercase)
        if change:
            counts[change] += 1
    return counts


def merges_letters(change: str) -> bool:
    """Whether a counted change ("й->и") merged a letter that stripping with ``keep_letters``
    keeps: a letter of a script's alphabet, not an accented variant."""
    before = change.split("->", 1)[0]
    return bool(before) and strip_accents(before, keep_letters=True) == unicodedata.normalize("NFC", before)
