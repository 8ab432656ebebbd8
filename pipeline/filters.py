"""Document quality heuristics of the kind C4 (Raffel et al. 2020) and Gopher (MassiveText, Rae et
al. 2021) documented. Pure Python, no I/O, deterministic.

Each ``measure`` function computes one value of a cleaned document's text; ``quality_problem``
compares those values with the thresholds of ``FiltersConfig`` (the config's ``filters``), in a fixed
order, and names the first one that fails, with the value measured. ``boilerplate_lines`` finds
the C4-style notice lines (cookies, JavaScript, policies) that ``remove_boilerplate`` takes out.

The views measured:
- lines: the text split at newlines, blank ones left out. A line is a paragraph of wiki, book or
  JSON text (readers join a paragraph's wrapped lines) and a sentence of ``bert_lines`` input.
- words: the text split at whitespace, with each CJK ideograph and kana its own word (as BERT's
  tokenizer splits them), so Chinese and Japanese text has words of one character, not of a line.
  Word length is measured over the words of scripts written with spaces only: a text mostly in
  CJK, Thai, Lao, Khmer, Myanmar or Tibetan has no mean word length (its "words" are characters
  or whole phrases), and that filter lets it through.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from pipeline.records import RejectReason

if TYPE_CHECKING:
    from pipeline.config import FiltersConfig

# CJK ideographs (BERT's ranges), kana and CJK punctuation: each character is a word.
_CJK = (
    "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0002a6df\U0002a700-\U0002ebef\U0002f800-\U0002fa1f"
)
_WORD = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
# Scripts written without spaces between words: CJK and kana (split per character above), Thai,
# Lao, Tibetan, Myanmar, Khmer (not split: a "word" is a phrase).
_UNSPACED = re.compile(f"[{_CJK}\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff]")
# What a sentence ends with, in the scripts the job meets: Latin/Cyrillic/Greek (. ! ? ;), CJK
# (。！？), Devanagari (। ॥), Arabic (؟ ۔), Armenian (։), Ethiopic (። ፧), Myanmar (။),
# Khmer (។), Tibetan (།). Closing quotes and brackets after it are skipped ("He left." she said.").
TERMINAL_PUNCTUATION = ".!?;\u2026\u3002\uff01\uff1f\uff0e\u0964\u0965\u061f\u06d4\u0589\u1362\u1367\u104b\u17d4\u0f0d"
# Thai and Lao end a sentence with a space, not a mark: a line ending in one of their letters counts as ended.
_UNMARKED_SENTENCE_END = re.compile("[\u0e00-\u0eff]")
_CLOSING = "\"'\u201d\u2019\u00bb\u203a)]}\u300d\u300f\u3011\uff09"
_LETTER = re.compile(r"[^\W\d_]")  # a word character that is no digit nor underscore: a letter
_SPACE = re.compile(r"\s+")
_NOT_DIGIT = re.compile(r"\D+")
# Gopher's symbols: the hash (tag lists, markdown) and the ellipsis (truncated snippets, teasers).
_SYMBOLS = re.compile(r"#|\.\.\.|\u2026")
# C4's notice lines: cookie and policy banners, "enable JavaScript" messages. A line is one only if
# it is short (a paragraph of prose that mentions a privacy policy is not a banner).
_BOILERPLATE = re.compile(
    r"\b(?:cookies?\s+(?:policy|settings|preferences|consent)|(?:use|uses|using|accept|enable|allow)\s+"
    r"(?:of\s+)?(?:all\s+)?cookies|javascript\s+(?:is\s+)?(?:disabled|required|must\s+be\s+enabled)|"
    r"(?:enable|turn\s+on|requires?)\s+javascript|privacy\s+policy|terms\s+(?:of\s+(?:use|service)|and\s+conditions)|"
    r"all\s+rights\s+reserved)\b",
    re.IGNORECASE,
)
BOILERPLATE_LINE_MAX_WORDS = 60  # a longer line that matches is prose about cookies, not a banner
_LOREM_IPSUM = re.compile(r"\blorem\s+ipsum\b", re.IGNORECASE)


# --- views ---------------------------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """Whitespace-separated words; each CJK ideograph, kana or CJK punctuation mark is a word."""
    return _WORD.findall(text)


def lines_of(text: str) -> list[str]:
    """Non-blank lines, stripped."""
    return [line.strip() for line in text.split("\n") if line.strip()]


# --- measures: one value each ----------------------------------------------------------------------


def word_count(words: Sequence[str]) -> int:
    return len(words)


def mean_word_length(words: Sequence[str]) -> float | None:
    """Characters per word of the scripts written with spaces; None when those are not most of
    the words (a CJK or Thai text: its words are characters or phrases, not words)."""
    spaced = [w for w in words if not _UNSPACED.search(w)]
    if not spaced or 2 * len(spaced) < len(words):
        return None
    return sum(len(w) for w in spaced) / len(spaced)


def symbol_word_ratio(text: str, words: Sequence[str]) -> float:
    """Hashes and ellipses per word (Gopher's symbol-to-word ratio)."""
    return len(_SYMBOLS.findall(text)) / max(len(words), 1)


def letter_word_fraction(words: Sequence[str]) -> float:
    """Fraction of words with at least one letter, in any script (1 without words)."""
    if not words:
        return 1.0
    return sum(1 for w in words if w.isalpha() or _LETTER.search(w)) / len(words)


def digit_fraction(text: str) -> float:
    """Fraction of the non-space characters that are (decimal) digits."""
    chars = len(_SPACE.sub("", text))
    return len(_NOT_DIGIT.sub("", text)) / chars if chars else 0.0


def ends_in_terminal_punctuation(line: str) -> bool:
    """The line's last character, closing quotes and brackets aside, ends a sentence (any Thai or
    Lao character does: those scripts mark no sentence end)."""
    last = line.rstrip().rstrip(_CLOSING)[-1:]
    return bool(last) and (last in TERMINAL_PUNCTUATION or bool(_UNMARKED_SENTENCE_END.match(last)))


def terminal_punctuation_fraction(lines: Sequence[str]) -> float:
    """Fraction of lines that end a sentence (1 without lines)."""
    if not lines:
        return 1.0
    return sum(1 for line in lines if ends_in_terminal_punctuation(line)) / len(lines)


def duplicate_line_fraction(lines: Sequence[str]) -> float:
    """Fraction of lines that repeat an earlier line of the document (Gopher's duplicate lines)."""
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


def _word_chars(words: Sequence[str]) -> int:
    return sum(len(w) for w in words)


def _ngrams(words: Sequence[str], n: int):
    """The word n-grams in order, as tuples (zip builds them without slicing)."""
    return zip(*(words[k:] for k in range(n)))


def top_ngram_fraction(words: Sequence[str], n: int) -> float:
    """Fraction of the word characters in the occurrences of the most frequent word n-gram, when
    it occurs more than once (Gopher: a spam phrase, a menu repeated on a page)."""
    total = _word_chars(words)
    if len(words) < n or not total:
        return 0.0
    counts = Counter(_ngrams(words, n))
    top = max(counts.values())
    if top < 2:
        return 0.0
    # Ties: the longest in characters (the fraction does not depend on which came first).
    return top * max(_word_chars(g) for g, c in counts.items() if c == top) / total


def duplicate_ngram_fraction(words: Sequence[str], n: int) -> float:
    """Fraction of the word characters inside a word n-gram that occurred earlier in the document,
    each word counted once however many such n-grams cover it (Gopher's duplicate n-grams: a page
    that says the same thing twice has about half its characters in them). It never grows with n:
    a repeated (n+1)-gram is two overlapping repeated n-grams."""
    total = _word_chars(words)
    if len(words) < 2 * n or not total:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered_from = [0] * len(words)  # covered_from[i] > 0: a repeated n-gram starts at i
    for i, gram in enumerate(_ngrams(words, n)):
        if gram in seen:
            covered_from[i] = 1
        else:
            seen.add(gram)
    chars, reach = 0, -1
    for i, w in enumerate(words):
        if covered_from[i]:
            reach = i + n - 1
        if i <= reach:
            chars += len(w)
    return chars / total


def is_boilerplate_line(line: str) -> bool:
    """A cookie, policy or "enable JavaScript" notice of at most BOILERPLATE_LINE_MAX_WORDS words."""
    return bool(_BOILERPLATE.search(line)) and len(line.split()) <= BOILERPLATE_LINE_MAX_WORDS


def boilerplate_lines(lines: Sequence[str]) -> list[str]:
    return [line for line in lines if is_boilerplate_line(line)]


def has_lorem_ipsum(text: str) -> bool:
    """Placeholder text: C4 dropped every page with it."""
    return bool(_LOREM_IPSUM.search(text))


# --- decisions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityProblem:
    """Why a document fails a filter: its reason and the value measured, said with the limit."""

    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class Boilerplate:
    """What ``remove_boilerplate`` did to a document's text."""

    text: str  # the text without its notice lines (paragraph breaks kept)
    removed: tuple[str, ...]  # the lines taken out, in order
    fraction: float  # removed / all lines


def remove_boilerplate(text: str) -> Boilerplate:
    """The text without its notice lines; a paragraph left empty is dropped with its break."""
    removed: list[str] = []
    paragraphs = []
    lines = 0
    for paragraph in text.split("\n\n"):
        kept = []
        for line in paragraph.split("\n"):
            if not line.strip():
                continue
            lines += 1
            (removed if is_boilerplate_line(line) else kept).append(line)
        if kept:
            paragraphs.append("\n".join(kept))
    if not removed:
        return Boilerplate(text, (), 0.0)
    return Boilerplate("\n\n".join(paragraphs), tuple(removed), len(removed) / lines)


def _outside(value: float, low: float | None, high: float | None) -> bool:
    return (low is not None and value < low) or (high is not None and value > high)


def _allowed(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"allowed {low:g}-{high:g}"
    return f"minimum {low:g}" if low is not None else f"maximum {high:g}"


def _pct(limit: float) -> str:
    """A threshold as a percentage, as precise as it was given: 0.8 -> 80%, 0.125 -> 12.5%."""
    return f"{limit * 100:.4g}%"


def boilerplate_problem(text: str, cleaned: Boilerplate, cfg: FiltersConfig) -> QualityProblem | None:
    """Why a document is dropped rather than cleaned of its notice lines: lorem ipsum anywhere
    (C4), or more of its lines notices than ``max_boilerplate_line_fraction``."""
    if has_lorem_ipsum(text):
        return QualityProblem(RejectReason.FILTER_BOILERPLATE, "lorem ipsum placeholder text")
    limit = cfg.max_boilerplate_line_fraction
    if limit is not None and cleaned.fraction > limit:
        return QualityProblem(
            RejectReason.FILTER_BOILERPLATE,
            f"{cleaned.fraction:.1%} of the lines are cookie, policy or JavaScript notices, maximum {_pct(limit)}"
            f" (first: {cleaned.removed[0][:80]!r})",
        )
    return None


def quality_problem(text: str, cfg: FiltersConfig) -> QualityProblem | None:
    """The first heuristic ``text`` fails, in the order below (cheap measures first), or None.
    A threshold set to null turns its filter off, and what no filter asks for is not measured
    (``filters=none`` costs nothing)."""
    words = lines = None
    if (
        cfg.min_words is not None
        or cfg.min_mean_word_length is not None
        or cfg.max_mean_word_length is not None
        or cfg.max_symbol_word_ratio is not None
        or cfg.min_letter_word_fraction is not None
        or cfg.max_top_ngram_fraction
        or cfg.max_duplicate_ngram_fraction
    ):
        words = words_of(text)
    if cfg.min_terminal_punctuation_fraction is not None or cfg.max_duplicate_line_fraction is not None:
        lines = lines_of(text)
    if cfg.min_words is not None and word_count(words) < cfg.min_words:
        return QualityProblem(RejectReason.FILTER_FEW_WORDS, f"{len(words)} words, minimum {cfg.min_words}")
    if cfg.min_mean_word_length is not None or cfg.max_mean_word_length is not None:
        length = mean_word_length(words)
        if length is not None and _outside(length, cfg.min_mean_word_length, cfg.max_mean_word_length):
            allowed = _allowed(cfg.min_mean_word_length, cfg.max_mean_word_length)
            return QualityProblem(RejectReason.FILTER_WORD_LENGTH, f"mean word length {length:.1f}, {allowed}")
    if cfg.max_symbol_word_ratio is not None:
        ratio = symbol_word_ratio(text, words)
        if _outside(ratio, None, cfg.max_symbol_word_ratio):
            return QualityProblem(
                RejectReason.FILTER_SYMBOLS,
                f"{ratio:.3f} hashes and ellipses per word, {_allowed(None, cfg.max_symbol_word_ratio)}",
            )
    if cfg.min_letter_word_fraction is not None:
        letters = letter_word_fraction(words)
        if _outside(letters, cfg.min_letter_word_fraction, None):
            return QualityProblem(
                RejectReason.FILTER_NO_LETTERS,
                f"{letters:.1%} of words have a letter, minimum {_pct(cfg.min_letter_word_fraction)}",
            )
    if cfg.max_digit_fraction is not None:
        digits = digit_fraction(text)
        if _outside(digits, None, cfg.max_digit_fraction):
            return QualityProblem(
                RejectReason.FILTER_DIGITS,
                f"{digits:.1%} of characters are digits, maximum {_pct(cfg.max_digit_fraction)}",
            )
    if cfg.min_terminal_punctuation_fraction is not None:
        ended = terminal_punctuation_fraction(lines)
        if _outside(ended, cfg.min_terminal_punctuation_fraction, None):
            return QualityProblem(
                RejectReason.FILTER_TERMINAL_PUNCTUATION,
                f"{ended:.1%} of {len(lines)} lines end in terminal punctuation, "
                f"minimum {_pct(cfg.min_terminal_punctuation_fraction)}",
            )
    if cfg.max_duplicate_line_fraction is not None:
        repeated = duplicate_line_fraction(lines)
        if _outside(repeated, None, cfg.max_duplicate_line_fraction):
            return QualityProblem(
                RejectReason.FILTER_REPEATED_LINES,
                f"{repeated:.1%} of {len(lines)} lines repeat an earlier line, "
                f"maximum {_pct(cfg.max_duplicate_line_fraction)}",
            )
    if words is None:
        return None
    return _ngram_problem(words, cfg)


def _ngram_problem(words: Sequence[str], cfg: FiltersConfig) -> QualityProblem | None:
    for n, limit in sorted((cfg.max_top_ngram_fraction or {}).items()):
        fraction = top_ngram_fraction(words, n)
        if fraction > limit:
            return QualityProblem(
                RejectReason.FILTER_REPEATED_NGRAMS,
                f"the most frequent {n}-gram covers {fraction:.1%} of the characters, maximum {_pct(limit)}",
            )
    bound = 1.0  # the fraction measured for the last, shorter n: one for a longer n is no larger
    for n, limit in sorted((cfg.max_duplicate_ngram_fraction or {}).items()):
        if bound <= limit:
            continue
        bound = fraction = duplicate_ngram_fraction(words, n)
        if fraction > limit:
            return QualityProblem(
                RejectReason.FILTER_REPEATED_NGRAMS,
                f"{fraction:.1%} of the characters are in repeated {n}-grams, maximum {_pct(limit)}",
            )
    return None
