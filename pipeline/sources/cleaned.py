"""The last step of every reader: clean a document's text and emit it, or say why not."""

from __future__ import annotations

from typing import Iterator

from pipeline.cleaning import clean_text
from pipeline.records import RawDocument, RejectAction, Rejection, RejectReason, SourceFormat


def cleaned_document(
    source: str,
    record_id: str,
    title: str,
    text: str,
    source_format: SourceFormat,
    presplit: bool = False,
    position: int = 0,
) -> Iterator[RawDocument | Rejection]:
    """The document with :func:`clean_text` applied; a REPAIRED rejection first if
    control characters were removed; an EMPTY rejection instead if no text is left.

    ``presplit`` text is one sentence per line: a line that cleaning emptied
    must not turn into a paragraph break, so blank lines are squeezed out. ``position``: where
    the document starts in its source (``Rejection.position``).
    """
    cleaned = clean_text(text)
    body = cleaned.text.replace("\n\n", "\n") if presplit else cleaned.text
    if cleaned.removed_control_chars:
        yield Rejection(
            source,
            record_id,
            RejectReason.CONTROL_CHARACTERS,
            detail=f"removed {cleaned.removed_control_chars} control character(s)",
            action=RejectAction.REPAIRED,
            position=position,
        )
    if not body:
        yield Rejection(
            source, record_id, RejectReason.EMPTY, "no text left after markup removal and cleaning", position=position
        )
        return
    yield RawDocument(
        source=source,
        record_id=record_id,
        title=clean_text(title).text,
        text=body,
        format=source_format,
        presplit=presplit,
        position=position,
    )
