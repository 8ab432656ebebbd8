"""From a RawDocument to a clean, sentence-split document with a stable id (its split: ``pipeline.heldout``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.config import CleaningConfig
from pipeline.records import RawDocument, Rejection, RejectReason
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


def prepare_document(raw: RawDocument, cfg: CleaningConfig) -> tuple[Document | None, list[Rejection]]:
    """Split into sentences and filter one document (the readers already cleaned its text and
    reported repairs and empty documents). Returns (document or None, rejections)."""
    rejections: list[Rejection] = []
    text = raw.text.strip()
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
    )
    return doc, rejections
