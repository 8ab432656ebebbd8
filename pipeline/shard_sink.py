"""Deterministic sharded writes with Beam's file-sink discipline: temporary files, then finalize.

Beam's own file sinks give records to shards at random and in bundle order; shards here must be
byte-identical for the same inputs and seed, so this sink assigns each record to a shard by a hash
of its key, orders each shard by a seeded hash (a shuffle), and writes it as one temporary file.
Only ``finalize`` (a single step that runs after every shard is written) renames temporaries to
``<name>/part-00000-of-00016<suffix>`` and writes the manifest last, so a crashed or retried job
never exposes a half-written shard, and a directory with a manifest is always complete.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import math
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipeline import contract
from pipeline.seeding import derive_seed, unit_interval


@dataclass(frozen=True)
class WrittenShard:
    name: str  # "train", "eval", "documents", "rejects"
    index: int
    num_shards: int
    temp_path: str
    rows: int
    tokens: int
    sha256: str
    bytes: int

    def final_relpath(self, suffix: str) -> str:
        return f"{self.name}/part-{self.index:05d}-of-{self.num_shards:05d}{suffix}"


class ShardFormat(abc.ABC):
    """How one kind of record is keyed, ordered, sized and encoded into a file."""

    suffix: str

    @abc.abstractmethod
    def key(self, record) -> int:
        """A stable integer identity of the record (decides its shard)."""

    def order(self, record) -> Any:
        return self.key(record)

    def size(self, record) -> int:
        """What ``target_per_shard`` is measured in (rows by default)."""
        return 1

    @abc.abstractmethod
    def encode(self, records: Sequence) -> tuple[bytes, int]:
        """File bytes and the token count of the records."""


def num_shards_for(total_size: int, target_per_shard: int, fixed: int | None) -> int:
    return fixed if fixed else max(1, math.ceil(total_size / target_per_shard))


class WriteShardedFiles(beam.PTransform):
    """(name, record) -> WrittenShard per non-empty shard, written to ``temp_dir``.

    ``target_per_shard`` / ``fixed_shards`` give each name its shard count from the total size of
    its records; shards are chosen by ``derive_seed(seed, key)`` so they balance statistically.
    """

    def __init__(self, fmt: ShardFormat, temp_dir: str, seed: int, target_per_shard: int,
                 fixed_shards: int | None = None):
        super().__init__()
        self.fmt, self.temp_dir, self.seed = fmt, temp_dir, seed
        self.target, self.fixed = target_per_shard, fixed_shards

    def expand(self, named_records):
        fmt, seed, target, fixed = self.fmt, self.seed, self.target, self.fixed
        shard_counts = (
            named_records
            | "SizeOf" >> beam.Map(lambda nr: (nr[0], fmt.size(nr[1])))
            | "TotalSize" >> beam.CombinePerKey(sum)
            | "ToShardCount" >> beam.Map(lambda kv: (kv[0], num_shards_for(kv[1], target, fixed)))
            | "ToDict" >> beam.combiners.ToDict())

        def assign(nr, counts):
            name, record = nr
            n = counts[name]
            return (name, int(unit_interval("shard", seed, fmt.key(record)) * n)), record

        return (
            named_records
            | "AssignShard" >> beam.Map(assign, counts=beam.pvalue.AsSingleton(shard_counts))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteTemp" >> beam.ParDo(_WriteTempShard(fmt, self.temp_dir, seed),
                                        counts=beam.pvalue.AsSingleton(shard_counts)))


class _WriteTempShard(beam.DoFn):
    def __init__(self, fmt: ShardFormat, temp_dir: str, seed: int):
        self.fmt, self.temp_dir, self.seed = fmt, temp_dir, seed

    def process(self, element, counts):
        (name, index), records = element
        # Order by a seeded hash of the key: a deterministic shuffle, whatever order records came in.
        records = sorted(records, key=lambda r: (derive_seed("order", self.seed, self.fmt.key(r)), self.fmt.order(r)))
        yield write_temp_shard(self.fmt, self.temp_dir, name, index, counts[name], records)


def write_temp_shard(fmt: ShardFormat, temp_dir: str, name: str, index: int, num_shards: int,
                     records: Sequence) -> WrittenShard:
    data, tokens = fmt.encode(records)
    # A unique name per attempt: a retried bundle never collides with (or half-overwrites) another.
    path = posixpath.join(temp_dir, f"{name}-{index:05d}-of-{num_shards:05d}-{uuid.uuid4().hex}{fmt.suffix}")
    with FileSystems.create(path) as f:
        f.write(data)
    return WrittenShard(name, index, num_shards, path, len(records), tokens,
                        hashlib.sha256(data).hexdigest(), len(data))


def complete_shards(fmt: ShardFormat, temp_dir: str, written: Sequence[WrittenShard],
                    names: Sequence[str]) -> list[WrittenShard]:
    """Every shard index of every name, writing empty shards where no record landed (so a
    reader always sees part-i-of-n for every i), sorted by (name, index)."""
    by_key = {(w.name, w.index): w for w in written}
    counts = {w.name: w.num_shards for w in written}
    for name in names:
        counts.setdefault(name, 1)
    out = []
    for name, n in sorted(counts.items()):
        for i in range(n):
            out.append(by_key.get((name, i)) or write_temp_shard(fmt, temp_dir, name, i, n, []))
    return out


def ensure_dir(path: str) -> None:
    if not FileSystems.exists(path):
        try:
            FileSystems.mkdirs(path)
        except IOError:
            if not FileSystems.exists(path):  # created by someone else in between is fine
                raise


def commit(shards: Sequence[WrittenShard], output_dir: str, suffix: str) -> list[contract.ShardInfo]:
    """Rename temporaries to their final names; returns their ShardInfo records."""
    for d in sorted({s.name for s in shards}):
        ensure_dir(posixpath.join(output_dir, d))
    srcs = [s.temp_path for s in shards]
    dsts = [posixpath.join(output_dir, s.final_relpath(suffix)) for s in shards]
    if srcs:
        FileSystems.rename(srcs, dsts)
    return [contract.ShardInfo(file=s.final_relpath(suffix), split=s.name, rows=s.rows, tokens=s.tokens,
                               sha256=s.sha256, bytes=s.bytes) for s in shards]


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))


def arrow_file_bytes(batches: Sequence[pa.RecordBatch], schema: pa.Schema) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for b in batches:
            writer.write_batch(b)
    return sink.getvalue().to_pybytes()


class JsonLinesFormat(ShardFormat):
    """Records are JSON-serialisable dicts (rejects)."""

    suffix = ".jsonl"

    def key(self, record) -> int:
        return derive_seed(json.dumps(record, sort_keys=True))

    def order(self, record):
        return json.dumps(record, sort_keys=True)

    def encode(self, records):
        buf = io.StringIO()
        for r in records:
            buf.write(json.dumps(r, sort_keys=True, ensure_ascii=False))
            buf.write("\n")
        return buf.getvalue().encode("utf-8"), 0
