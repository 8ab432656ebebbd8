"""zstd inputs (.zst by name or magic bytes) for every text format, on real frames the zstandard
package writes: streamed, and a truncated or corrupt frame rejected after what came before it."""

import io
import json
import random

import pytest
import zstandard

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, RejectReason, SourceFormat
from pipeline.sources import read_source
from pipeline.sources.compression import ZstdFrames

PROSE = "The tide rises twice a day. The moon pulls the sea toward it. "


def read(path, cfg: SourceConfig | None = None) -> list:
    return list(read_source(str(path), lambda: open(path, "rb"), cfg or SourceConfig()))


def same_documents(out: list) -> list[tuple]:
    """What a document is, whatever file it came from (a book's id is its file name, .zst and all)."""
    return [
        (d.record_id.replace(".zst", ""), d.title, d.text, d.format, d.position)
        for d in out
        if isinstance(d, RawDocument)
    ]


def json_lines(n: int) -> bytes:
    return "".join(json.dumps({"id": f"r{i}", "text": f"Record {i}. {PROSE}"}) + "\n" for i in range(n)).encode()


def wiki_dump() -> bytes:
    pages = "".join(
        f"<page><title>Page {i}</title><ns>0</ns><id>{i}</id><revision><text>'''Page {i}''' says: {PROSE}"
        "</text></revision></page>\n"
        for i in range(1, 4)
    )
    return f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n{pages}</mediawiki>\n'.encode()


BOOK = ("Chapter one.\n\n" + PROSE * 3 + "\n" + PROSE + "\n\nChapter two.\n\n" + PROSE).encode()
BERT_LINES = ("First sentence.\nSecond sentence.\n\nAnother document.\nIts end.\n").encode()


@pytest.mark.parametrize(
    "name, content, cfg, source_format",
    [
        ("corpus.jsonl", json_lines(20), SourceConfig(), SourceFormat.JSON_LINES),
        ("enwiki-pages-articles.xml", wiki_dump(), SourceConfig(), SourceFormat.WIKIPEDIA_XML),
        ("book.txt", BOOK, SourceConfig(), SourceFormat.BOOK_TEXT),
        ("sentences.txt", BERT_LINES, SourceConfig(text_format="bert_lines"), SourceFormat.BERT_LINES),
    ],
)
def test_every_text_format_reads_the_same_through_zstd(tmp_path, name, content, cfg, source_format):
    plain = tmp_path / name
    plain.write_bytes(content)
    packed = tmp_path / f"{name}.zst"
    packed.write_bytes(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(content))
    expected = same_documents(read(plain, cfg))
    assert expected and {d[3] for d in expected} == {source_format}
    out = read(packed, cfg)
    assert same_documents(out) == expected and len(out) == len(expected)


def test_zstd_is_known_by_its_magic_bytes_whatever_the_name(tmp_path):
    path = tmp_path / "corpus.jsonl"  # the name says JSON lines, the bytes are zstd
    path.write_bytes(zstandard.ZstdCompressor().compress(json_lines(5)))
    assert [d.record_id for d in read(path)] == [f"r{i}" for i in range(5)]


def test_frames_written_one_after_another_and_skippable_frames_are_all_read(tmp_path):
    """zstd -c a b > ab.zst concatenates frames; a streaming writer may flush a frame per chunk;
    a skippable frame (magic 0x184D2A5?) carries metadata that is not text."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(write_checksum=True).stream_writer(out, closefd=False) as writer:
        for _ in range(3):
            writer.write(json_lines(3))
            writer.flush(zstandard.FLUSH_FRAME)
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    path = tmp_path / "parts.jsonl.zst"
    path.write_bytes(out.getvalue() + skippable + zstandard.ZstdCompressor().compress(json_lines(2)))
    out = read(path)
    assert [d.record_id for d in out] == ["r0", "r1", "r2"] * 3 + ["r0", "r1"]


def test_a_truncated_frame_is_rejected_after_the_lines_before_it(tmp_path):
    content = json_lines(10_000)  # 1 MB: several blocks of at most 128 KiB
    packed = zstandard.ZstdCompressor(level=3).compress(content)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(packed[: len(packed) // 2])
    out = read(path)
    docs, [rejection] = out[:-1], out[-1:]
    assert all(isinstance(d, RawDocument) for d in docs)
    # Everything decompressed before the cut is read: lines r0, r1, ... in order, then the reject.
    assert 0 < len(docs) < 10_000 and [d.record_id for d in docs] == [f"r{i}" for i in range(len(docs))]
    assert rejection.reason is RejectReason.TRUNCATED and rejection.source == str(path)
    assert "zstd stream ends early after" in rejection.detail and "inside a frame" in rejection.detail


def test_a_file_cut_inside_the_frame_header_is_truncated_not_empty(tmp_path):
    path = tmp_path / "cut.txt.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(BOOK)[:6])
    [rejection] = read(path)
    assert rejection.reason is RejectReason.TRUNCATED


def test_a_corrupt_frame_is_rejected_after_the_lines_before_it(tmp_path):
    """The zstd tool writes a checksum per frame: a flipped byte fails it. The frame before the
    damaged one is read whole."""
    good = zstandard.ZstdCompressor(write_checksum=True).compress(json_lines(50))
    damaged = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(json_lines(50)))
    damaged[len(damaged) // 2] ^= 0x40
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(good + bytes(damaged))
    out = read(path)
    assert [d.record_id for d in out[:50]] == [f"r{i}" for i in range(50)]
    rejection = out[-1]
    assert rejection.reason is RejectReason.CORRUPT_COMPRESSION and "zstd data corrupt after" in rejection.detail


class CountingFile(io.RawIOBase):
    """A file that counts the bytes read from it."""

    def __init__(self, data: bytes):
        self.inner, self.bytes_read = io.BytesIO(data), 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self.inner.readinto(buffer)
        self.bytes_read += n
        return n


def test_zstd_is_streamed_not_decompressed_whole(tmp_path):
    """The first document comes out when a small part of a 20 MB stream has been read."""
    noise = random.Random(0)
    content = "".join(json.dumps({"id": f"r{i}", "text": noise.randbytes(50).hex()}) + "\n" for i in range(200_000))
    content = content.encode()
    packed = zstandard.ZstdCompressor(level=1).compress(content)
    raw = CountingFile(packed)
    first = next(iter(read_source("big.jsonl.zst", lambda: raw, SourceConfig())))
    assert first.record_id == "r0" and len(content) > 20_000_000
    assert raw.bytes_read < len(packed) / 4


def test_frame_boundaries_are_found_at_every_cut():
    """Fed any prefix of a real two-frame stream (checksummed, then without a content size),
    ZstdFrames says "between frames" exactly at the frame ends."""
    first = zstandard.ZstdCompressor(write_checksum=True).compress(b"a" * 3000 + bytes(range(256)) * 8)
    second = zstandard.ZstdCompressor(write_content_size=False).compress(PROSE.encode() * 40)
    stream = first + second
    for cut in range(len(stream) + 1):
        frames = ZstdFrames()
        frames.feed(stream[: cut // 2])
        frames.feed(stream[cut // 2 : cut])  # in two pieces: a header may straddle reads
        assert frames.between_frames == (cut in (0, len(first), len(stream))), cut
