"""Unicode and whitespace normalisation of document text. Pure Python, no I/O.

Every reader passes its documents through :func:`clean_text` so that later
stages see one canonical form: NFC, no control characters, single spaces,
paragraphs separated by exactly one blank line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Characters that never belong in prose and are counted when removed: C0/C1
# controls other than the whitespace ones handled below, the noncharacters
# U+FFFE/U+FFFF, and surrogate code points (a Python str holds them only unpaired,
# e.g. from a JSON "\ud800" escape or a surrogatepass decode).
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff\ud800-\udfff]")

_LINE_BREAKS = {
    "\r": "\n",
    "\x0b": "\n",  # vertical tab
    "\x0c": "\n",  # form feed: a page break in scanned books
    "\x85": "\n",  # NEXT LINE
    "\u2028": "\n",  # LINE SEPARATOR
    "\u2029": "\n\n",  # PARAGRAPH SEPARATOR
}
# Every Unicode space separator (category Zs) plus tab, hardcoded because the
# set is small and stable and scanning all code points at import is slow.
_SPACES = "\t\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
# Invisible format characters that only break tokenisation. ZWJ/ZWNJ (U+200D,
# U+200C) are kept: they change how Indic, Persian and emoji text renders.
_INVISIBLE = "\u00ad\u180e\u200b\u2060\ufeff"

_REPLACEMENTS = {**_LINE_BREAKS, **{c: " " for c in _SPACES}, **{c: "" for c in _INVISIBLE}}
# A regex scan finds the (rare) characters to replace much faster than str.translate walks every one.
_SPECIAL = re.compile("[" + "".join(_REPLACEMENTS) + "]")
_SPACE_RUN = re.compile(" {2,}")
_SPACE_AROUND_NEWLINE = re.compile(" \n ?|\n ")
_BLANK_LINE_RUN = re.compile("\n{3,}")


@dataclass(frozen=True)
class CleanedText:
    text: str
    removed_control_chars: int


def _replacement(match: re.Match) -> str:
    return _REPLACEMENTS[match.group()]


def clean_text(text: str) -> CleanedText:
    """Canonical form of a document's text; idempotent.

    NFC; control characters, U+FFFE/U+FFFF and lone surrogates removed (and
    counted); U+FFFD kept (it marks a decoding repair made upstream); CR, form
    feed and Unicode line separators become newlines; tabs and Unicode spaces
    become one space; soft hyphens and zero-width spaces are removed; lines are
    stripped at both ends; runs of blank lines become one blank line, which is
    the paragraph separator; single newlines inside a paragraph are kept.
    """
    text = _SPECIAL.sub(_replacement, text.replace("\r\n", "\n"))
    text, removed = _CONTROL.subn("", text)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    # The substring tests skip a regex pass over text that has nothing to fix.
    if "  " in text:
        text = _SPACE_RUN.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINE_RUN.sub("\n\n", text)
    return CleanedText(text=text.strip(" \n"), removed_control_chars=removed)
