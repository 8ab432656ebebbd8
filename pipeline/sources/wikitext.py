"""Wikitext -> plain prose paragraphs, as BERT's Wikipedia extraction kept them.

We run mwparserfromhell's C tokenizer and walk its flat token stream with a
small stack machine instead of calling ``mwparserfromhell.parse()``: the
Python tree builder behind ``parse()`` is about 4x slower than the tokenizer
alone, and we need none of the tree, only "which text is visible".

The tokenizer hands back a well-formed stream (every open token has its close
token; markup it cannot match, like a lone ``}}``, comes back as plain text),
so the walker pushes one frame per open token and pops it on the matching
close. A frame collects the text of its children and, when it closes, decides
what it contributes to its parent: nothing (templates, refs, tables, files...),
its visible text (link labels, ``<b>``...), or a paragraph break (headings).
A final line pass turns the flat text into paragraphs and drops list lines.
"""

from __future__ import annotations

import html
import re

from mwparserfromhell.parser import CTokenizer as _Tokenizer  # None if the C extension is missing
from mwparserfromhell.parser import ParserError, tokens

if _Tokenizer is None:  # pragma: no cover - the wheel ships the extension
    from mwparserfromhell.parser.tokenizer import Tokenizer as _Tokenizer

# Noncharacters (never valid in interchange text) mark list items in the flat
# text so the line pass can find them; any in the input are removed first.
_LIST_ITEM = "\ufdd0"
_MARKERS = {ord(_LIST_ITEM): None}

_DROPPED_SECTIONS = frozenset(
    {
        "see also",
        "references",
        "external links",
        "further reading",
        "notes",
        "bibliography",
        "sources",
        "citations",
        "footnotes",
        "notes and references",
        "references and notes",
    }
)

# Tags whose whole content is not prose.
_DROPPED_TAGS = frozenset(
    {
        "ref",
        "references",
        "gallery",
        "math",
        "chem",
        "ce",
        "code",
        "pre",
        "syntaxhighlight",
        "source",
        "timeline",
        "imagemap",
        "score",
        "table",
        "graph",
        "hiero",
        "mapframe",
        "maplink",
        "inputbox",
        "categorytree",
        "templatedata",
        "templatestyles",
        "includeonly",
        "indicator",
        "style",
        "script",
    }
)
_BLOCK_TAGS = frozenset({"p", "hr", "div", "blockquote", "center", "ul", "ol", "dl", "li"})
_LIST_MARKUP = frozenset({"*", "#", ";", ":"})

_HIDDEN_LINK_NAMESPACES = ("file:", "image:", "media:", "category:")
# Interlanguage links: [[fr:Foo]], [[:fr:Foo]], [[zh-yue:Foo]], [[simple:Foo]].
_INTERLANGUAGE = re.compile(r"\s*:?\s*(?:[a-z]{2,3}(?:-[a-z]+)*|simple)\s*:")

_PIPE_TRICK_SUFFIX = re.compile(r"\s*\(.*?\)\s*$|,.*$")
_QUOTE_MARKUP = re.compile(r"'{2,}")
_BEHAVIOUR_SWITCH = re.compile(r"__[A-Z]+__")
# Tags the tokenizer left as text because they are unclosed (``<ref name=x>``
# without ``</ref>``, a stray ``</div>``): remove the tag itself, keep the rest.
_STRAY_TAG = re.compile(
    r"</?(?:ref|references|span|div|b|i|u|s|small|big|sup|sub|center|font|br|p|blockquote|"
    r"poem|abbr|cite|nowiki|onlyinclude|noinclude|includeonly|gallery|math|table|tr|td|th)\b[^<>]*>",
    re.IGNORECASE,
)
# A line made only of leftover table/template/link punctuation from broken wikitext.
_MARKUP_ONLY_LINE = re.compile(r"[\s{}\[\]|!=\-]*")
# Brackets of unbalanced markup that survived tokenization ("{{", "]]"...).
_LEFTOVER_BRACKETS = re.compile(r"\{\{+|\}\}+|\[\[+|\]\]+|\{\||\|\}")
# Punctuation orphaned by removed templates, as in "Lincoln ({{IPA|...}}; February 12, 1809"
# -> "Lincoln (; February 12, 1809": "(;" -> "(", ";)" -> ")", ",;" -> ",", then "()" goes.
_DANGLING_AFTER_OPEN = re.compile(r"\(\s*(?:[,;:]\s*)+")
_DANGLING_BEFORE_CLOSE = re.compile(r"(?:\s*[,;:])+\s*\)")
_REPEATED_SEPARATOR = re.compile(r"([,;])(?:\s*[,;])+")
_EMPTY_PARENS = re.compile(r"\s*\(\s*\)")
_PUNCT_BEFORE_CLOSE = re.compile(r"[,;:]\s*\)")
_OPEN_CLOSE = re.compile(r"\(\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r" +(?=[,.;:!?)](?:\s|$))")

_T = tokens
_TEXT = _T.Text


class _Frame:
    """Text collected for one open construct, and what it needs to close."""

    __slots__ = ("kind", "parts", "first", "name", "markup", "separated")

    def __init__(self, kind: type, parts: list, markup: str | None = None):
        self.kind = kind  # the open token's type
        self.parts = parts  # where children's text goes now
        # Parts collected before the frame's separator: a link's target, a tag's
        # name, or a tag's body once its closing tag starts. None before that.
        self.first = None
        self.name = ""  # tag name (lower case), known once the opening tag closes
        # A tag's wiki_markup ("*", "{|"...), an external link's brackets flag, a heading's level.
        self.markup = markup
        self.separated = False  # a link separator, or the end of a tag's opening tag, was seen


def wikitext_to_paragraphs(wikitext: str, keep_lists: bool = False) -> list[str]:
    """Visible prose of one page's wikitext: one string per paragraph, whitespace collapsed.

    Never raises on malformed wikitext: whatever the tokenizer could not match
    comes back as text, and bracket debris is scrubbed from the result.
    """
    if _LIST_ITEM in wikitext:
        wikitext = wikitext.translate(_MARKERS)
    wikitext = _drop_invisible_blocks(wikitext)
    try:
        # skip_style_tags: '' and ''' stay plain text (removed by regex below);
        # the tokenizer's style-tag backtracking is slow and fragile on real pages.
        stream = _Tokenizer().tokenize(wikitext, 0, True)
    except ParserError:
        # The tokenizer gave up (an internal error, not malformed input as such):
        # strip the commonest markup with regexes rather than lose the page.
        return _paragraphs(_strip_markup_roughly(wikitext), keep_lists)
    return _paragraphs(_visible_text(stream), keep_lists)


# Comments and references never show text, and they are about a quarter of a real page's
# wikitext (measured on the sample: 5.7M -> 4.1M characters). Cutting them with a C regex
# before the tokenizer sees them saves tokenizing and walking them. Only well-formed ones go:
# a comment with its end, a self-closing <ref .../>, a <ref>...</ref> with no other <ref
# inside (so an unclosed <ref> never swallows the prose up to the next </ref>). Pages with
# literal-text tags (<nowiki>, <pre>...) are left whole: there a "<ref>" may be shown text.
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_REF = re.compile(r"<ref\b[^<>]*/\s*>|<ref\b[^<>]*(?<!/)>(?:(?!<ref\b).)*?</ref\s*>", re.DOTALL | re.IGNORECASE)
_LITERAL_TAGS = re.compile(r"<(?:nowiki|pre|source|syntaxhighlight|code|math|chem|score)\b", re.IGNORECASE)


def _drop_invisible_blocks(wikitext: str) -> str:
    if "<" not in wikitext or _LITERAL_TAGS.search(wikitext):
        return wikitext
    if "<!--" in wikitext:
        wikitext = _COMMENT.sub("", wikitext)
    return _REF.sub("", wikitext)


def _visible_text(stream: list) -> str:
    kept: list[str] = []  # the page's visible text, outside dropped sections
    root = _Frame(None, kept)
    stack = [root]
    out = kept
    skip_level = 0  # level of the dropped section we are in (0: none)

    for tok in stream:
        kind = type(tok)
        if kind is _TEXT:
            out.append(tok["text"])
            continue

        if kind is _T.TemplateOpen or kind is _T.ArgumentOpen or kind is _T.CommentStart:
            frame = _Frame(kind, [])
        elif kind is _T.WikilinkOpen:
            frame = _Frame(kind, [])
        elif kind is _T.ExternalLinkOpen:
            frame = _Frame(kind, [], tok.get("brackets"))
        elif kind is _T.TagOpenOpen:
            frame = _Frame(kind, [], tok.get("wiki_markup"))
        elif kind is _T.HeadingStart:
            frame = _Frame(kind, [], tok.get("level", 2))
        elif kind is _T.HTMLEntityStart:
            frame = _Frame(kind, ["&"])
        elif kind is _T.HTMLEntityNumeric:
            out.append("#")
            continue
        elif kind is _T.HTMLEntityHex:
            out.append(tok.get("char", "x"))
            continue
        elif kind is _T.WikilinkSeparator or kind is _T.ExternalLinkSeparator:
            top = stack[-1]
            if not top.separated:
                top.separated = True
                top.first = top.parts
                top.parts = out = []
            continue
        elif kind is _T.TagAttrStart:
            top = stack[-1]
            if top.first is None:  # end of the tag name; attribute text is never shown
                top.first = top.parts
                top.parts = out = []
            continue
        elif kind is _T.TagCloseOpen:
            top = stack[-1]
            if top.first is None:
                top.first = top.parts
            top.name = "".join(top.first).strip().lower()
            top.parts = out = []  # the tag body
            top.separated = True
            continue
        elif kind is _T.TagOpenClose:
            top = stack[-1]
            top.first = top.parts  # keep the body; the closing tag's name goes nowhere
            top.parts = out = []
            continue
        elif kind in _CLOSERS:
            if len(stack) == 1 or stack[-1].kind is not _CLOSERS[kind]:
                continue  # not produced by a well-formed stream; ignore rather than fail
            frame = stack.pop()
            parent = stack[-1]
            if kind is _T.HeadingEnd:
                title = " ".join("".join(frame.parts).split()).lower()
                level = frame.markup
                if skip_level and level <= skip_level:
                    skip_level = 0
                if not skip_level and title in _DROPPED_SECTIONS:
                    skip_level = level
                if len(stack) == 1:
                    # Inside a dropped section the root writes to a throwaway list.
                    root.parts = [] if skip_level else kept
                out = stack[-1].parts
                out.append("\n\n")
                continue
            out = parent.parts
            contribution = _contribution(frame, kind)
            if contribution:
                out.append(contribution)
            continue
        else:
            # Separators inside templates/arguments, attribute '=' and quotes:
            # their frames never show text, so they need no handling.
            continue

        stack.append(frame)
        out = frame.parts

    # Frames left open cannot happen with a well-formed stream; if they do, keep
    # the text of visible ones rather than lose the rest of the page.
    while len(stack) > 1:
        frame = stack.pop()
        if frame.kind is _T.WikilinkOpen or frame.kind is _T.HeadingStart:
            stack[-1].parts.append("".join(frame.first or []) + "".join(frame.parts))
    return "".join(kept)


_CLOSERS = {
    _T.TemplateClose: _T.TemplateOpen,
    _T.ArgumentClose: _T.ArgumentOpen,
    _T.CommentEnd: _T.CommentStart,
    _T.WikilinkClose: _T.WikilinkOpen,
    _T.ExternalLinkClose: _T.ExternalLinkOpen,
    _T.TagCloseSelfclose: _T.TagOpenOpen,
    _T.TagCloseClose: _T.TagOpenOpen,
    _T.HeadingEnd: _T.HeadingStart,
    _T.HTMLEntityEnd: _T.HTMLEntityStart,
}


def _contribution(frame: _Frame, close_kind: type) -> str:
    """What a closed frame adds to its parent's text."""
    kind = frame.kind
    if kind is _T.WikilinkOpen:
        target = "".join(frame.first if frame.separated else frame.parts)
        lowered = target.lstrip(" :").lower()
        if lowered.startswith(_HIDDEN_LINK_NAMESPACES) or _INTERLANGUAGE.match(target):
            return ""
        if frame.separated:
            label = "".join(frame.parts)
            if label.strip():
                return label
            # Pipe trick: [[Paris, Texas|]] shows "Paris", [[Foo (bar)|]] shows "Foo".
            return _PIPE_TRICK_SUFFIX.sub("", target.split(":", 1)[-1]).strip()
        return target
    if kind is _T.ExternalLinkOpen:
        # [http://x label] shows the label; a bare URL or [http://x] shows no prose.
        return "".join(frame.parts) if frame.separated and frame.markup else ""
    if kind is _T.HTMLEntityStart:
        return html.unescape("".join(frame.parts) + ";")
    if kind is _T.TagOpenOpen:
        markup = frame.markup
        if markup in _LIST_MARKUP:
            return _LIST_ITEM
        if close_kind is _T.TagCloseSelfclose:
            name = frame.name or "".join(frame.first if frame.first is not None else frame.parts).strip().lower()
            if name == "br":
                return " "
            if name == "hr" or name == "p":
                return "\n\n"
            return ""
        name = frame.name
        if name in _DROPPED_TAGS or markup == "{|":
            return ""
        body = "".join(frame.first if frame.first is not None else frame.parts)
        if name in _BLOCK_TAGS:
            return "\n\n" + body + "\n\n"
        return body
    # Templates, template arguments, comments.
    return ""


def _paragraphs(text: str, keep_lists: bool) -> list[str]:
    """Flat visible text -> paragraphs: blank lines, headings and list items end one."""
    text = _QUOTE_MARKUP.sub("", text)
    text = _BEHAVIOUR_SWITCH.sub("", text)
    if "<" in text:
        text = _STRAY_TAG.sub("", text)

    paragraphs: list[str] = []
    current: list[str] = []

    def flush():
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped[0] == _LIST_ITEM:
            flush()
            if keep_lists:
                current.append(stripped.replace(_LIST_ITEM, " "))
                flush()
        elif _MARKUP_ONLY_LINE.fullmatch(stripped):
            continue  # debris like "}}" or "|-" from broken markup; not a paragraph break
        else:
            current.append(stripped)
    flush()

    result = []
    for paragraph in paragraphs:
        if "{" in paragraph or "}" in paragraph or "[" in paragraph or "]" in paragraph or "|" in paragraph:
            paragraph = _LEFTOVER_BRACKETS.sub(" ", paragraph)
        if "(" in paragraph:
            paragraph = _DANGLING_AFTER_OPEN.sub("(", paragraph)
            # The two patterns below start with \s*, so the engine tries them at every
            # position; a search that starts at the punctuation finds the rare hits first.
            if _PUNCT_BEFORE_CLOSE.search(paragraph):
                paragraph = _DANGLING_BEFORE_CLOSE.sub(")", paragraph)
            if _OPEN_CLOSE.search(paragraph):
                paragraph = _EMPTY_PARENS.sub("", paragraph)
        paragraph = _REPEATED_SEPARATOR.sub(r"\1", paragraph)
        paragraph = " ".join(paragraph.replace(_LIST_ITEM, " ").split())
        paragraph = _SPACE_BEFORE_PUNCT.sub("", paragraph)
        if paragraph and not _MARKUP_ONLY_LINE.fullmatch(paragraph):
            result.append(paragraph)
    return result


_INNERMOST_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_REF_OR_COMMENT = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>|<!--.*?-->", re.DOTALL | re.IGNORECASE)
_SIMPLE_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")


def _strip_markup_roughly(wikitext: str) -> str:
    """Regex fallback for the rare text the tokenizer fails on: no files/categories handling."""
    for _ in range(20):  # templates nest; each pass removes the innermost level
        wikitext, removed = _INNERMOST_TEMPLATE.subn("", wikitext)
        if not removed:
            break
    return _SIMPLE_LINK.sub(r"\1", _REF_OR_COMMENT.sub("", wikitext))
