"""JSON lines: one object per line with a "text" field (and optional "id", "title")."""

from __future__ import annotations

import json
import re
from typing import BinaryIO, Iterator

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, Rejection, RejectReason, SourceFormat
from pipeline.sources.cleaned import cleaned_document
from pipeline.sources.lines import BadLine, read_lines

# WikiExtractor's JSON separates paragraphs with a single "\n", so any run of
# newlines is a paragraph break here.
_PARAGRAPH_BREAK = re.compile(r"\s*\n\s*")


def read_json_lines(source: str, stream: BinaryIO, cfg: SourceConfig) -> Iterator[RawDocument | Rejection]:
    """One document per non-blank line; record_id is str(id) if present, else ``line {n}``."""
    for line in read_lines(stream, cfg.max_line_bytes):
        if isinstance(line, BadLine):
            yield Rejection(source, f"line {line.number}", line.reason, line.detail)
            continue
        if line.text.strip():
            yield from _json_record(source, line.number, line.text)


def _json_record(source: str, number: int, line: str) -> Iterator[RawDocument | Rejection]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        yield Rejection(
            source, f"line {number}", RejectReason.MALFORMED_JSON, f"line {number}, column {error.colno}: {error.msg}"
        )
        return
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        yield Rejection(source, f"line {number}", RejectReason.MALFORMED_JSON, f"line {number}: nested too deeply")
        return
    if not isinstance(record, dict):
        yield Rejection(
            source,
            f"line {number}",
            RejectReason.MALFORMED_JSON,
            f"line {number}: expected a JSON object, got {type(record).__name__}",
        )
        return

    record_id = str(record["id"]) if record.get("id") is not None else f"line {number}"
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        found = "no text field" if "text" not in record else f"text is {type(text).__name__} {str(text)[:40]!r}"
        yield Rejection(source, record_id, RejectReason.MISSING_TEXT, f"line {number}: {found}")
        return
    title = record.get("title")
    title = title if isinstance(title, str) else ""
    paragraphs = _PARAGRAPH_BREAK.sub("\n\n", text.strip())
    yield from cleaned_document(source, record_id, title, paragraphs, SourceFormat.JSON_LINES)
