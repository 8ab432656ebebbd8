"""JSON lines: one object per line, its text in ``source.text_field`` (and optional id, title fields)."""

from __future__ import annotations

import json
import re
from typing import BinaryIO, Iterator

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, Rejection, RejectReason, SourceFormat
from pipeline.sources.cleaned import cleaned_document
from pipeline.sources.lines import BadLine, read_lines

# WikiExtractor's JSON separates paragraphs with a single "\n", so any run of
# newlines is a paragraph break here (in Parquet rows too).
_PARAGRAPH_BREAK = re.compile(r"\s*\n\s*")
_FIELDS_NAMED = 10  # a missing_text detail names at most this many of the record's fields


def read_json_lines(source: str, stream: BinaryIO, cfg: SourceConfig) -> Iterator[RawDocument | Rejection]:
    """One document per non-blank line, its text in ``cfg.text_field``; record_id is str(the
    ``cfg.id_field`` value) if present, else ``line {n}``; the title from ``cfg.title_field``."""
    for line in read_lines(stream, cfg.max_line_bytes):
        if isinstance(line, BadLine):
            yield Rejection(source, f"line {line.number}", line.reason, line.detail, position=line.number)
            continue
        if line.text.strip():
            yield from _json_record(source, line.number, line.text, cfg)


def _json_record(source: str, number: int, line: str, cfg: SourceConfig) -> Iterator[RawDocument | Rejection]:
    def malformed(detail: str) -> Rejection:
        return Rejection(source, f"line {number}", RejectReason.MALFORMED_JSON, detail, position=number)

    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        yield malformed(f"line {number}, column {error.colno}: {error.msg}")
        return
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        yield malformed(f"line {number}: nested too deeply")
        return
    if not isinstance(record, dict):
        yield malformed(f"line {number}: expected a JSON object, got {type(record).__name__}")
        return

    record_id = str(record[cfg.id_field]) if record.get(cfg.id_field) is not None else f"line {number}"
    text = record.get(cfg.text_field)
    if not isinstance(text, str) or not text.strip():
        yield Rejection(
            source, record_id, RejectReason.MISSING_TEXT, f"line {number}: {missing_text(record, cfg)}", position=number
        )
        return
    title = record.get(cfg.title_field)
    title = title if isinstance(title, str) else ""
    yield from cleaned_document(source, record_id, title, paragraphs_of(text), SourceFormat.JSON_LINES, position=number)


def paragraphs_of(text: str) -> str:
    """A record's text with every run of newlines as one paragraph break (a blank line)."""
    return _PARAGRAPH_BREAK.sub("\n\n", text.strip())


def missing_text(record: dict, cfg: SourceConfig) -> str:
    """Why a record has no usable text, naming the fields it has when the text field is absent:
    ``no "text" field (the record has: content, url; set source.text_field)``."""
    name = cfg.text_field
    if name in record:
        value = record[name]
        return f"{name!r} is {type(value).__name__} {str(value)[:40]!r}"
    fields = ", ".join(map(str, list(record)[:_FIELDS_NAMED])) or "no fields"
    more = f" and {len(record) - _FIELDS_NAMED} more" if len(record) > _FIELDS_NAMED else ""
    return f"no {name!r} field (the record has: {fields}{more}; source.text_field names the text's field)"
