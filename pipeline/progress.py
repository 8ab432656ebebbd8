"""Progress of a local job, for the person watching it: how much input is read, documents, examples.

    [   1m20s] files 3/12 · input 1.2 GB/4.0 GB (30%) · documents read 12,345 · kept 11,002 · examples 230,118 · 3m05s left reading

Input is measured as stored (the compressed size of a .bz2/.gz: the size known before reading), and
files count when read to their end. The time left extrapolates the reading pace so far
(elapsed / share read); it is the time left reading the inputs, after which the job's last stages
(vocabulary, examples, shards) still run.

The counts are the job's own (``CountingDoFn.count``). On the local runner the workers are
processes on this machine: each one that counts writes its running totals, at most once a
second, to a small JSON file in a directory named by ``PROGRESS_DIR_ENV`` (set only for local
runs, and inherited by the workers), and the launcher sums the files every
``progress_every_s`` seconds and prints one line to stderr. Cluster runners show the same
counters as Beam metrics in their own UI. The figures are live, hence approximate: a retried
bundle counts twice here (the manifest's statistics are exact).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Optional, TextIO

PROGRESS_DIR_ENV = "BERT_PRETRAIN_PROGRESS_DIR"
SHOWN = (("documents_read", "documents read"), ("documents_kept", "kept"), ("examples", "examples"))
"""(statistics prefix, label) of what a progress line shows: a prefix sums its keys ("examples/train"...)."""
INPUT_BYTES = "input_bytes"
"""Progress-only key: bytes of input files read, as stored (``counted_reads``)."""
FILES_DONE = "files_done"
"""Progress-only key: input files read to their end."""
_WRITE_EVERY_S = 1.0


class _WorkerTotals:
    """This process's running totals of the SHOWN counts, flushed to its file now and then."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, f"{os.getpid()}-{threading.get_ident()}.json")
        self.counts: Counter = Counter()
        self.last_write = 0.0
        self.dirty = False
        self.lock = threading.Lock()

    def add(self, prefix: str, n: int) -> None:
        with self.lock:
            self.counts[prefix] += n
            self.dirty = True
            due = time.monotonic() - self.last_write >= _WRITE_EVERY_S
        if due:
            self.write()

    def write(self) -> None:
        with self.lock:
            if not self.dirty:
                return
            self.last_write, self.dirty = time.monotonic(), False
            snapshot = dict(self.counts)
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(snapshot, f)
            os.replace(tmp, self.path)  # the reader never sees half a file
        except OSError:
            pass  # the directory is gone: the job is over


_totals: Optional[_WorkerTotals] = None
_totals_dir: Optional[str] = None


def note(key: str, n: int) -> None:
    """Count ``n`` under a statistics key, if it is shown and this is a local run (cheap otherwise)."""
    global _totals, _totals_dir
    directory = os.environ.get(PROGRESS_DIR_ENV)
    if not directory:
        return
    prefix = key.split("/", 1)[0]
    if prefix not in _SHOWN_PREFIXES:
        return
    if _totals is None or _totals_dir != directory:
        _totals, _totals_dir = _WorkerTotals(directory), directory
    _totals.add(prefix, n)


_SHOWN_PREFIXES = {prefix for prefix, _ in SHOWN} | {INPUT_BYTES, FILES_DONE}


class _CountedReads(io.RawIOBase):
    """A binary stream whose reads are noted under INPUT_BYTES."""

    def __init__(self, inner: BinaryIO):
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        note(INPUT_BYTES, n)
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def counted_reads(stream: BinaryIO) -> BinaryIO:
    """``stream``, its reads noted under INPUT_BYTES in a local run; unchanged otherwise."""
    return _CountedReads(stream) if os.environ.get(PROGRESS_DIR_ENV) else stream


def flush() -> None:
    """Write this process's totals now (at the end of a bundle: a burst of counts may be followed
    by a long quiet stage)."""
    if _totals is not None:
        _totals.write()


def read_totals(directory: str) -> Counter:
    """The SHOWN counts summed over every process's file."""
    total: Counter = Counter()
    for name in os.listdir(directory):
        if name.endswith(".json"):
            try:
                with open(os.path.join(directory, name)) as f:
                    total.update(json.load(f))
            except (OSError, ValueError):
                continue  # replaced or removed meanwhile
    return total


def _clock(seconds: float) -> str:
    """83 -> ``1m23s``; 4000 -> ``1h06m40s``."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _size(n: float) -> str:
    """1_234_567 -> ``1.2 MB`` (decimal units, as file managers and cloud consoles show sizes)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class InputTotals:
    """What the job has to read, known before it starts: input files and their stored bytes."""

    files: int = 0
    bytes: int = 0


def format_line(counts: Counter, seconds: float, inputs: InputTotals = InputTotals()) -> str:
    """One progress line; with ``inputs`` known, files and bytes read of their totals and the time
    left reading (the pace so far extrapolated over the bytes left, or the files left when the
    inputs are empty)."""
    shown = [f"{label} {counts.get(prefix, 0):,}" for prefix, label in SHOWN]
    if inputs.files:
        files, read = min(counts.get(FILES_DONE, 0), inputs.files), counts.get(INPUT_BYTES, 0)
        done = min(read / inputs.bytes, 1.0) if inputs.bytes else files / inputs.files
        if files == inputs.files:
            left = "inputs read"
        elif done > 0:
            left = f"{_clock(seconds * (1 - done) / done)} left reading"
        else:
            left = "? left reading"
        size = f"input {_size(min(read, inputs.bytes))}/{_size(inputs.bytes)} ({done:.0%})"
        shown = [f"files {files:,}/{inputs.files:,}", size, *shown, left]
    return f"[{_clock(seconds):>8}] {' · '.join(shown)}"


class ProgressReporter:
    """While the job runs: a progress line every ``every_s`` seconds (0: none), to ``stream``.

    Use as a context manager around the job; ``env`` holds the variable that the workers must
    inherit (pass it to ``pipeline.runner.worker_environment``). ``inputs``: what the job reads,
    for the share read and the time left."""

    def __init__(self, every_s: float, stream: TextIO = sys.stderr, inputs: InputTotals = InputTotals()):
        self.every_s, self.stream, self.inputs = every_s, stream, inputs
        self.directory: Optional[str] = None
        self.env: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "ProgressReporter":
        if self.every_s > 0:
            self.directory = tempfile.mkdtemp(prefix="bert-pretrain-progress-")
            self.env = {PROGRESS_DIR_ENV: self.directory}
            self._start = time.monotonic()
            self._thread = threading.Thread(target=self._report, name="progress", daemon=True)
            self._thread.start()
        return self

    def _report(self) -> None:
        while not self._stop.wait(self.every_s):
            line = format_line(read_totals(self.directory), time.monotonic() - self._start, self.inputs)
            print(line, file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
