"""Transparent decompression of an input byte stream (.bz2 / .gz, by name or magic bytes).

Decompression errors are not caught here: they surface from ``read``/``readline``
of the returned stream, where :func:`pipeline.sources.read_source` turns them
into a rejection after everything readable before them was yielded.
"""

from __future__ import annotations

import bz2
import enum
import gzip
import io
import zlib
from typing import BinaryIO

STREAM_BUFFER_BYTES = 1 << 20


class Compression(str, enum.Enum):
    NONE = "none"
    BZIP2 = "bz2"
    GZIP = "gzip"


_SUFFIXES = {".bz2": Compression.BZIP2, ".bzip2": Compression.BZIP2, ".gz": Compression.GZIP, ".gzip": Compression.GZIP}
_MAGIC = ((b"BZh", Compression.BZIP2), (b"\x1f\x8b", Compression.GZIP))


def strip_compression_suffix(path: str) -> str:
    """``dump.xml.bz2`` -> ``dump.xml``; other names unchanged."""
    lowered = path.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix):
            return path[: -len(suffix)]
    return path


def detect_compression(path: str, magic: bytes) -> Compression:
    """Magic bytes win over the name (a .gz that is really bzip2 still reads);
    a compressed name without matching magic is trusted so the decompressor
    reports the corruption instead of the bytes being read as text."""
    for prefix, compression in _MAGIC:
        if magic.startswith(prefix):
            return compression
    lowered = path.lower()
    for suffix, compression in _SUFFIXES.items():
        if lowered.endswith(suffix):
            return compression
    return Compression.NONE


class PrefixedStream(io.RawIOBase):
    """Serves ``prefix`` and then the rest of ``inner``: lets us look at the first
    bytes of a stream that cannot seek (and keep a read error for later).

    ``pending_error``, when given, is raised once the prefix is used up: the
    error that cut the prefix short, re-raised where the reader would meet it.
    """

    def __init__(self, prefix: bytes, inner: BinaryIO, pending_error: BaseException | None = None):
        self._prefix = memoryview(prefix)
        self._inner = inner
        self._pending_error = pending_error
        self.bytes_served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
        elif self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        else:
            read = getattr(self._inner, "read1", self._inner.read)
            data = read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.bytes_served += n
        return n


def read_head(stream: BinaryIO, size: int) -> tuple[bytes, BaseException | None]:
    """Up to ``size`` first bytes, and the decompression error that stopped the
    read early (if any), so a short corrupt file can still be detected and read."""
    read = getattr(stream, "read1", stream.read)
    parts, total = [], 0
    try:
        while total < size:
            data = read(size - total)
            if not data:
                break
            parts.append(data)
            total += len(data)
    except (EOFError, OSError, zlib.error) as error:
        return b"".join(parts), error
    return b"".join(parts), None


def open_decompressed(path: str, raw: BinaryIO) -> tuple[BinaryIO, Compression]:
    """The decompressed byte stream of ``raw`` (which is left positioned after its magic bytes)."""
    magic, error = read_head(raw, 4)
    stream = io.BufferedReader(PrefixedStream(magic, raw, error), STREAM_BUFFER_BYTES)
    compression = detect_compression(path, magic)
    if compression is Compression.BZIP2:
        return bz2.BZ2File(stream), compression
    if compression is Compression.GZIP:
        return gzip.GzipFile(fileobj=stream), compression
    return stream, compression
