"""Readers of sentence(-pair) task files: GLUE's TSV files and fastText-style labelled lines.

Both return ``TextExample`` rows (the file's 1-based line, the one or two texts, the label as
written) and leave label checking to the kind. A row that cannot be read (wrong number of
columns, bytes that are not text in task.encoding, a line without a label prefix) goes to the
``RowPolicy``: an error naming file and line, or a counted skip.

GLUE's files are tab-separated with no quoting at all: a field may hold a lone `"` (SST-2, CoLA,
MNLI's parses), so a line is split on tabs and nothing else (csv's QUOTE_NONE). Quote-aware
parsing would join lines or shift columns without a word. Lines end in "\\n" (a "\\r" before it
is dropped); each line is decoded on its own, so one bad byte costs one row, not the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from training.config import ConfigError
from training.finetune.config import TaskConfig
from training.finetune.kinds import BadInputError, RowPolicy, open_task_file

FASTTEXT_LABEL_PREFIX = "__label__"


@dataclass(frozen=True)
class TextExample:
    """One row of a task file."""

    line: int
    """1-based line number in the file."""
    texts: tuple[str, ...]
    """The text, or the pair of texts."""
    label: str
    """The label as written (a class name, or a number for regression)."""


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes without the line end) of every line; no empty last line."""
    with open_task_file(path) as f:
        data = f.read()
    if not data:
        return
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # the file ends with a newline
    for number, raw in enumerate(pieces, start=1):
        yield number, raw[:-1] if raw.endswith(b"\r") else raw


def _decode(raw: bytes, encoding: str, line: int, policy: RowPolicy) -> Optional[str]:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        policy.reject(
            line, f"not {encoding} text", f"byte 0x{raw[e.start]:02x} at byte {e.start + 1} (set task.encoding)"
        )
        return None


def _column_index(column: str, names: Optional[list[str]], path: str, what: str) -> int:
    """The 0-based index of a configured column: a header name, or an index without a header."""
    if names is not None:
        if column not in names:
            raise ConfigError(f"{what} {column!r} is not a column of {path} (its header: {names})")
        return names.index(column)
    try:
        return int(column)
    except ValueError:
        raise ConfigError(f"{what} {column!r} must be a 0-based column index: task.header is false") from None


def read_tsv(path: str, task: TaskConfig, policy: RowPolicy) -> list[TextExample]:
    """Rows of a GLUE TSV file: task.text_columns and task.label_column of each line.

    With task.header the first line names the columns and each row must have that many (or
    task.num_columns); without, task.num_columns is required and columns are 0-based indices.
    """
    lines = _lines(path)
    names = None
    if task.header:
        first = next(lines, None)
        if first is None:
            raise BadInputError(path, 1, "no header line (task.header is true)")
        try:
            names = first[1].decode(task.encoding).lstrip("\ufeff").split("\t")
        except UnicodeDecodeError:
            raise BadInputError(path, 1, f"the header is not {task.encoding} text") from None
    width = task.num_columns or (len(names) if names is not None else None)
    if width is None:
        raise ConfigError("task.num_columns is required when task.header is false")
    text_at = [_column_index(c, names, path, "task.text_columns entry") for c in task.text_columns]
    label_at = _column_index(task.label_column, names, path, "task.label_column")
    if max(text_at + [label_at]) >= width:
        raise ConfigError(
            f"task columns {list(task.text_columns)} / {task.label_column} exceed the {width} columns of {path}"
        )
    examples = []
    for number, raw in lines:
        text = _decode(raw, task.encoding, number, policy)
        if text is None:
            continue
        fields = text.split("\t")
        if len(fields) != width:
            policy.reject(number, "wrong number of columns", f"{len(fields)}, expected {width}")
            continue
        examples.append(TextExample(number, tuple(fields[i] for i in text_at), fields[label_at].strip()))
    return examples


def read_fasttext(path: str, task: TaskConfig, policy: RowPolicy) -> list[TextExample]:
    """Rows of "__label__<label> <text>" lines (fastText's supervised format; gensim's
    pang_lee_polarity.cor). task.text_columns and task.label_column are not used."""
    examples = []
    for number, raw in _lines(path):
        text = _decode(raw, task.encoding, number, policy)
        if text is None:
            continue
        label, _, sentence = text.strip().partition(" ")
        if not label.startswith(FASTTEXT_LABEL_PREFIX):
            policy.reject(number, f"no {FASTTEXT_LABEL_PREFIX} prefix", repr(text[:40]))
            continue
        examples.append(TextExample(number, (sentence.strip(),), label[len(FASTTEXT_LABEL_PREFIX) :]))
    return examples


READERS: dict[str, Callable[[str, TaskConfig, RowPolicy], list[TextExample]]] = {
    "tsv": read_tsv,
    "fasttext": read_fasttext,
}
"""task.format -> reader, for the sentence(-pair) kinds (classification, regression)."""


def check_format(task: TaskConfig) -> None:
    """ConfigError unless task.format is one READERS knows and its columns are configured."""
    if task.format not in READERS:
        raise ConfigError(f"task.format {task.format!r} is not one the {task.kind} kind reads: {sorted(READERS)}")
    if task.format == "tsv":
        if not 1 <= len(task.text_columns) <= 2:
            raise ConfigError(f"task.text_columns must name one text or a pair, got {list(task.text_columns)}")
        if task.label_column is None:
            raise ConfigError("task.label_column is required for task.format=tsv")
        if not task.header and task.num_columns is None:
            raise ConfigError("task.num_columns is required when task.header is false")
