"""From a RawDocument to a clean, sentence-split, filtered document with a stable id (its split:
``pipeline.heldout``; the filters: ``pipeline.filters`` and ``pipeline.language``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.config import CleaningConfig, FiltersConfig
from pipeline.filters import Boilerplate, QualityProblem, boilerplate_problem, quality_problem, remove_boilerplate
from pipeline.language import LanguageGuess, identify_language
from pipeline.records import RawDocument, RejectAction, Rejection, RejectReason
from pipeline.seeding import stable_id
from pipeline.sentences import paragraphs_of, split_sentences


@dataclass(frozen=True)
class Document:
    """A kept document: ``sentences`` in order; ``doc_id`` is a hash of the cleaned text, so the
    same text gets the same id whatever file, path or worker it came from (and duplicates collide)."""

    doc_id: int
    source: str
    record_id: str
    title: str
    sentences: tuple[str, ...]
    chars: int
    position: int = 0  # where in its source it starts (``Rejection.position``)
    format: str = ""  # the reader's SourceFormat value: book_text, json_lines...
    language: str = ""  # identified language (ISO 639-1), "" when filters.languages is empty
    language_score: float | None = None  # its probability under the model; None when not identified


def prepare_document(
    raw: RawDocument, cfg: CleaningConfig, filters: FiltersConfig | None = None
) -> tuple[Document | None, list[Rejection]]:
    """Split into sentences and filter one document (the readers already cleaned its text and
    reported repairs and empty documents). Returns (document or None, rejections).

    In order: notice lines removed (``filters.remove_boilerplate_lines``, a repair reported as
    ``filter_boilerplate_lines``), the length minimums (``too_short``), the quality heuristics,
    then the language. ``filters`` None: the default preset (``FiltersConfig()``)."""
    filters = FiltersConfig() if filters is None else filters
    rejections: list[Rejection] = []
    text = raw.text.strip()
    if filters.remove_boilerplate_lines:
        cleaned = remove_boilerplate(text)
        problem = boilerplate_problem(text, cleaned, filters)
        if problem is not None:
            return None, [_rejected(raw, problem)]
        if cleaned.removed:
            rejections.append(_boilerplate_removed(raw, cleaned))
        text = cleaned.text
    if raw.presplit:
        sentences = [s.strip() for s in text.split("\n") if s.strip()]
    else:
        sentences = split_sentences(paragraphs_of(text))
    if len(text) < cfg.min_document_chars or len(sentences) < cfg.min_sentences:
        rejections.append(
            Rejection(
                raw.source,
                raw.record_id,
                RejectReason.TOO_SHORT,
                f"{len(text)} chars, {len(sentences)} sentences (minimum {cfg.min_document_chars} chars, "
                f"{cfg.min_sentences} sentences)",
                position=raw.position,
            )
        )
        return None, rejections
    problem = quality_problem(text, filters)
    guess = None
    if problem is None and filters.languages:
        guess = identify_language(text)
        problem = _language_problem(guess, filters)
    if problem is not None:
        return None, [*rejections, _rejected(raw, problem)]
    key = text if cfg.drop_duplicates else f"{os.path.basename(raw.source)}\x00{raw.record_id}\x00{text}"
    doc = Document(
        stable_id(key),
        raw.source,
        raw.record_id,
        raw.title,
        tuple(sentences),
        len(text),
        raw.position,
        raw.format.value,
        language=guess.language if guess else "",
        language_score=guess.score if guess else None,
    )
    return doc, rejections


def _rejected(raw: RawDocument, problem: QualityProblem) -> Rejection:
    return Rejection(raw.source, raw.record_id, problem.reason, problem.detail, position=raw.position)


def _boilerplate_removed(raw: RawDocument, cleaned: Boilerplate) -> Rejection:
    """The repair: notice lines taken out of a document that is kept."""
    return Rejection(
        raw.source,
        raw.record_id,
        RejectReason.FILTER_BOILERPLATE_LINES,
        f"{len(cleaned.removed)} notice line(s) removed, first: {cleaned.removed[0][:80]!r}",
        RejectAction.REPAIRED,
        position=raw.position,
    )


def _language_problem(guess: LanguageGuess, filters: FiltersConfig) -> QualityProblem | None:
    if guess.language in filters.languages and guess.score >= filters.min_language_score:
        return None
    return QualityProblem(
        RejectReason.FILTER_LANGUAGE,
        f"identified as {guess.language} (score {guess.score:.2f}); kept: {', '.join(filters.languages)} "
        f"with score {filters.min_language_score:g} or more",
    )
