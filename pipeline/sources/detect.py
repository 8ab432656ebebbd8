"""Which reader an input file needs: by its name, else by its first bytes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pipeline.config import SourceConfig
from pipeline.records import SourceFormat
from pipeline.sources.compression import strip_compression_suffix
from pipeline.sources.encoding import UnknownEncodingError, detect_text_encoding, detect_xml_encoding

# Dump parts are named like enwiki-20200101-pages-articles1.xml-p1p30303.bz2.
_DUMP_NAME = re.compile(r"-pages-(?:articles|meta-current|meta-history)[^/]*\.xml")
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_XML_PROLOGUE = re.compile(r"\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*", re.DOTALL)
# Share of undecodable bytes and control characters above which a head is binary, not text.
_MAX_SUSPICIOUS_SHARE = 0.05
_TO_JSON_LINES = "convert it to JSON lines first (one object per line, the text in a field source.text_field names)"


@dataclass(frozen=True)
class UnreadFormat:
    """A format recognised by its magic bytes that the job does not read, and what to do instead.
    ``what_to_do`` may name the file as {name}."""

    offset: int
    magic: bytes
    name: str
    what_to_do: str


# In order: a more specific entry (EPUB, a zip at heart) before the general one.
UNREAD_FORMATS = (
    UnreadFormat(0, b"\xfd7zXZ\x00", "xz-compressed (.xz)", "decompress it first (xz -d {name})"),
    UnreadFormat(0, b"\x04\x22\x4d\x18", "lz4-compressed (.lz4)", "decompress it first (lz4 -d {name})"),
    UnreadFormat(0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (.7z)", "extract it (7z x {name}) and give the folder"),
    UnreadFormat(
        30,
        b"mimetypeapplication/epub+zip",
        "an EPUB e-book",
        "convert it to text first (pandoc {name} -t plain -o BOOK.txt)",
    ),
    UnreadFormat(
        30, b"[Content_Types].xml", "an Office document (.docx, .xlsx, .pptx)", "save or convert it as plain text first"
    ),
    UnreadFormat(0, b"PK\x03\x04", "a zip archive", "extract it (unzip {name}) and give the folder"),
    UnreadFormat(257, b"ustar", "a tar archive", "extract it (tar -xf {name}) and give the folder"),
    UnreadFormat(0, b"%PDF-", "a PDF document", "extract its text first (pdftotext {name} BOOK.txt)"),
    UnreadFormat(
        0,
        b"PAR1",
        "Parquet without a .parquet name",
        "give it uncompressed, named *.parquet (Parquet compresses its columns itself)",
    ),
    UnreadFormat(0, b"ARROW1", "an Arrow IPC / Feather file", _TO_JSON_LINES),
    UnreadFormat(0, b"ORC", "an ORC file", _TO_JSON_LINES),
    UnreadFormat(0, b"Obj\x01", "an Avro file", _TO_JSON_LINES),
    UnreadFormat(0, b"SQLite format 3\x00", "an SQLite database", _TO_JSON_LINES),
    UnreadFormat(0, b"\x89HDF\r\n\x1a\n", "an HDF5 file", _TO_JSON_LINES),
    UnreadFormat(0, b"\x93NUMPY", "a NumPy array (.npy)", "give the text, not its token ids or vectors"),
    UnreadFormat(
        0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document (.doc, .xls)", "save it as plain text first"
    ),
    UnreadFormat(0, b"{\\rtf", "an RTF document", "save it as plain text first"),
)
_HTML_START = re.compile(rb"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL)
_HTML = UnreadFormat(0, b"", "an HTML page", "extract its text first (e.g. with BeautifulSoup's get_text()) into .txt")


def unread_format(path: str, head: bytes, packing: str = "") -> str | None:
    """What a file is and what to do, when its first bytes are those of a format the job does not
    read: ``xz-compressed (.xz), which the job does not read: decompress it first (xz -d
    a.jsonl.xz)``; None otherwise. Magic bytes win over the name (a .jsonl that is really xz);
    HTML, which is text, only when the name does not say it is text, JSON or XML. ``packing``
    follows the format's name: `` (gzip-compressed)`` for a head the job decompressed."""
    found = next((f for f in UNREAD_FORMATS if head[f.offset : f.offset + len(f.magic)] == f.magic), None)
    name = os.path.basename(strip_compression_suffix(path)).lower()
    if found is None and _HTML_START.match(head[:1024]) and _format_from_name(name) is None:
        found = _HTML
    if found is None:
        return None
    what_to_do = found.what_to_do.format(name=os.path.basename(path) or path)
    return f"{found.name}{packing}, which the job does not read: {what_to_do}"


def detect_format(path: str, head: bytes, cfg: SourceConfig) -> SourceFormat | None:
    """The format of one input file, or None when it is neither wiki XML, JSON lines nor text.

    ``head`` is the start of the decompressed content (a few KiB suffice). The
    name decides when it has a known suffix (after removing .bz2/.gz/.zst); otherwise
    the content: ``<mediawiki`` root -> wiki XML, a leading ``{`` -> JSON lines,
    decodable text without binary control bytes -> text.
    """
    name = os.path.basename(strip_compression_suffix(path)).lower()
    by_name = _format_from_name(name)
    if by_name is SourceFormat.BOOK_TEXT:
        return _text_format(cfg)
    return by_name or _format_from_content(head, cfg)


def _format_from_name(name: str) -> SourceFormat | None:
    """By a lowercased base name without compression suffix; BOOK_TEXT stands for any .txt."""
    if name.endswith(".xml") or _DUMP_NAME.search(name):
        return SourceFormat.WIKIPEDIA_XML
    if name.endswith(_JSON_SUFFIXES):
        return SourceFormat.JSON_LINES
    if name.endswith(".txt"):
        return SourceFormat.BOOK_TEXT
    return None


def _text_format(cfg: SourceConfig) -> SourceFormat:
    return SourceFormat.BERT_LINES if cfg.text_format == "bert_lines" else SourceFormat.BOOK_TEXT


def _format_from_content(head: bytes, cfg: SourceConfig) -> SourceFormat | None:
    if not head:
        return None
    if _starts_with_mediawiki_root(head):
        return SourceFormat.WIKIPEDIA_XML
    text = _decode_head(head)
    if _looks_binary(text):
        return None
    if text.lstrip().startswith("{"):
        return SourceFormat.JSON_LINES
    return _text_format(cfg)


def _starts_with_mediawiki_root(head: bytes) -> bool:
    try:
        encoding = detect_xml_encoding(head)
    except UnknownEncodingError:
        return False
    text = head[encoding.bom_bytes :].decode(encoding.codec, errors="replace")
    prologue = _XML_PROLOGUE.match(text)
    return text.startswith("<mediawiki", prologue.end())


def _decode_head(head: bytes) -> str:
    encoding = detect_text_encoding(head)
    return head[encoding.bom_bytes :].decode(encoding.codec, errors="replace")


def _looks_binary(text: str) -> bool:
    """Binary data decodes to many replacement and control characters; text with
    a few bad bytes (read later line by line, rejecting those lines) does not."""
    suspicious = sum(1 for c in text if (c < " " and c not in "\n\r\t\f") or c == "\ufffd")
    return suspicious > _MAX_SUSPICIOUS_SHARE * len(text)
