"""Bounded line reading for the line-based formats (plain text, BERT lines, JSON lines).

A line is read with ``readline(limit)``, so a 10 GB line without a newline
never sits in memory: past ``max_line_bytes`` it is reported and skipped in
bounded pieces. Each line is decoded on its own, so one bad byte costs one line.
"""

from __future__ import annotations

import codecs
import io
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from pipeline.records import RejectReason
from pipeline.sources.compression import STREAM_BUFFER_BYTES
from pipeline.sources.encoding import detect_text_encoding

_SKIP_PIECE_BYTES = 1 << 20


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    text: str  # without its line terminator


@dataclass(frozen=True)
class BadLine:
    """A line that could not be read; the format reader turns it into a Rejection."""

    number: int
    reason: RejectReason
    detail: str


def read_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[Line | BadLine]:
    """Lines of a UTF-8 (BOM optional) or BOM-marked UTF-16/32 text stream.

    ``stream`` needs ``peek``, ``read`` and ``readline(limit)`` (an io.BufferedReader).
    """
    encoding = detect_text_encoding(stream.peek(4)[:4])
    stream.read(encoding.bom_bytes)
    if encoding.codec != "utf-8":
        stream = io.BufferedReader(_Utf8Transcoder(stream, encoding.codec), STREAM_BUFFER_BYTES)

    number = 0
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            size = len(line) + _skip_rest_of_line(stream)
            yield BadLine(
                number, RejectReason.OVERSIZED, f"line {number}: {size} bytes, over max_line_bytes={max_line_bytes}"
            )
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield BadLine(
                number,
                RejectReason.INVALID_ENCODING,
                f"line {number}, byte {error.start} of the line: {error.reason}",
            )
            continue
        yield Line(number, text.rstrip("\r\n"))


def _skip_rest_of_line(stream: BinaryIO) -> int:
    skipped = 0
    while True:
        piece = stream.readline(_SKIP_PIECE_BYTES)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


class _Utf8Transcoder(io.RawIOBase):
    """UTF-16/32 bytes in, UTF-8 bytes out, so lines split on b"\\n" like UTF-8 input.

    Undecodable input (a lone surrogate, an odd final byte) is carried through
    as surrogate escapes and comes out as invalid UTF-8, so the line decoder
    rejects exactly the lines that hold it.
    """

    def __init__(self, inner: BinaryIO, codec: str):
        self._inner = inner
        self._decoder = codecs.getincrementaldecoder(codec)(errors="surrogateescape")
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._done:
            data = self._inner.read1(STREAM_BUFFER_BYTES)
            self._done = not data
            text = self._decoder.decode(data, final=self._done)
            self._pending = text.encode("utf-8", errors="surrogatepass")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
