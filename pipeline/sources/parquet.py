"""Parquet: one document per row, its text, id and title in the columns ``source.text_field``,
``source.id_field`` and ``source.title_field`` name (defaults fit ``wikimedia/wikipedia``: id,
url, title, text).

A file is read one row group at a time, and only those columns, so memory follows the largest
row group, not the file. The job reads the row groups of one file on several workers: it asks
:func:`plan_parquet` for a file's parts (its footer only), spreads them, and each worker reads
its parts with :func:`read_parquet_part`. Parquet needs random access, so a file is read as it
is stored (by its ``.parquet`` name; it compresses its columns itself), never through a
decompressor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, Rejection, RejectReason, SourceFormat
from pipeline.sources.cleaned import cleaned_document
from pipeline.sources.jsonl import paragraphs_of

PARQUET_SUFFIX = ".parquet"
TEXT_COLUMN_NAMES = ("text", "content", "raw_content", "body")
"""Columns that may hold the text when source.text_field is not in a file: used when exactly one
of them is there and holds strings."""
_ROWS_PER_SLICE = 1024  # rows turned into Python objects at a time (a row group can hold millions)
_COLUMNS_NAMED = 20  # an error names at most this many of the file's columns


def is_parquet(path: str) -> bool:
    return path.lower().endswith(PARQUET_SUFFIX)


@dataclass(frozen=True)
class ParquetColumns:
    """Which of a file's columns the job reads."""

    text: str
    id: str | None  # None: rows are named ``row {n}``
    title: str | None  # None: documents have no title

    @property
    def names(self) -> list[str]:
        return [name for name in (self.text, self.id, self.title) if name is not None]


@dataclass(frozen=True)
class ParquetPart:
    """One row group of one Parquet file: the job's unit of work for reading Parquet."""

    path: str
    row_group: int
    first_row: int  # the 1-based number of its first row in the file
    rows: int
    stored_bytes: int  # its column chunks as stored (compressed), for the progress line
    columns: ParquetColumns
    last: bool  # the file's last part with rows


class ParquetColumnError(ValueError):
    """A file's columns do not say where the text is."""


def plan_parquet(
    path: str, open_seekable: Callable[[], BinaryIO], cfg: SourceConfig
) -> Iterator[ParquetPart | Rejection]:
    """The parts of one Parquet file, one per row group with rows, from its footer alone; one
    rejection instead when the file is no readable Parquet or has no text column."""
    try:
        with open_seekable() as f:
            metadata = pq.ParquetFile(f).metadata
            columns = text_columns(metadata.schema.to_arrow_schema(), cfg)
    except ParquetColumnError as error:
        yield Rejection(path, "", RejectReason.MISSING_TEXT, str(error))
        return
    except (OSError, pa.ArrowException, ValueError) as error:
        yield Rejection(path, "", RejectReason.UNREADABLE, f"not a readable Parquet file: {_one_line(error)}")
        return
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    with_rows = [i for i, group in enumerate(groups) if group.num_rows]
    first_row = 1
    for i, group in enumerate(groups):
        if group.num_rows:
            stored = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
            yield ParquetPart(path, i, first_row, group.num_rows, stored, columns, last=i == with_rows[-1])
        first_row += group.num_rows


def read_parquet_part(part: ParquetPart, open_seekable: Callable[[], BinaryIO]) -> Iterator[RawDocument | Rejection]:
    """The documents of one row group, and a rejection for each row without usable text; one
    rejection for the row group instead when it cannot be read."""
    try:
        with open_seekable() as f:
            table = pq.ParquetFile(f).read_row_group(part.row_group, columns=part.columns.names)
    except (OSError, pa.ArrowException, ValueError) as error:
        last_row = part.first_row + part.rows - 1
        yield Rejection(
            part.path,
            f"row group {part.row_group}",
            RejectReason.UNREADABLE,
            f"row group {part.row_group} (rows {part.first_row}-{last_row}) unreadable: {_one_line(error)}",
            position=part.first_row,
        )
        return
    row = part.first_row
    for batch in table.to_batches(max_chunksize=_ROWS_PER_SLICE):
        texts = _values(batch.column(part.columns.text))
        ids = _values(batch.column(part.columns.id)) if part.columns.id else [None] * len(texts)
        titles = _values(batch.column(part.columns.title)) if part.columns.title else [None] * len(texts)
        for text, record_id, title in zip(texts, ids, titles):
            yield from _row(part, row, text, record_id, title)
            row += 1


def read_parquet(
    path: str, open_seekable: Callable[[], BinaryIO], cfg: SourceConfig
) -> Iterator[RawDocument | Rejection]:
    """Every part of one file, one after the other (what the job spreads over workers)."""
    for part in plan_parquet(path, open_seekable, cfg):
        if isinstance(part, Rejection):
            yield part
        else:
            yield from read_parquet_part(part, open_seekable)


def text_columns(schema: pa.Schema, cfg: SourceConfig) -> ParquetColumns:
    """The columns to read: ``cfg.text_field``, or where it is absent the one column of
    TEXT_COLUMN_NAMES that holds strings; the id and title columns where present. Raises
    ParquetColumnError naming the file's columns when the text column is not found."""
    names = schema.names
    text = cfg.text_field
    if text not in names:
        found = [n for n in names if n.lower() in TEXT_COLUMN_NAMES and _holds_strings(schema.field(n).type)]
        if len(found) != 1:
            raise ParquetColumnError(_no_text_column(schema, cfg, found))
        text = found[0]
    return ParquetColumns(
        text,
        cfg.id_field if cfg.id_field in names and cfg.id_field != text else None,
        cfg.title_field if cfg.title_field in names and cfg.title_field != text else None,
    )


def _no_text_column(schema: pa.Schema, cfg: SourceConfig, candidates: list[str]) -> str:
    """``no 'text' column (the file has: id: int64, content: string; set source.text_field=...)``"""
    listed = ", ".join(f"{f.name}: {f.type}" for f in list(schema)[:_COLUMNS_NAMED]) or "no columns"
    more = f" and {len(schema) - _COLUMNS_NAMED} more" if len(schema) > _COLUMNS_NAMED else ""
    if candidates:
        choice = " or ".join(f"source.text_field={c}" for c in candidates)
        return f"no {cfg.text_field!r} column, and several could hold the text (the file has: {listed}{more}; set {choice})"
    return f"no {cfg.text_field!r} column (the file has: {listed}{more}; set source.text_field=<the text's column>)"


def _holds_strings(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_bytes(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def _values(column: pa.Array) -> list:
    """A column's values as Python objects; text and binary columns as bytes (None for null),
    so one row of invalid UTF-8 is one rejected row, not an error for the row group."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type):
        column = column.cast(pa.binary())
    elif pa.types.is_large_string(column.type):
        column = column.cast(pa.large_binary())
    elif pa.types.is_string_view(column.type):
        column = column.cast(pa.binary_view())
    return column.to_pylist()


def _row(part: ParquetPart, row: int, value, record_id, title) -> Iterator[RawDocument | Rejection]:
    """One row -> its document, or why it has none."""
    name = _decoded(record_id) if record_id is not None else None
    record = name if name else f"row {row}"
    column = part.columns.text

    def rejected(reason: RejectReason, detail: str) -> Rejection:
        return Rejection(part.path, record, reason, f"row {row}: {detail}", position=row)

    if value is None:
        yield rejected(RejectReason.MISSING_TEXT, f"{column!r} is null")
        return
    if not isinstance(value, bytes):
        shown = str(value)[:40]
        yield rejected(RejectReason.MISSING_TEXT, f"{column!r} is {type(value).__name__} {shown!r}, not a string")
        return
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        yield rejected(RejectReason.INVALID_ENCODING, f"byte {error.start} of {column!r}: {error.reason}")
        return
    if not text.strip():
        yield rejected(RejectReason.MISSING_TEXT, f"{column!r} is blank")
        return
    title_text = _decoded(title) if title is not None else ""
    yield from cleaned_document(part.path, record, title_text, paragraphs_of(text), SourceFormat.PARQUET, position=row)


def _decoded(value) -> str:
    """An id or title as text: bytes read as UTF-8 (a bad byte replaced), anything else by str."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _one_line(error: BaseException) -> str:
    """An error's message on one line of printable characters (Arrow quotes raw bytes in some)."""
    printable = "".join(c if c.isprintable() else " " for c in str(error))
    return " ".join(printable.split()) or type(error).__name__
