"""Which reader an input file needs: by its name, else by its first bytes."""

from __future__ import annotations

import os
import re

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


def detect_format(path: str, head: bytes, cfg: SourceConfig) -> SourceFormat | None:
    """The format of one input file, or None when it is neither wiki XML, JSON lines nor text.

    ``head`` is the start of the decompressed content (a few KiB suffice). The
    name decides when it has a known suffix (after removing .bz2/.gz); otherwise
    the content: ``<mediawiki`` root -> wiki XML, a leading ``{`` -> JSON lines,
    decodable text without binary control bytes -> text.
    """
    name = os.path.basename(strip_compression_suffix(path)).lower()
    if name.endswith(".xml") or _DUMP_NAME.search(name):
        return SourceFormat.WIKIPEDIA_XML
    if name.endswith(_JSON_SUFFIXES):
        return SourceFormat.JSON_LINES
    if name.endswith(".txt"):
        return _text_format(cfg)
    return _format_from_content(head, cfg)


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
