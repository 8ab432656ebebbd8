"""Parquet inputs on real files pyarrow writes (several row groups): one document per row, the
columns from SourceConfig or detected, a row group per unit of work, and every bad row or file a
counted rejection with its row number."""

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, Rejection, RejectReason, SourceFormat
from pipeline.sources import plan_parquet, read_parquet_part, read_source

PROSE = "The tide rises twice a day. The moon pulls the sea toward it."


def read(path, cfg: SourceConfig | None = None) -> list:
    return list(read_source(str(path), lambda: open(path, "rb"), cfg or SourceConfig()))


def documents(out: list) -> list[RawDocument]:
    return [item for item in out if isinstance(item, RawDocument)]


def rejections(out: list) -> list[Rejection]:
    return [item for item in out if isinstance(item, Rejection)]


def wikipedia_table(n: int) -> pa.Table:
    """wikimedia/wikipedia's layout: id, url, title, text (string columns)."""
    return pa.table(
        {
            "id": [str(10 + i) for i in range(n)],
            "url": [f"https://en.wikipedia.org/wiki?curid={10 + i}" for i in range(n)],
            "title": [f"Article {i}" for i in range(n)],
            "text": [f"Article {i} begins here.\n{PROSE}\n\n{PROSE}" for i in range(n)],
        }
    )


def test_wikipedia_layout_one_document_per_row_across_row_groups(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(wikipedia_table(10), path, row_group_size=3)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    out = read(path)
    assert not rejections(out)
    docs = documents(out)
    assert [(d.record_id, d.title, d.position) for d in docs] == [
        (str(10 + i), f"Article {i}", i + 1) for i in range(10)
    ]
    assert {d.format for d in docs} == {SourceFormat.PARQUET} and {d.source for d in docs} == {str(path)}
    # Paragraphs as for JSON lines: any run of newlines is one paragraph break.
    assert docs[0].text == f"Article 0 begins here.\n\n{PROSE}\n\n{PROSE}"


def test_a_file_is_planned_as_one_part_per_row_group_reading_only_the_needed_columns(tmp_path):
    path = tmp_path / "wiki.parquet"
    pq.write_table(wikipedia_table(10), path, row_group_size=4)
    parts = list(plan_parquet(str(path), lambda: open(path, "rb"), SourceConfig()))
    assert [(p.row_group, p.first_row, p.rows, p.last) for p in parts] == [
        (0, 1, 4, False),
        (1, 5, 4, False),
        (2, 9, 2, True),
    ]
    assert parts[0].columns.names == ["text", "id", "title"]  # not url
    assert all(p.stored_bytes > 0 for p in parts)
    # Parts read in any order, on any worker, give the rows of the whole file.
    by_part = [d for p in reversed(parts) for d in read_parquet_part(p, lambda: open(path, "rb"))]
    assert sorted((d.position, d.record_id, d.text) for d in by_part) == [
        (d.position, d.record_id, d.text) for d in documents(read(path))
    ]


def test_bad_rows_are_counted_rejects_with_their_row_numbers(tmp_path):
    """A null text, a blank one, and (in a binary column) bytes that are not UTF-8: one rejection
    each, named by the row's id and number; the other rows are read."""
    texts = [PROSE.encode(), None, b"   ", b"Bad \xff byte. " + PROSE.encode(), PROSE.encode() + b" Again."]
    path = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b", "c", "d", "e"], "text": pa.array(texts, pa.binary())}), path, row_group_size=2
    )
    out = read(path)
    assert [d.record_id for d in documents(out)] == ["a", "e"]
    assert [(r.record_id, r.reason, r.position, r.detail) for r in rejections(out)] == [
        ("b", RejectReason.MISSING_TEXT, 2, "row 2: 'text' is null"),
        ("c", RejectReason.MISSING_TEXT, 3, "row 3: 'text' is blank"),
        ("d", RejectReason.INVALID_ENCODING, 4, "row 4: byte 4 of 'text': invalid start byte"),
    ]


def test_a_string_column_holding_invalid_utf8_rejects_that_row_only(tmp_path):
    """Writers that do not check UTF-8 leave it in string columns; Arrow reads it unchecked."""
    values = [b"Good text here.", b"Bad \xff text.", b"More good text."]
    offsets = np.cumsum([0] + [len(v) for v in values], dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    column = pa.Array.from_buffers(pa.string(), len(values), buffers)
    path = tmp_path / "unchecked.parquet"
    pq.write_table(pa.table({"text": column}), path)
    out = read(path)
    assert [d.text for d in documents(out)] == ["Good text here.", "More good text."]
    [bad] = rejections(out)
    assert (bad.record_id, bad.reason, bad.position) == ("row 2", RejectReason.INVALID_ENCODING, 2)


def test_a_text_column_of_numbers_rejects_every_row_saying_what_it_holds(tmp_path):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": [41, 42]}), path)
    out = read(path)
    assert not documents(out)
    assert [(r.record_id, r.reason, r.detail) for r in out] == [
        ("1", RejectReason.MISSING_TEXT, "row 1: 'text' is int '41', not a string"),
        ("2", RejectReason.MISSING_TEXT, "row 2: 'text' is int '42', not a string"),
    ]


def test_a_missing_text_column_names_the_columns_found_and_the_setting(tmp_path):
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({"doc_id": ["a"], "body_text": [PROSE], "n_words": [12]}), path)
    [rejection] = read(path)
    assert rejection.reason is RejectReason.MISSING_TEXT and rejection.source == str(path)
    assert rejection.detail == (
        "no 'text' column (the file has: doc_id: string, body_text: string, n_words: int64; "
        "set source.text_field=<the text's column>)"
    )
    [doc] = read(path, SourceConfig(text_field="body_text", id_field="doc_id"))
    assert (doc.record_id, doc.text) == ("a", PROSE)


@pytest.mark.parametrize(
    "columns, found",
    [
        ({"url": ["u"], "content": [PROSE]}, "content"),  # one common text column
        ({"raw_content": [PROSE], "body": [3]}, "raw_content"),  # body holds no strings
    ],
)
def test_the_text_column_is_detected_when_unambiguous(tmp_path, columns, found):
    path = tmp_path / "web.parquet"
    pq.write_table(pa.table(columns), path)
    [part] = plan_parquet(str(path), lambda: open(path, "rb"), SourceConfig())
    assert part.columns.text == found
    [doc] = read(path)
    assert (doc.text, doc.record_id) == (PROSE, "row 1")


def test_two_candidate_text_columns_are_an_error_naming_both(tmp_path):
    path = tmp_path / "two.parquet"
    pq.write_table(pa.table({"content": [PROSE], "body": ["Other text."]}), path)
    [rejection] = read(path)
    assert rejection.reason is RejectReason.MISSING_TEXT
    assert "several could hold the text" in rejection.detail
    assert "set source.text_field=content or source.text_field=body" in rejection.detail


def test_a_truncated_parquet_file_is_a_rejection_naming_it(tmp_path):
    path = tmp_path / "cut.parquet"
    pq.write_table(wikipedia_table(20), path, row_group_size=5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    [rejection] = read(path)
    assert (rejection.source, rejection.reason) == (str(path), RejectReason.UNREADABLE)
    assert rejection.detail.startswith("not a readable Parquet file: ") and "magic bytes" in rejection.detail


def test_a_damaged_row_group_is_rejected_and_the_others_are_read(tmp_path):
    """Bytes overwritten inside the first row group's data (the footer intact): that row group
    is one rejection with its rows; the rest of the file is read."""
    path = tmp_path / "damaged.parquet"
    pq.write_table(wikipedia_table(20), path, row_group_size=5, compression="none")
    first = pq.ParquetFile(path).metadata.row_group(0).column(0)
    start = first.dictionary_page_offset or first.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 32] = b"\xff" * 32  # the page header of the first column chunk
    path.write_bytes(bytes(data))
    out = read(path)
    [rejection] = rejections(out)
    assert rejection.reason is RejectReason.UNREADABLE and rejection.position == 1
    assert rejection.detail.startswith("row group 0 (rows 1-5) unreadable: ")
    assert [d.position for d in documents(out)] == list(range(6, 21))


def test_parquet_is_read_by_its_name_only(tmp_path):
    """Parquet needs random access: under another name or compressed, it is named and refused."""
    path = tmp_path / "corpus.bin"
    pq.write_table(wikipedia_table(2), path)
    [rejection] = read(path)
    assert rejection.reason is RejectReason.UNKNOWN_FORMAT
    assert "Parquet without a .parquet name" in rejection.detail and "named *.parquet" in rejection.detail
    packed = tmp_path / "corpus.parquet.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    [rejection] = read(packed)
    assert rejection.reason is RejectReason.UNKNOWN_FORMAT and "(gzip-compressed)" in rejection.detail
