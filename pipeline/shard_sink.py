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
import json
import math
import uuid
from dataclasses import dataclass
from typing import Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipeline import contract, storage
from pipeline.config import StorageConfig
from pipeline.seeding import unit_interval


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
    """How one kind of output is encoded into a shard file.

    ``encode`` gets the *chunks* grouped into one shard (in any order: Beam gives no order) and
    must order their records by something stable, so the bytes depend only on the content."""

    suffix: str

    @abc.abstractmethod
    def encode(self, chunks: Sequence) -> tuple[bytes, int, int]:
        """(file bytes, rows, tokens) of one shard."""


@dataclass(frozen=True)
class SpilledBatch:
    """A record batch its producer wrote to a temporary Arrow file: only this reference crosses
    the shuffle to the shard writer, which reads the file back. The examples are most of the
    job's output; sent through the shuffle they would also pass through the runner's memory and
    each worker's input queue in one piece (Beam's local runner hands a worker its whole part of
    a grouped input at once), so a worker's memory would follow the corpus. Beam's file sinks
    do the same with their temporary files. Each attempt writes a new name, so a retried bundle
    never overwrites a file an earlier attempt's outputs point to; finalize deletes them all."""

    path: str
    rows: int

    @classmethod
    def write(cls, spill_dir: str, name: str, index: int, batch: pa.RecordBatch) -> "SpilledBatch":
        path = FileSystems.join(spill_dir, f"{name}-{index:05d}-{uuid.uuid4().hex}{contract.SHARD_SUFFIX}")
        storage.write_bytes(path, arrow_file_bytes([batch], batch.schema))
        return cls(path, batch.num_rows)

    def read(self) -> pa.RecordBatch:
        with FileSystems.open(self.path) as f:
            return pa.ipc.open_file(pa.BufferReader(f.read())).get_batch(0)  # written as one batch


def unspill(chunks) -> list:
    """Chunks as given, with every SpilledBatch read back from its file."""
    return [c.read() if isinstance(c, SpilledBatch) else c for c in chunks]


def num_shards_for(total_size: int, target_per_shard: int, fixed: int | None) -> int:
    return fixed if fixed else max(1, math.ceil(total_size / target_per_shard))


def shard_of(seed: int, key: int, num_shards: int) -> int:
    """The shard of a record: a seeded hash of its stable key (balanced in expectation)."""
    return int(unit_interval("shard", seed, key) * num_shards)


@dataclass(frozen=True)
class ShardedRecords:
    """What ``ShardRecords`` gives: the input for ``WriteShards``."""

    records: beam.PCollection  # ((name, shard), record)
    shard_counts: beam.PCollection  # one {name: shards}


class ShardRecords(beam.PTransform):
    """(name, record) -> ShardedRecords, for outputs sharded record by record.

    Each name gets ``ceil(total size / target_per_shard)`` shards (``size_of(record)`` rows by
    default)."""

    def __init__(self, seed: int, key_of, target_per_shard: int, size_of=lambda r: 1):
        super().__init__()
        self.seed, self.key_of, self.target, self.size_of = seed, key_of, target_per_shard, size_of

    def expand(self, named_records) -> ShardedRecords:
        seed, key_of, target, size_of = self.seed, self.key_of, self.target, self.size_of
        counts = (
            named_records
            | "SizeOf" >> beam.Map(lambda nr: (nr[0], size_of(nr[1])))
            | "TotalSize" >> beam.CombinePerKey(sum)
            | "ToShardCount" >> beam.Map(lambda kv: (kv[0], num_shards_for(kv[1], target, None)))
            | "ToDict" >> beam.combiners.ToDict()
        )
        keyed = named_records | "AssignShard" >> beam.Map(
            lambda nr, n: ((nr[0], shard_of(seed, key_of(nr[1]), n[nr[0]])), nr[1]), n=beam.pvalue.AsSingleton(counts)
        )
        return ShardedRecords(records=keyed, shard_counts=counts)


class _WriteTempShard(beam.DoFn):
    """((name, shard), [chunk, ...]) -> the WrittenShard of that shard's temporary file (spilled
    chunks read back from theirs)."""

    def __init__(self, fmt: ShardFormat, temp_dir: str, storage_cfg: StorageConfig | None):
        self.fmt, self.temp_dir, self.storage_cfg = fmt, temp_dir, storage_cfg or StorageConfig()

    def setup(self):
        storage.configure_filesystems(self.storage_cfg)

    def process(self, element, counts: dict):
        (name, index), chunks = element
        yield write_temp_shard(self.fmt, self.temp_dir, name, index, counts[name], list(chunks))


class WriteShards(beam.PTransform):
    """((name, shard), chunk) -> one WrittenShard per non-empty shard, as a temporary file.
    ``storage_cfg``: how the writing workers reach an object store (``pipeline.storage``)."""

    def __init__(self, fmt: ShardFormat, temp_dir: str, shard_counts, storage_cfg: StorageConfig | None = None):
        super().__init__()
        self.fmt, self.temp_dir, self.shard_counts, self.storage_cfg = fmt, temp_dir, shard_counts, storage_cfg

    def expand(self, keyed_chunks):
        return (
            keyed_chunks
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteTemp"
            >> beam.ParDo(
                _WriteTempShard(self.fmt, self.temp_dir, self.storage_cfg),
                counts=beam.pvalue.AsSingleton(self.shard_counts),
            )
        )


def write_temp_shard(
    fmt: ShardFormat, temp_dir: str, name: str, index: int, num_shards: int, chunks: Sequence
) -> WrittenShard:
    data, rows, tokens = fmt.encode(chunks)
    # A unique name per attempt: a retried bundle never collides with (or half-overwrites) another.
    path = FileSystems.join(temp_dir, f"{name}-{index:05d}-of-{num_shards:05d}-{uuid.uuid4().hex}{fmt.suffix}")
    storage.write_bytes(path, data)
    return WrittenShard(name, index, num_shards, path, rows, tokens, hashlib.sha256(data).hexdigest(), len(data))


def complete_shards(
    fmt: ShardFormat, temp_dir: str, written: Sequence[WrittenShard], names: Sequence[str]
) -> list[WrittenShard]:
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
    """Rename temporaries to their final names; returns their ShardInfo records.

    Idempotent, because runners may retry the finalize step: a temporary already renamed by an
    earlier attempt is found at its final name and left there."""
    for d in sorted({s.name for s in shards}):
        ensure_dir(FileSystems.join(output_dir, d))
    pending = [(s.temp_path, FileSystems.join(output_dir, s.final_relpath(suffix))) for s in shards]
    pending = [(src, dst) for src, dst in pending if FileSystems.exists(src) or not FileSystems.exists(dst)]
    if pending:
        FileSystems.rename([src for src, _ in pending], [dst for _, dst in pending])
    return [
        contract.ShardInfo(
            file=s.final_relpath(suffix), split=s.name, rows=s.rows, tokens=s.tokens, sha256=s.sha256, bytes=s.bytes
        )
        for s in shards
    ]


def write_text(path: str, text: str) -> None:
    storage.write_bytes(path, text.encode("utf-8"))


def arrow_file_bytes(batches: Sequence[pa.RecordBatch], schema: pa.Schema) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for b in batches:
            writer.write_batch(b)
    return sink.getvalue().to_pybytes()


class JsonLinesFormat(ShardFormat):
    """Chunks are single JSON-serialisable dicts (rejects), written sorted."""

    suffix = ".jsonl"

    def encode(self, chunks):
        lines = sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in chunks)
        return "".join(line + "\n" for line in lines).encode("utf-8"), len(lines), 0
