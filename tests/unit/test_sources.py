"""read_source / detect_format on the real Wikipedia sample and on broken inputs built in tmp_path."""

import bz2
import gzip
import io
import json
from xml.sax.saxutils import escape

import pytest

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, RejectAction, Rejection, RejectReason, SourceFormat
from pipeline.sources import detect_format, read_source


def read(path, cfg: SourceConfig | None = None) -> list:
    return list(read_source(str(path), lambda: open(path, "rb"), cfg or SourceConfig()))


def documents(out: list) -> list[RawDocument]:
    return [item for item in out if isinstance(item, RawDocument)]


def rejections(out: list, reason: RejectReason | None = None) -> list[Rejection]:
    return [item for item in out if isinstance(item, Rejection) and reason in (None, item.reason)]


def wiki_page(page_id: int, title: str, text: str, ns: int = 0) -> str:
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n"
        f"    <revision>\n      <id>{page_id}00</id>\n"
        f'      <text xml:space="preserve">{escape(text)}</text>\n    </revision>\n  </page>\n'
    )


def wiki_dump(*pages: str, declaration: str = "") -> str:
    return (
        f'{declaration}<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">\n'
        "  <siteinfo><sitename>Test</sitename></siteinfo>\n" + "".join(pages) + "</mediawiki>\n"
    )


THREE_PAGES = (
    wiki_page(1, "First", "The '''first''' article links to [[Second|the second]]."),
    wiki_page(2, "Second", "The second article.{{cite web|url=http://x.org}}"),
    wiki_page(3, "Third", "The third article.\n\nIt has two paragraphs."),
)


# --- the real sample -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_output(wiki_sample_path):
    return read(wiki_sample_path)


def test_sample_counts(sample_output):
    docs = documents(sample_output)
    by_reason = {reason: len(rejections(sample_output, reason)) for reason in RejectReason}
    assert len(docs) == 97
    assert by_reason[RejectReason.REDIRECT] == 99
    assert by_reason[RejectReason.NON_ARTICLE_NAMESPACE] == 1
    assert by_reason[RejectReason.DISAMBIGUATION] == 8  # "Austin (disambiguation)", "Alien" ({{disambiguation}})...
    assert len(docs) + sum(by_reason.values()) == 206  # every page accounted for
    assert {d.format for d in docs} == {SourceFormat.WIKIPEDIA_XML}


def test_sample_has_no_markup_left(sample_output):
    debris = [
        "{{",
        "}}",
        "[[",
        "]]",
        "<ref",
        "</ref",
        "|-",
        "{|",
        "|}",
        "Category:",
        "thumb|",
        "http://",
        "https://",
        "''",
        "&nbsp;",
        "&amp;",
        "__TOC__",
        "<!--",
    ]
    for doc in documents(sample_output):
        for fragment in debris:
            assert fragment not in doc.text, (doc.title, fragment)


def test_sample_known_phrases_survive(sample_output):
    by_title = {d.title: d for d in documents(sample_output)}
    anarchism = by_title["Anarchism"]
    assert anarchism.record_id == "12"
    assert anarchism.text.startswith(
        "Anarchism is a political philosophy that advocates self-governed societies based on voluntary institutions."
    )
    assert "Pierre-Joseph Proudhon" in anarchism.text  # from [[Pierre-Joseph Proudhon]]
    assert "\n\n" in anarchism.text and "\n\n\n" not in anarchism.text
    assert "Autism" in by_title and "Albedo" in by_title


# --- Wikipedia XML, built inputs -------------------------------------------------------------


def test_mini_dump_documents(tmp_path):
    path = tmp_path / "enwiki-pages-articles1.xml"
    path.write_text(wiki_dump(*THREE_PAGES), encoding="utf-8")
    docs = documents(read(path))
    assert [(d.record_id, d.title) for d in docs] == [("1", "First"), ("2", "Second"), ("3", "Third")]
    assert docs[0].text == "The first article links to the second."
    assert docs[2].text == "The third article.\n\nIt has two paragraphs."


def test_page_filters(tmp_path):
    path = tmp_path / "dump.xml"
    path.write_text(
        wiki_dump(
            wiki_page(1, "Talk:Foo", "talk", ns=1),
            wiki_page(2, "Old", "#redirect [[New]]"),
            wiki_page(3, "Mercury (disambiguation)", "Mercury may be:"),
            wiki_page(4, "Mercury", "Mercury may refer to:\n{{Disambig|geo}}"),
            wiki_page(5, "Templates only", "{{Infobox}}\n[[Category:X]]"),
            wiki_page(6, "Article", "Prose. {{Other uses|Mercury (disambiguation)}}"),
        ).replace("<title>Old</title>", '<title>Old</title><redirect title="New" />'),
        encoding="utf-8",
    )
    out = read(path)
    assert [(r.record_id, r.reason) for r in rejections(out)] == [
        ("1", RejectReason.NON_ARTICLE_NAMESPACE),
        ("2", RejectReason.REDIRECT),
        ("3", RejectReason.DISAMBIGUATION),
        ("4", RejectReason.DISAMBIGUATION),
        ("5", RejectReason.EMPTY),
    ]
    assert [d.record_id for d in documents(out)] == ["6"]


def test_keep_lists_reaches_the_converter(tmp_path):
    path = tmp_path / "dump.xml"
    path.write_text(wiki_dump(wiki_page(1, "Lists", "Intro.\n* one\n* two")), encoding="utf-8")
    assert documents(read(path))[0].text == "Intro."
    assert documents(read(path, SourceConfig(keep_lists=True)))[0].text == "Intro.\n\none\n\ntwo"


def test_truncated_xml_keeps_earlier_pages(tmp_path):
    data = wiki_dump(*THREE_PAGES).encode()
    path = tmp_path / "dump.xml"
    path.write_bytes(data[: data.index(b"The third article")])
    out = read(path)
    assert [d.record_id for d in documents(out)] == ["1", "2"]
    [truncated] = rejections(out)
    assert truncated.reason is RejectReason.TRUNCATED and truncated.record_id == "3"


def test_file_cut_between_pages_is_truncated(tmp_path):
    data = wiki_dump(*THREE_PAGES).encode()
    path = tmp_path / "dump.xml"
    path.write_bytes(data[: data.index(b"</mediawiki>")])
    out = read(path)
    assert len(documents(out)) == 3
    assert [r.reason for r in rejections(out)] == [RejectReason.TRUNCATED]


def test_file_cut_inside_the_header_is_truncated(tmp_path):
    path = tmp_path / "dump.xml"
    path.write_text(wiki_dump(*THREE_PAGES)[:120], encoding="utf-8")
    [rejection] = read(path)
    assert rejection.reason is RejectReason.TRUNCATED and "header" in rejection.detail


def test_invalid_utf8_rejects_only_that_page(tmp_path):
    data = wiki_dump(*THREE_PAGES).encode()
    offset = data.index(b"second article")
    path = tmp_path / "dump.xml"
    path.write_bytes(data[:offset] + b"\xff\xfe" + data[offset:])
    out = read(path)
    assert [d.record_id for d in documents(out)] == ["1", "3"]
    [bad] = rejections(out)
    assert bad.reason is RejectReason.INVALID_ENCODING and bad.record_id == "2"
    assert f"byte {offset}" in bad.detail


def test_malformed_page_xml_rejects_only_that_page(tmp_path):
    broken = wiki_page(2, "Broken", "x").replace("</revision>", "</revison>")
    path = tmp_path / "dump.xml"
    path.write_text(wiki_dump(THREE_PAGES[0], broken, THREE_PAGES[2]), encoding="utf-8")
    out = read(path)
    assert [d.record_id for d in documents(out)] == ["1", "3"]
    assert [(r.reason, r.record_id) for r in rejections(out)] == [(RejectReason.MALFORMED_XML, "2")]


def test_page_without_end_tag_resynchronises_at_next_page(tmp_path):
    cut = THREE_PAGES[1][: THREE_PAGES[1].index("<revision>")]
    path = tmp_path / "dump.xml"
    path.write_text(wiki_dump(THREE_PAGES[0], cut, THREE_PAGES[2]), encoding="utf-8")
    out = read(path)
    assert [d.record_id for d in documents(out)] == ["1", "3"]
    assert [(r.reason, r.record_id) for r in rejections(out)] == [(RejectReason.MALFORMED_XML, "2")]


def test_oversized_page_skipped(tmp_path):
    huge = wiki_page(2, "Huge", "word " * 2000)
    path = tmp_path / "dump.xml"
    path.write_text(wiki_dump(THREE_PAGES[0], huge, THREE_PAGES[2]), encoding="utf-8")
    out = read(path, SourceConfig(max_page_bytes=4096))
    assert [d.record_id for d in documents(out)] == ["1", "3"]
    [oversized] = rejections(out)
    assert oversized.reason is RejectReason.OVERSIZED and oversized.record_id == "2"
    assert "max_page_bytes=4096" in oversized.detail


class TrickleStream(io.RawIOBase):
    """A real byte stream that returns 1 to 13 bytes per read, like a slow network
    source: every "<page>" and "</page>" marker ends up cut by a read boundary."""

    def __init__(self, data: bytes):
        self._data, self._pos, self._step = data, 0, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        self._step = self._step % 13 + 1
        chunk = self._data[self._pos : self._pos + min(self._step, len(buffer))]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("codec", ["utf-8", "utf-16"])
def test_markers_cut_by_read_boundaries(codec):
    # Larger than the 64 KiB format-detection head, so most of it arrives in trickles.
    pages = [wiki_page(i, f"Page {i}", f"Text of page {i}, ünïcode. " * 20) for i in range(1, 200)]
    data = wiki_dump(*pages).encode(codec)
    assert len(data) > 100_000
    out = list(read_source("dump.xml", lambda: TrickleStream(data), SourceConfig()))
    assert [d.record_id for d in out] == [str(i) for i in range(1, 200)]
    assert out[-1].text.startswith("Text of page 199, ünïcode.")


def test_utf16_markers_only_matched_at_code_unit_boundaries(tmp_path):
    # In UTF-16-LE these characters' bytes read "<\0p\0a\0g\0e\0>\0" from an odd offset.
    lookalike = "\u3c41\u7000\u6100\u6700\u6500\u3e00\u4e00"
    path = tmp_path / "dump.xml"
    path.write_bytes(wiki_dump(wiki_page(1, "Odd", f"Before {lookalike} after."), THREE_PAGES[1]).encode("utf-16"))
    docs = documents(read(path))
    assert [d.record_id for d in docs] == ["1", "2"]
    assert lookalike in docs[0].text


def test_page_bigger_than_a_read_chunk_is_skipped_in_bounded_memory(tmp_path):
    huge = wiki_page(2, "Huge", "word " * 1_000_000)  # 5 MB, several 1 MiB chunks
    path = tmp_path / "dump.xml"
    path.write_text(wiki_dump(THREE_PAGES[0], huge, THREE_PAGES[2]), encoding="utf-8")
    out = read(path, SourceConfig(max_page_bytes=1_000_000))
    assert [d.record_id for d in documents(out)] == ["1", "3"]
    assert [(r.reason, r.record_id) for r in rejections(out)] == [(RejectReason.OVERSIZED, "2")]


def test_utf16_dump_with_bom_reads_like_utf8(tmp_path, wiki_sample_path):
    xml = bz2.open(wiki_sample_path).read().decode("utf-8")
    utf8_path, utf16_path = tmp_path / "dump8.xml", tmp_path / "dump16.xml"
    utf8_path.write_bytes(xml.encode("utf-8"))
    utf16_path.write_bytes(('<?xml version="1.0" encoding="UTF-16"?>\n' + xml).encode("utf-16"))  # BOM + LE
    assert utf16_path.read_bytes()[:2] == b"\xff\xfe"
    assert read(utf16_path) == [
        item.__class__(**{**item.__dict__, "source": str(utf16_path)}) for item in read(utf8_path)
    ]


def test_utf16_big_endian_dump_without_bom(tmp_path):
    path = tmp_path / "dump.xml"
    path.write_bytes(wiki_dump(*THREE_PAGES).encode("utf-16-be"))
    assert [d.text for d in documents(read(path))][0] == "The first article links to the second."


def test_xml_declaration_encoding_honoured(tmp_path):
    path = tmp_path / "dump.xml"
    dump = wiki_dump(wiki_page(1, "Café", "Déjà vu."), declaration='<?xml version="1.0" encoding="ISO-8859-1"?>\n')
    path.write_bytes(dump.encode("latin-1"))
    [doc] = documents(read(path))
    assert (doc.title, doc.text) == ("Café", "Déjà vu.")


def test_wiki_dump_detected_by_content(tmp_path):
    path = tmp_path / "export.dat"
    path.write_bytes(b"\xef\xbb\xbf<?xml version='1.0'?>\n" + wiki_dump(*THREE_PAGES).encode())
    assert len(documents(read(path))) == 3


# --- compression -----------------------------------------------------------------------------


def test_truncated_bz2_yields_readable_part_then_rejection(tmp_path, wiki_sample_path):
    data = open(wiki_sample_path, "rb").read()
    path = tmp_path / "enwiki-pages-articles.xml.bz2"
    path.write_bytes(data[: len(data) // 2])
    out = read(path)
    assert 10 < len(documents(out)) < 97
    assert out[-1].reason is RejectReason.TRUNCATED and "bz2" in out[-1].detail
    assert rejections(out, RejectReason.TRUNCATED) == [out[-1]]


def test_corrupt_bz2_block(tmp_path, wiki_sample_path):
    data = bytearray(open(wiki_sample_path, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bytes(data))
    out = read(path)
    assert len(documents(out)) > 10
    assert out[-1].reason is RejectReason.CORRUPT_COMPRESSION


def test_truncated_gz_detected_by_magic_bytes(tmp_path):
    dump = wiki_dump(*[wiki_page(i, f"Page {i}", f"Article number {i}. " * 50) for i in range(1, 200)])
    compressed = gzip.compress(dump.encode())
    path = tmp_path / "dump.xml"  # gzip bytes under an uncompressed name
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    out = read(path)
    assert 20 < len(documents(out)) < 199
    assert documents(out)[0].text.startswith("Article number 1.")
    assert out[-1].reason in (RejectReason.TRUNCATED, RejectReason.CORRUPT_COMPRESSION)


def test_gz_with_corrupt_data(tmp_path):
    compressed = bytearray(gzip.compress(("line of text\n" * 5000).encode()))
    compressed[30:60] = b"\xff" * 30
    path = tmp_path / "book.txt.gz"
    path.write_bytes(bytes(compressed))
    out = read(path)
    assert out[-1].reason is RejectReason.CORRUPT_COMPRESSION


def test_compressed_text_and_json(tmp_path):
    book = tmp_path / "book.txt.gz"
    book.write_bytes(gzip.compress(b"Hello\nworld.\n"))
    records = tmp_path / "records.jsonl.bz2"
    records.write_bytes(bz2.compress(b'{"text": "Hi."}\n'))
    assert [(d.record_id, d.title, d.text) for d in documents(read(book))] == [("book.txt.gz", "book", "Hello world.")]
    assert [d.text for d in documents(read(records))] == ["Hi."]


# --- plain text ------------------------------------------------------------------------------


def test_book_text_paragraphs(tmp_path):
    path = tmp_path / "moby_dick.txt"
    path.write_text("\ufeffCall me Ishmael. Some years\nago, never mind.\n\n\n  Whenever I find  \nmyself.\n")
    [doc] = read(path)
    assert (doc.record_id, doc.title, doc.format) == ("moby_dick.txt", "moby_dick", SourceFormat.BOOK_TEXT)
    assert doc.text == "Call me Ishmael. Some years ago, never mind.\n\nWhenever I find myself."
    assert not doc.presplit


def test_bert_lines_documents(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\nFirst sentence.\nSecond sentence.\n\n\nOther doc.\n\n")
    out = read(path, SourceConfig(text_format="bert_lines"))
    assert [(d.record_id, d.text, d.presplit) for d in out] == [
        ("corpus.txt:0", "First sentence.\nSecond sentence.", True),
        ("corpus.txt:1", "Other doc.", True),
    ]
    assert all(d.format is SourceFormat.BERT_LINES for d in out)


def test_bert_lines_blank_file_yields_nothing(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n \n\n")
    assert read(path, SourceConfig(text_format="bert_lines")) == []


def test_ten_megabyte_line_is_oversized_and_skipped(tmp_path):
    path = tmp_path / "big.txt"
    with open(path, "wb") as f:
        f.write(b"Before.\n\n")
        f.write(b"x" * 10_000_000 + b"\n")
        f.write(b"\nAfter.\n")
    out = read(path)
    [oversized] = rejections(out)
    assert oversized.reason is RejectReason.OVERSIZED
    assert "line 3" in oversized.detail and "10000001 bytes" in oversized.detail
    [doc] = documents(out)
    assert doc.text == "Before.\n\nAfter."


def test_nul_bytes_removed_and_reported_as_repaired(tmp_path):
    path = tmp_path / "nul.txt"
    path.write_bytes(b"Hel\x00lo\x00 world.\x07\n")
    out = read(path)
    [repair] = rejections(out)
    assert repair.reason is RejectReason.CONTROL_CHARACTERS and repair.action is RejectAction.REPAIRED
    assert repair.detail.startswith("removed 3 ")
    assert documents(out)[0].text == "Hello world."


def test_invalid_utf8_line_rejected_rest_kept(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good one\n\nbad \xc3\x28 here\n\ngood two\n")
    out = read(path, SourceConfig(text_format="bert_lines"))
    [bad] = rejections(out)
    assert bad.reason is RejectReason.INVALID_ENCODING and "line 3, byte 4" in bad.detail
    assert [d.text for d in documents(out)] == ["good one", "good two"]


def test_utf16_text_with_bom(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_bytes("Ünïcode line\r\nsecond\r\n".encode("utf-16"))
    [doc] = read(path)
    assert doc.text == "Ünïcode line second"


# --- JSON lines ------------------------------------------------------------------------------


def test_json_lines(tmp_path):
    path = tmp_path / "wiki.jsonl"
    lines = [
        json.dumps({"id": 12, "title": "Anarchism", "text": "Para one.\nPara two.\n\nPara three."}),
        "",
        json.dumps({"text": "No id."}),
        '{"text": "broken',
        json.dumps({"id": "a", "title": "x"}),
        json.dumps({"id": "b", "text": ["not", "a", "string"]}),
        json.dumps({"id": "c", "text": "   "}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "d", "text": "nul\u0000 inside"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    out = read(path)
    assert [(d.record_id, d.title, d.text) for d in documents(out)] == [
        ("12", "Anarchism", "Para one.\n\nPara two.\n\nPara three."),
        ("line 3", "", "No id."),
        ("d", "", "nul inside"),
    ]
    assert [(r.record_id, r.reason) for r in rejections(out)] == [
        ("line 4", RejectReason.MALFORMED_JSON),
        ("a", RejectReason.MISSING_TEXT),
        ("b", RejectReason.MISSING_TEXT),
        ("c", RejectReason.MISSING_TEXT),
        ("line 8", RejectReason.MALFORMED_JSON),
        ("d", RejectReason.CONTROL_CHARACTERS),
    ]
    assert "line 4, column" in rejections(out)[0].detail


def test_json_fields_are_settings(tmp_path):
    """Exports that keep the text in ``content`` (and the id in ``doc_id``) read with the field names
    set; with the defaults, each record's missing_text detail names the fields it has."""
    path = tmp_path / "export.jsonl"
    records = [
        {"doc_id": "r1", "headline": "Tides", "content": "The tide rises twice a day.", "url": "http://a"},
        {"doc_id": "r2", "headline": "Moon", "content": "The moon pulls the sea.", "url": "http://b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = SourceConfig(text_field="content", id_field="doc_id", title_field="headline")
    assert [(d.record_id, d.title, d.text, d.position) for d in documents(read(path, cfg))] == [
        ("r1", "Tides", "The tide rises twice a day.", 1),
        ("r2", "Moon", "The moon pulls the sea.", 2),
    ]
    rejected = rejections(read(path), RejectReason.MISSING_TEXT)
    assert [(r.record_id, r.position) for r in rejected] == [("line 1", 1), ("line 2", 2)]
    assert "no 'text' field (the record has: doc_id, headline, content, url;" in rejected[0].detail
    assert "source.text_field" in rejected[0].detail


@pytest.mark.parametrize("field", ["text_field", "id_field", "title_field"])
def test_json_field_settings_must_name_a_field(field):
    with pytest.raises(ValueError, match=f"source.{field} must name a field"):
        SourceConfig(**{field: " "})


def test_json_nested_too_deeply_is_malformed(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n" + json.dumps({"text": "Fine."}) + "\n")
    out = read(path)
    assert [r.reason for r in rejections(out)] == [RejectReason.MALFORMED_JSON]
    assert [d.text for d in documents(out)] == ["Fine."]


def test_bert_lines_control_only_line_does_not_split_the_document(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"One.\n\x00\x01\nTwo.\n")
    out = read(path, SourceConfig(text_format="bert_lines"))
    assert [d.text for d in documents(out)] == ["One.\nTwo."]
    assert [r.action for r in rejections(out)] == [RejectAction.REPAIRED]


def test_json_detected_by_content(tmp_path):
    path = tmp_path / "part-00000"
    path.write_text('\n  {"text": "Hi."}\n')
    assert [d.format for d in read(path)] == [SourceFormat.JSON_LINES]


# --- detection and unreadable inputs ---------------------------------------------------------


def test_unknown_binary_file(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    [rejection] = read(path)
    assert rejection.reason is RejectReason.UNKNOWN_FORMAT


def _records_table():
    import pyarrow as pa

    return pa.table({"id": ["a", "b"], "text": ["The tide rises twice a day.", "The moon pulls the sea."]})


def _write_feather(path):
    import pyarrow.feather as feather

    feather.write_feather(_records_table(), path)


def _write_orc(path):
    import pyarrow.orc as orc

    orc.write_table(_records_table(), str(path))


def _write_xz(path):
    import lzma

    path.write_bytes(lzma.compress(b"The tide rises twice a day.\n" * 50))


def _write_zip(path):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("books/tides.txt", "The tide rises twice a day.\n" * 50)


def _write_epub(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:  # the EPUB layout: "mimetype" first, stored
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("OEBPS/chapter1.xhtml", "<html><body><p>The tide rises.</p></body></html>")


def _write_tar(path, mode="w"):
    import tarfile

    text = path.with_name("tides.txt")
    text.write_text("The tide rises twice a day.\n" * 50)
    with tarfile.open(path, mode) as t:
        t.add(text, arcname="tides.txt")
    text.unlink()


def _write_pdf(path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.text(0.1, 0.5, "The tide rises twice a day.")
    fig.savefig(path, format="pdf")


def _write_sqlite(path):
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("create table docs (id text, text text)")
        db.execute("insert into docs values ('a', 'The tide rises twice a day.')")
    db.close()


def _write_html(path):
    path.write_text("<!DOCTYPE html>\n<html><head><title>Tides</title></head><body><p>The tide.</p></body></html>\n")


@pytest.mark.parametrize(
    "name, write, expected",
    [
        ("corpus.feather", _write_feather, "an Arrow IPC / Feather file, which the job does not read: convert it"),
        ("corpus.orc", _write_orc, "an ORC file, which the job does not read: convert it to JSON lines"),
        ("books.txt.xz", _write_xz, "xz-compressed (.xz), which the job does not read: decompress it first (xz -d"),
        ("books.zip", _write_zip, "a zip archive, which the job does not read: extract it (unzip books.zip)"),
        ("novel.epub", _write_epub, "an EPUB e-book, which the job does not read: convert it to text first (pandoc"),
        ("books.tar", _write_tar, "a tar archive, which the job does not read: extract it (tar -xf books.tar)"),
        ("books.tar.gz", lambda p: _write_tar(p, "w:gz"), "a tar archive (gzip-compressed), which the job"),
        ("paper.pdf", _write_pdf, "a PDF document, which the job does not read: extract its text first (pdftotext"),
        ("corpus.db", _write_sqlite, "an SQLite database, which the job does not read: convert it to JSON lines"),
        ("page.html", _write_html, "an HTML page, which the job does not read: extract its text first"),
    ],
)
def test_formats_the_job_does_not_read_are_named(tmp_path, name, write, expected):
    """Real files from the libraries that write them: the rejection names the format and what to
    do, not the first bytes."""
    path = tmp_path / name
    write(path)
    [rejection] = read(path)
    assert rejection.reason is RejectReason.UNKNOWN_FORMAT
    assert expected in rejection.detail and "first bytes" not in rejection.detail


def test_html_named_as_text_is_read_as_text(tmp_path):
    path = tmp_path / "page.txt"
    _write_html(path)
    assert [d.format for d in read(path)] == [SourceFormat.BOOK_TEXT]


def test_empty_file_without_known_suffix(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert [r.reason for r in read(path)] == [RejectReason.UNKNOWN_FORMAT]


def test_xml_that_is_not_a_dump(tmp_path):
    path = tmp_path / "feed.xml"
    path.write_text("<rss><channel/></rss>")
    assert [r.reason for r in read(path)] == [RejectReason.UNKNOWN_FORMAT]


def test_open_failure_is_unreadable(tmp_path):
    missing = tmp_path / "missing.txt"
    [rejection] = read(missing)
    assert rejection.reason is RejectReason.UNREADABLE and "missing.txt" in rejection.detail


@pytest.mark.parametrize(
    "path, head, expected",
    [
        ("enwiki-20200101-pages-articles1.xml-p1p30303.bz2", b"", SourceFormat.WIKIPEDIA_XML),
        ("x.XML.gz", b"", SourceFormat.WIKIPEDIA_XML),
        ("a.jsonl", b"", SourceFormat.JSON_LINES),
        ("a.ndjson.gz", b"", SourceFormat.JSON_LINES),
        ("a.json", b"", SourceFormat.JSON_LINES),
        ("book.txt", b"", SourceFormat.BOOK_TEXT),
        ("noext", b"<mediawiki xmlns='x'>", SourceFormat.WIKIPEDIA_XML),
        ("noext", b'<?xml version="1.0"?>\n<!-- c -->\n<mediawiki>', SourceFormat.WIKIPEDIA_XML),
        ("noext", '<?xml version="1.0"?><mediawiki>'.encode("utf-16"), SourceFormat.WIKIPEDIA_XML),
        ("noext", b'  {"text": 1}', SourceFormat.JSON_LINES),
        ("noext", "Plain prose, caf\u00e9.".encode()[:-1], SourceFormat.BOOK_TEXT),  # cut mid-character
        ("noext", b"\x00\x01\x02\x03binary", None),
        ("noext", b"", None),
    ],
)
def test_detect_format(path, head, expected):
    assert detect_format(path, head, SourceConfig()) is expected


def test_detect_format_bert_lines_config():
    assert detect_format("corpus.txt", b"", SourceConfig(text_format="bert_lines")) is SourceFormat.BERT_LINES
    assert detect_format("corpus", b"One.\nTwo.\n", SourceConfig(text_format="bert_lines")) is SourceFormat.BERT_LINES
