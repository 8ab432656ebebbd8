"""Which text encoding a stream uses, from its first bytes (BOM, XML declaration)."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

# Longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Without a BOM, "<" in a wide encoding shows as "<" plus zero bytes (XML 1.0 appendix F).
_WIDE_LESS_THAN = (
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
)
_XML_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


@dataclass(frozen=True)
class Encoding:
    codec: str  # Python codec name without BOM handling ("utf-16-le", never "utf-16")
    bom_bytes: int  # length of the byte-order mark at the start of the stream


class UnknownEncodingError(ValueError):
    """The XML declaration names an encoding Python does not know."""


def detect_bom(head: bytes) -> Encoding | None:
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return Encoding(codec, len(bom))
    return None


def detect_text_encoding(head: bytes) -> Encoding:
    """Plain text and JSON lines: a BOM decides, else UTF-8."""
    return detect_bom(head) or Encoding("utf-8", 0)


def detect_xml_encoding(head: bytes) -> Encoding:
    """BOM first, then a wide-encoded "<", then ``<?xml ... encoding="..."?>``, else UTF-8.

    Raises UnknownEncodingError for a declared encoding Python has no codec for.
    """
    bom = detect_bom(head)
    if bom is not None:
        return bom
    for prefix, codec in _WIDE_LESS_THAN:
        if head.startswith(prefix):
            return Encoding(codec, 0)
    declared = _XML_DECLARED_ENCODING.match(head[:1024])
    if declared is None:
        return Encoding("utf-8", 0)
    name = declared.group(1).decode("ascii")
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise UnknownEncodingError(f"XML declaration names unknown encoding {name!r}") from None
    if codec.startswith(("utf-16", "utf-32")):
        # The declaration was readable as ASCII, so the bytes are not UTF-16/32
        # whatever it claims (a converted dump that kept its old declaration).
        return Encoding("utf-8", 0)
    return Encoding(codec, 0)
