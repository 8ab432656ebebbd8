"""Plain-text inputs: a whole book per file, or BERT's one-sentence-per-line layout."""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, Rejection, SourceFormat
from pipeline.sources.cleaned import cleaned_document
from pipeline.sources.compression import strip_compression_suffix
from pipeline.sources.lines import BadLine, read_lines


def read_book_text(source: str, stream: BinaryIO, cfg: SourceConfig) -> Iterator[RawDocument | Rejection]:
    """One document per file: record_id is the file's base name, title its stem.

    Paragraphs are the blank-line-separated blocks. Books are hard-wrapped, so
    the single newlines inside a block become spaces; no attempt is made to
    undo hyphenation at line ends or to find chapter headings.
    """
    record_id = os.path.basename(source)
    title = os.path.splitext(os.path.basename(strip_compression_suffix(source)))[0]
    paragraphs: list[str] = []
    block: list[str] = []
    for line in read_lines(stream, cfg.max_line_bytes):
        if isinstance(line, BadLine):
            yield Rejection(source, record_id, line.reason, line.detail, position=line.number)
            continue
        stripped = line.text.strip()
        if stripped:
            block.append(stripped)
        elif block:
            paragraphs.append(" ".join(block))
            block = []
    if block:
        paragraphs.append(" ".join(block))
    yield from cleaned_document(source, record_id, title, "\n\n".join(paragraphs), SourceFormat.BOOK_TEXT)


def read_bert_lines(source: str, stream: BinaryIO, cfg: SourceConfig) -> Iterator[RawDocument | Rejection]:
    """One sentence per line, a blank line between documents (the original BERT input format).

    record_id is ``{base name}:{document index}`` with a 0-based index; the text
    keeps the user's sentences, one per line, and the document is ``presplit``.
    A file of blank lines only yields nothing, which is not an error.
    """
    base = os.path.basename(source)

    def document(index: int, sentences: list[str], first_line: int):
        text = "\n".join(sentences)
        return cleaned_document(
            source, f"{base}:{index}", "", text, SourceFormat.BERT_LINES, presplit=True, position=first_line
        )

    index = 0
    sentences: list[str] = []
    first_line = 0  # of the document being gathered
    for line in read_lines(stream, cfg.max_line_bytes):
        if isinstance(line, BadLine):
            yield Rejection(source, f"{base}:{index}", line.reason, line.detail, position=line.number)
            continue
        stripped = line.text.strip()
        if stripped:
            first_line = first_line or line.number
            sentences.append(stripped)
        elif sentences:
            yield from document(index, sentences, first_line)
            index += 1
            sentences, first_line = [], 0
    if sentences:
        yield from document(index, sentences, first_line)
