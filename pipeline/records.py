"""What the source readers emit: documents and rejections. No Beam, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SourceFormat(str, enum.Enum):
    """Input formats the job recognises."""

    WIKIPEDIA_XML = "wikipedia_xml"
    BOOK_TEXT = "book_text"  # one book per .txt file
    BERT_LINES = "bert_lines"  # one sentence per line, blank line between documents
    JSON_LINES = "json_lines"  # one JSON object per line with a "text" field
    PARQUET = "parquet"  # one document per row of a .parquet file


class RejectReason(str, enum.Enum):
    """The fixed list of reasons a document or a part of a file is rejected."""

    REDIRECT = "redirect"
    DISAMBIGUATION = "disambiguation"
    NON_ARTICLE_NAMESPACE = "non_article_namespace"
    EMPTY = "empty"  # nothing left after markup removal / cleaning
    TOO_SHORT = "too_short"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"  # dedup=minhash: the detail names the document kept and the similarity
    INVALID_ENCODING = "invalid_encoding"
    MALFORMED_XML = "malformed_xml"
    MALFORMED_JSON = "malformed_json"
    MISSING_TEXT = "missing_text"  # a JSON record without a usable "text" field
    OVERSIZED = "oversized"  # a line, record or page over the configured byte limit
    TRUNCATED = "truncated"  # the file ends inside a record
    CORRUPT_COMPRESSION = "corrupt_compression"
    UNREADABLE = "unreadable"  # the file could not be opened or read at all
    UNKNOWN_FORMAT = "unknown_format"
    CONTROL_CHARACTERS = "control_characters"  # NUL/control bytes removed; document kept
    NO_INSTANCES = "no_instances"  # too few tokens/sentences to form one example
    # Quality and language filters (pipeline.filters, pipeline.language; the config's ``filters``):
    # the detail gives the value measured and the limit.
    FILTER_FEW_WORDS = "filter_few_words"
    FILTER_WORD_LENGTH = "filter_word_length"  # mean word length out of range
    FILTER_SYMBOLS = "filter_symbols"  # too many hashes and ellipses per word
    FILTER_NO_LETTERS = "filter_no_letters"  # too few words with a letter
    FILTER_DIGITS = "filter_digits"  # too much of the text in digits
    FILTER_TERMINAL_PUNCTUATION = "filter_terminal_punctuation"  # too few lines end a sentence
    FILTER_REPEATED_LINES = "filter_repeated_lines"
    FILTER_REPEATED_NGRAMS = "filter_repeated_ngrams"
    FILTER_BOILERPLATE = "filter_boilerplate"  # mostly notice lines, or lorem ipsum
    FILTER_BOILERPLATE_LINES = "filter_boilerplate_lines"  # notice lines removed; document kept
    FILTER_LANGUAGE = "filter_language"  # not one of the configured languages, or below the score


class RejectAction(str, enum.Enum):
    DROPPED = "dropped"  # the part is not in the output
    REPAIRED = "repaired"  # the part is in the output, with the bad bytes removed


@dataclass(frozen=True)
class RawDocument:
    """One document as a reader emits it: markup removed and text cleaned (``clean_text``).

    ``text`` is plain prose: paragraphs separated by a blank line ("\\n\\n"). For ``BERT_LINES`` input each line is one sentence
    and ``presplit`` is True (the job then keeps the user's sentence boundaries).
    """

    source: str  # input file path as given
    record_id: str  # page id, line number, book file name...
    title: str
    text: str
    format: SourceFormat
    presplit: bool = False
    position: int = 0  # where in its source it starts (``Rejection.position``)


@dataclass(frozen=True)
class WikitextPage:
    """An article page whose wikitext is not yet reduced to prose (``read_source(...,
    defer_wikitext=True)``). Reading a dump is one sequential scan per file, while the
    wikitext conversion is most of the reading cost: emitting pages lets the job spread the
    conversion of a single large dump over every worker (``wikitext_page_to_documents`` runs it)."""

    source: str
    record_id: str  # page id
    title: str
    wikitext: str
    position: int = 0  # the page's place in the dump, 1 for the first (``Rejection.position``)


@dataclass(frozen=True)
class Rejection:
    """A counted, reported rejection of a document or of a part of an input file."""

    source: str
    record_id: str  # "" when the part has no id (a byte range in ``detail`` instead)
    reason: RejectReason
    detail: str = ""
    action: RejectAction = RejectAction.DROPPED
    position: int = 0
    """Where in its source the part starts, to list rejects in input order: the line number
    (line formats), the page's place in the dump (wiki XML); 0 for the file as a whole."""

    def to_json_dict(self) -> dict:
        return {
            "source": self.source,
            "record_id": self.record_id,
            "reason": self.reason.value,
            "action": self.action.value,
            "detail": self.detail,
            "position": self.position,
        }
