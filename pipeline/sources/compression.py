"""Transparent decompression of an input byte stream (.bz2 / .gz / .zst, by name or magic bytes).

Decompression errors are not caught here: they surface from ``read``/``readline``
of the returned stream, where :func:`pipeline.sources.read_source` turns them
into a rejection after everything readable before them was yielded. Every
decompressor reports the same two ways: a stream that stops mid-block raises
EOFError, corrupt data raises OSError (or zlib.error).
"""

from __future__ import annotations

import bz2
import enum
import gzip
import io
import zlib
from typing import BinaryIO

import zstandard

STREAM_BUFFER_BYTES = 1 << 20


class Compression(str, enum.Enum):
    NONE = "none"
    BZIP2 = "bz2"
    GZIP = "gzip"
    ZSTD = "zstd"


_SUFFIXES = {
    ".bz2": Compression.BZIP2,
    ".bzip2": Compression.BZIP2,
    ".gz": Compression.GZIP,
    ".gzip": Compression.GZIP,
    ".zst": Compression.ZSTD,
    ".zstd": Compression.ZSTD,
}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MAGIC = ((b"BZh", Compression.BZIP2), (b"\x1f\x8b", Compression.GZIP), (ZSTD_MAGIC, Compression.ZSTD))


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
    if compression is Compression.ZSTD:
        return io.BufferedReader(ZstdStream(stream), STREAM_BUFFER_BYTES), compression
    return stream, compression


class ZstdStream(io.RawIOBase):
    """The decompressed bytes of a zstd stream of any number of frames, in bounded memory
    (zstandard's stream reader).

    The stream reader ends quietly when its input stops inside a frame; so the compressed
    bytes are followed on their way in (``ZstdFrames``), and a stream that ends anywhere but
    between two frames raises EOFError once everything before the cut has been served, as
    gzip and bz2 do. Corrupt data (including a checksum that does not match, for frames that
    carry one, as the zstd tool writes them) raises OSError. The reader is given one block
    at a time and returns what each block gives at once (``readinto1``), so an error loses
    nothing decompressed before the bad block."""

    def __init__(self, compressed: BinaryIO):
        self._frames = ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _FrameByFrame(compressed, self._frames), read_across_frames=True, closefd=False
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            n = self._reader.readinto1(buffer)
        except zstandard.ZstdError as error:
            raise OSError(str(error)) from None
        if n == 0 and not self._frames.between_frames:
            raise EOFError(f"the input ends inside a frame, after {self._frames.offset} compressed bytes")
        return n


class _FrameByFrame:
    """Reads ``inner`` one part of the zstd layout at a time (a header, a block), handing
    each to ``frames`` before the decompressor."""

    def __init__(self, inner: BinaryIO, frames: ZstdFrames):
        self._inner, self._frames = inner, frames

    def read(self, size: int) -> bytes:
        data = self._inner.read(self._frames.next_read(size))
        self._frames.feed(data)
        return data


class ZstdFrames:
    """Follows the frame layout of a zstd stream (RFC 8878 section 3.1) as its bytes go by,
    without decompressing: after ``feed`` of every byte so far, ``between_frames`` says
    whether they end exactly where a frame ends (or before the first one).

    Only headers are looked at: 4-byte magic numbers, the frame header's descriptor byte
    (which says how long the rest of the header is and whether a checksum follows the
    last block) and 3-byte block headers (last-block flag, type, size). Block contents,
    skippable frames and checksums are skipped by their sizes. A magic number or block
    type that is not zstd's stops the following: the decompressor reports that data."""

    _SKIPPABLE = b"\x2a\x4d\x18"  # a skippable frame's magic, after its first byte (0x50-0x5F)

    def __init__(self):
        self._header = bytearray()  # the part of the next header seen so far
        self._need = 4  # that header's length
        self._step = self._magic  # what reads it
        self._skip = 0  # bytes to pass over before it
        self._checksum = False  # the current frame ends with a 4-byte checksum
        self._lost = False  # the bytes stopped looking like zstd
        self.offset = 0  # compressed bytes seen

    @property
    def between_frames(self) -> bool:
        return not self._lost and self._step == self._magic and not self._header and not self._skip

    def next_read(self, size: int) -> int:
        """At most ``size``, and no further than the end of the part being read (a header,
        a block's content): a read never spans two blocks."""
        if self._lost:
            return size
        if self._skip:
            return min(size, self._skip)
        return min(size, self._need - len(self._header))

    def feed(self, data: bytes) -> None:
        view, pos = memoryview(data), 0
        self.offset += len(data)
        while pos < len(view) and not self._lost:
            if self._skip:
                n = min(self._skip, len(view) - pos)
                self._skip -= n
                pos += n
                continue
            n = min(self._need - len(self._header), len(view) - pos)
            self._header += view[pos : pos + n]
            pos += n
            if len(self._header) == self._need:
                header = bytes(self._header)
                self._header.clear()
                self._step(header)

    def _expect(self, size: int, step, skip: int = 0) -> None:
        self._need, self._step, self._skip = size, step, skip

    def _magic(self, magic: bytes) -> None:
        if magic == ZSTD_MAGIC:
            self._expect(1, self._descriptor)
        elif magic[1:] == self._SKIPPABLE and 0x50 <= magic[0] <= 0x5F:
            self._expect(4, self._skippable_size)
        else:
            self._lost = True

    def _skippable_size(self, size: bytes) -> None:
        self._expect(4, self._magic, skip=int.from_bytes(size, "little"))

    def _descriptor(self, descriptor: bytes) -> None:
        fhd = descriptor[0]
        single_segment = (fhd >> 5) & 1
        self._checksum = bool((fhd >> 2) & 1)
        dictionary_id = (0, 1, 2, 4)[fhd & 3]
        content_size = (single_segment, 2, 4, 8)[fhd >> 6]
        window = 0 if single_segment else 1
        self._expect(3, self._block, skip=window + dictionary_id + content_size)

    def _block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:  # reserved
            self._lost = True
            return
        content = 1 if kind == 1 else size  # an RLE block stores its byte once
        if last:
            self._expect(4, self._magic, skip=content + (4 if self._checksum else 0))
        else:
            self._expect(3, self._block, skip=content)
