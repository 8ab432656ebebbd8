"""Language identification with py3langid (a maintained fork of langid.py, Lui & Baldwin 2012): a
naive Bayes model over byte n-grams for 140 languages, shipped inside the package's wheel, so a
worker reads nothing from the network. Deterministic: the same text gets the same answer.

Why py3langid: its model is in the wheel (4.6 MB) and its only dependency is numpy, which the job
already has; fastText's lid.176 model is in no PyPI wheel and would be a download at run time. Its
probabilities are calibrated by text length (0.4 and later), so a threshold means the same for a
paragraph and a book. Measured on the sample: 1-3 MB/s per core over whole documents; a long one is
identified from LANGUAGE_SAMPLE_CHARS characters taken at its start, middle and end (12 MB/s).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

LANGUAGE_SAMPLE_CHARS = 6000  # characters identified per document, at most
_WINDOWS = 3  # places they are taken from: start, middle, end (a book's front matter is not the book)


@dataclass(frozen=True)
class LanguageGuess:
    language: str  # ISO 639-1 code (639-3 where the model has no two-letter one)
    score: float  # its probability under the model, in [0, 1]


@lru_cache(maxsize=1)
def _identifier():
    """The model, loaded once per process (0.7 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def known_languages() -> list[str]:
    """The codes the model can answer."""
    return list(_identifier().labels)


def unknown_languages(codes: Iterable[str]) -> list[str]:
    """The codes among ``codes`` that the model does not know (a typo, a three-letter code)."""
    known = set(known_languages())
    return [c for c in codes if c not in known]


def language_sample(text: str, chars: int = LANGUAGE_SAMPLE_CHARS) -> str:
    """``text`` itself when short, else ``chars`` characters of it in _WINDOWS equal pieces spread
    from its start to its end, joined by newlines."""
    if len(text) <= chars:
        return text
    width = chars // _WINDOWS
    starts = [i * (len(text) - width) // (_WINDOWS - 1) for i in range(_WINDOWS)]  # the last ends at the end
    return "\n".join(text[start : start + width] for start in starts)


def identify_language(text: str) -> LanguageGuess:
    """The most likely language of ``text`` and its probability."""
    language, score = _identifier().classify(language_sample(text))
    return LanguageGuess(language, round(float(score), 4))
