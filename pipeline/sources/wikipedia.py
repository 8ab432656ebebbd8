"""MediaWiki XML dumps (``*-pages-articles*.xml[.bz2]``), streamed one <page> at a time.

A dump is many GB, so it is never parsed as one document. We scan the byte
stream for ``<page>`` ... ``</page>`` ranges and parse each range on its own
with ElementTree. A page that does not decode or parse costs that page only:
the scan resynchronises at the next ``<page>``. Memory is bounded by
``max_page_bytes`` plus one read chunk.

In wide encodings (UTF-16/32 dumps exist) the markers are searched for in that
encoding and only at code-unit-aligned offsets.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from pipeline.config import SourceConfig
from pipeline.records import RawDocument, Rejection, RejectReason, SourceFormat, WikitextPage
from pipeline.sources.cleaned import cleaned_document
from pipeline.sources.encoding import Encoding, UnknownEncodingError, detect_xml_encoding
from pipeline.sources.wikitext import wikitext_to_paragraphs

CHUNK_BYTES = 1 << 20
_ID_PREVIEW_BYTES = 4096  # the page <id> comes right after <title> and <ns>

_PAGE_ID = re.compile(r"<id>\s*(\d+)\s*</id>")
_TITLE = re.compile(r"<title>(.*?)</title>", re.DOTALL)
_REDIRECT_TEXT = re.compile(r"\s*#REDIRECT", re.IGNORECASE)
_DISAMBIGUATION_TEMPLATE = re.compile(
    r"\{\{\s*(?:disambiguation|disambig|dab|dbig|hndis|geodis|set index article"
    r"|[\w ]+ disambiguation)\s*(?:\|[^{}]*)?\}\}",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Page:
    offset: int  # decompressed byte offset of "<page>"
    data: bytes  # "<page>" ... "</page>", still encoded


@dataclass(frozen=True)
class _BrokenPage:
    """A page range the scan could not complete; ``head`` holds its first bytes for the id."""

    offset: int
    head: bytes
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class _EndOfDump:
    saw_root_close: bool  # "</mediawiki>" after the last page: the file is complete
    saw_any_page: bool


def read_wikipedia_xml(
    source: str, stream: BinaryIO, cfg: SourceConfig, defer_wikitext: bool = False
) -> Iterator[RawDocument | WikitextPage | Rejection]:
    """Articles of a MediaWiki dump: main namespace, not redirects, not disambiguation pages.

    With ``defer_wikitext`` articles come out as WikitextPage (convert them with
    :func:`wikitext_page_to_documents`), so the conversion can run elsewhere."""
    head = stream.peek(4096)[:4096]
    try:
        encoding = detect_xml_encoding(head)
    except UnknownEncodingError as error:
        yield Rejection(source, "", RejectReason.INVALID_ENCODING, str(error))
        return
    has_root = "<mediawiki".encode(encoding.codec) in head
    stream.read(encoding.bom_bytes)

    for number, event in enumerate(_scan_pages(stream, encoding, cfg.max_page_bytes), start=1):
        if isinstance(event, _Page):
            for item in _read_page(source, event, encoding, number):
                if isinstance(item, WikitextPage) and not defer_wikitext:
                    yield from wikitext_page_to_documents(item, cfg)
                else:
                    yield item
        elif isinstance(event, _BrokenPage):
            page_id, title = _id_and_title(event.head, encoding)
            detail = f"{event.detail}; title {title!r}" if title else event.detail
            yield Rejection(source, page_id, event.reason, detail, position=number)
        elif not event.saw_any_page and not has_root:
            yield Rejection(source, "", RejectReason.UNKNOWN_FORMAT, "no <mediawiki> root and no <page>: not a dump")
        elif not event.saw_root_close:
            last = "the last </page>" if event.saw_any_page else "the <mediawiki> header"
            yield Rejection(source, "", RejectReason.TRUNCATED, f"file ends after {last} without </mediawiki>")


def _scan_pages(
    stream: BinaryIO, encoding: Encoding, max_page_bytes: int
) -> Iterator[_Page | _BrokenPage | _EndOfDump]:
    """Page byte ranges in stream order, then one _EndOfDump."""
    codec = encoding.codec
    page_open, page_close, root_close = ("<page>".encode(codec), "</page>".encode(codec), "</mediawiki>".encode(codec))
    unit = len("<".encode(codec))  # code unit size: matches must start at multiples of it
    tail = len(root_close)  # bytes kept between chunks so a marker cut by a chunk boundary is found

    buffer = bytearray()
    base = encoding.bom_bytes  # stream offset of buffer[0]
    pos = 0  # next search position in buffer
    page_start = -1  # buffer index of the current page's "<page>", -1 between pages
    saw_root_close = saw_any_page = eof = False

    while True:
        if page_start < 0:
            found = _find_aligned(buffer, page_open, pos, len(buffer), unit)
            if not saw_root_close:
                saw_root_close = _find_aligned(buffer, root_close, pos, len(buffer) if found < 0 else found, unit) >= 0
            if found >= 0:
                page_start, pos, saw_any_page = found, found + len(page_open), True
                continue
            if eof:
                yield _EndOfDump(saw_root_close, saw_any_page)
                return
            pos = max(pos, len(buffer) - tail)
            cut = pos - pos % unit
        else:
            close = _find_aligned(buffer, page_close, pos, len(buffer), unit)
            # A "<page>" before this page's "</page>" means the page was cut off
            # (markup never appears unescaped inside page text): resynchronise there.
            reopen = _find_aligned(buffer, page_open, pos, len(buffer) if close < 0 else close, unit)
            if reopen >= 0:
                yield _BrokenPage(
                    base + page_start,
                    bytes(buffer[page_start : min(reopen, page_start + _ID_PREVIEW_BYTES)]),
                    RejectReason.MALFORMED_XML,
                    f"page at byte {base + page_start} has no </page> before the next <page>",
                )
                page_start, pos = reopen, reopen + len(page_open)
                continue
            end = close + len(page_close) if close >= 0 else len(buffer)
            size = end - page_start
            if size > max_page_bytes:
                yield _BrokenPage(
                    base + page_start,
                    bytes(buffer[page_start : page_start + _ID_PREVIEW_BYTES]),
                    RejectReason.OVERSIZED,
                    f"page at byte {base + page_start} is over max_page_bytes={max_page_bytes}"
                    + (f" ({size} bytes)" if close >= 0 else f" ({size} bytes read before giving up)"),
                )
                # Skip the rest of it by searching for the next "<page>" (the
                # buffered part of this page is dropped with the next chunk).
                page_start, pos = -1, (end if close >= 0 else max(pos, len(buffer) - tail))
                continue
            if close >= 0:
                yield _Page(base + page_start, bytes(buffer[page_start:end]))
                page_start, pos = -1, end
                continue
            if eof:
                yield _BrokenPage(
                    base + page_start,
                    bytes(buffer[page_start : page_start + _ID_PREVIEW_BYTES]),
                    RejectReason.TRUNCATED,
                    f"file ends inside the page at byte {base + page_start} ({size} bytes read)",
                )
                return
            pos = max(pos, len(buffer) - tail)
            cut = page_start

        chunk = stream.read1(CHUNK_BYTES)
        if cut:  # drop consumed bytes once per chunk, not once per page
            del buffer[:cut]
            base += cut
            pos -= cut
            if page_start >= 0:
                page_start -= cut
        eof = not chunk
        buffer += chunk


def _find_aligned(buffer: bytearray, marker: bytes, start: int, end: int, unit: int) -> int:
    """Like ``buffer.find`` but only at offsets that are a multiple of ``unit`` (buffer[0] is aligned)."""
    found = buffer.find(marker, start, end)
    while found >= 0 and found % unit:
        found = buffer.find(marker, found + 1, end)
    return found


def _read_page(source: str, page: _Page, encoding: Encoding, number: int) -> Iterator[WikitextPage | Rejection]:
    """``number``: the page's place in the dump, 1 for the first (``Rejection.position``)."""
    try:
        xml_text = page.data.decode(encoding.codec)
    except UnicodeDecodeError as error:
        page_id, _ = _id_and_title(page.data[:_ID_PREVIEW_BYTES], encoding)
        yield Rejection(
            source,
            page_id,
            RejectReason.INVALID_ENCODING,
            f"byte {page.offset + error.start} (page at byte {page.offset}): invalid {encoding.codec}: {error.reason}",
            position=number,
        )
        return
    try:
        element = ET.fromstring(xml_text)
    except ET.ParseError as error:
        page_id, _ = _id_and_title(page.data[:_ID_PREVIEW_BYTES], encoding)
        yield Rejection(
            source, page_id, RejectReason.MALFORMED_XML, f"page at byte {page.offset}: {error}", position=number
        )
        return

    page_id = (element.findtext("id") or "").strip()
    title = element.findtext("title") or ""
    namespace = (element.findtext("ns") or "0").strip()  # dumps before schema 0.5 have no <ns>
    revisions = element.findall("revision")
    wikitext = (revisions[-1].findtext("text") if revisions else None) or ""

    at = number
    if namespace != "0":
        yield Rejection(
            source, page_id, RejectReason.NON_ARTICLE_NAMESPACE, f"namespace {namespace}, title {title!r}", position=at
        )
    elif element.find("redirect") is not None or _REDIRECT_TEXT.match(wikitext):
        yield Rejection(source, page_id, RejectReason.REDIRECT, f"title {title!r}", position=at)
    elif title.rstrip().lower().endswith("(disambiguation)") or _DISAMBIGUATION_TEMPLATE.search(wikitext):
        yield Rejection(source, page_id, RejectReason.DISAMBIGUATION, f"title {title!r}", position=at)
    else:
        yield WikitextPage(source, page_id, title, wikitext, at)


def wikitext_page_to_documents(page: WikitextPage, cfg: SourceConfig) -> Iterator[RawDocument | Rejection]:
    """An article's prose, cleaned (or the EMPTY / CONTROL_CHARACTERS rejections)."""
    paragraphs = wikitext_to_paragraphs(page.wikitext, keep_lists=cfg.keep_lists)
    yield from cleaned_document(
        page.source,
        page.record_id,
        page.title,
        "\n\n".join(paragraphs),
        SourceFormat.WIKIPEDIA_XML,
        position=page.position,
    )


def _id_and_title(head: bytes, encoding: Encoding) -> tuple[str, str]:
    """Page id and title found by regex in a page's first bytes, for pages that did not parse."""
    unit = len("<".encode(encoding.codec))
    text = head[: len(head) - len(head) % unit].decode(encoding.codec, errors="replace")
    page_id = _PAGE_ID.search(text)
    title = _TITLE.search(text)
    return (page_id.group(1) if page_id else ""), (title.group(1) if title else "")
