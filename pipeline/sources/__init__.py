"""Source readers: one input file in, documents and rejections out. Pure Python, no Beam.

The Beam job calls :func:`read_source` once per file with a function that
opens the file's raw bytes (for Parquet, :func:`plan_parquet` once per file and
:func:`read_parquet_part` once per row group); everything else (decompression, format and
encoding detection, per-record recovery) happens here, and every problem with
the input comes back as a :class:`~pipeline.records.Rejection`, never as an
exception.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO, Callable, Iterator

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, Rejection, RejectReason, SourceFormat, WikitextPage
from pipeline.sources.compression import STREAM_BUFFER_BYTES, Compression, PrefixedStream, open_decompressed, read_head
from pipeline.sources.detect import detect_format, unread_format
from pipeline.sources.jsonl import read_json_lines
from pipeline.sources.parquet import ParquetPart, is_parquet, plan_parquet, read_parquet, read_parquet_part
from pipeline.sources.text import read_bert_lines, read_book_text
from pipeline.sources.wikipedia import read_wikipedia_xml, wikitext_page_to_documents

__all__ = [
    "read_source",
    "detect_format",
    "wikitext_page_to_documents",
    "ParquetPart",
    "is_parquet",
    "plan_parquet",
    "read_parquet_part",
]

_HEAD_BYTES = 64 * 1024

_READERS: dict[SourceFormat, Callable[[str, BinaryIO, SourceConfig], Iterator[RawDocument | Rejection]]] = {
    SourceFormat.WIKIPEDIA_XML: read_wikipedia_xml,
    SourceFormat.BOOK_TEXT: read_book_text,
    SourceFormat.BERT_LINES: read_bert_lines,
    SourceFormat.JSON_LINES: read_json_lines,
}


def read_source(
    path: str, open_binary: Callable[[], BinaryIO], cfg: SourceConfig, defer_wikitext: bool = False
) -> Iterator[RawDocument | WikitextPage | Rejection]:
    """Stream one input file's documents and rejections; never raises for bad input.

    ``defer_wikitext``: Wikipedia articles come out as WikitextPage, for
    :func:`wikitext_page_to_documents` to convert (possibly on another worker).

    ``open_binary()`` returns the raw, possibly compressed bytes (in Beam:
    ``FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)``).
    Compression (.bz2/.gz/.zst) is detected by magic bytes or name, the format by
    name or content. A decompression or read error ends the file with one
    rejection after everything readable before it was yielded.

    A ``.parquet`` file is read row group after row group (``open_binary()`` must then
    give a seekable file, as Beam's file systems do); the job instead spreads its row
    groups over workers (``plan_parquet``, ``read_parquet_part``).
    """
    if is_parquet(path):
        yield from read_parquet(path, open_binary, cfg)
        return
    try:
        raw = open_binary()
    except OSError as error:
        yield Rejection(path, "", RejectReason.UNREADABLE, f"cannot open: {error}")
        return
    try:
        yield from _read_opened(path, raw, cfg, defer_wikitext)
    finally:
        try:
            raw.close()
        except OSError:
            pass  # closing a file we only read cannot lose data


def _read_opened(
    path: str, raw: BinaryIO, cfg: SourceConfig, defer_wikitext: bool
) -> Iterator[RawDocument | WikitextPage | Rejection]:
    compression = Compression.NONE
    served: PrefixedStream | None = None
    try:
        decompressed, compression = open_decompressed(path, raw)
        head, error = read_head(decompressed, _HEAD_BYTES)
        served = PrefixedStream(head, decompressed, error)
        packing = "uncompressed" if compression is Compression.NONE else f"{compression.value}-compressed"
        unread = unread_format(path, head, "" if compression is Compression.NONE else f" ({packing})")
        if unread is not None:
            yield Rejection(path, "", RejectReason.UNKNOWN_FORMAT, unread)
            return
        source_format = detect_format(path, head, cfg)
        if source_format is None and error is not None:
            raise error  # the data broke before the format showed: report the breakage, below
        if source_format is None:
            what = "empty file" if not head else "not wiki XML, JSON lines or text"
            yield Rejection(path, "", RejectReason.UNKNOWN_FORMAT, f"{what} ({packing}, first bytes {head[:16]!r})")
            return
        stream = io.BufferedReader(served, STREAM_BUFFER_BYTES)
        if source_format is SourceFormat.WIKIPEDIA_XML:
            yield from read_wikipedia_xml(path, stream, cfg, defer_wikitext)
        else:
            yield from _READERS[source_format](path, stream, cfg)
    except EOFError as error:
        # Only decompressors raise EOFError: the compressed stream stops mid-block.
        position = f"after {served.bytes_served} decompressed bytes" if served else "in its header"
        yield Rejection(path, "", RejectReason.TRUNCATED, f"{compression.value} stream ends early {position}: {error}")
    except (OSError, zlib.error) as error:
        position = f"after {served.bytes_served} decompressed bytes" if served else "at the start"
        if compression is Compression.NONE:
            yield Rejection(path, "", RejectReason.UNREADABLE, f"read error {position}: {error}")
        else:
            yield Rejection(
                path, "", RejectReason.CORRUPT_COMPRESSION, f"{compression.value} data corrupt {position}: {error}"
            )
