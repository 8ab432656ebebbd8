"""The file formats of the job's outputs: examples and documents as Arrow, rejects as JSON lines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from pipeline import contract
from pipeline.seeding import mix64
from pipeline.shard_sink import JsonLinesFormat, ShardFormat, arrow_file_bytes, unspill


class ExampleFormat(ShardFormat):
    """Chunks are record batches of examples under the contract's schema (many pools feed one
    shard), or SpilledBatch references to them. The shard is their rows shuffled by a seeded
    hash of ``example_id``, written ``rows_per_batch`` rows per record batch."""

    suffix = contract.SHARD_SUFFIX

    def __init__(self, schema: pa.Schema, rows_per_batch: int, seed: int):
        self.schema, self.rows_per_batch, self.seed = schema, rows_per_batch, seed

    def encode(self, chunks):
        table = pa.Table.from_batches(unspill(chunks), schema=self.schema)
        ids = table.column(contract.EXAMPLE_ID).to_numpy()
        table = table.take(np.argsort(mix64(ids, self.seed), kind="stable")).combine_chunks()
        tokens = int(pa.compute.sum(pa.compute.list_value_length(table.column(contract.INPUT_IDS))).as_py() or 0)
        batches = table.to_batches(max_chunksize=self.rows_per_batch)
        return arrow_file_bytes(batches, self.schema), table.num_rows, tokens


@dataclass(frozen=True)
class DocumentRecord:
    """Provenance of a kept document: doc_id (the id in doc_id_a/doc_id_b) back to its source."""

    doc_id: int
    split: str
    source: str
    record_id: str
    title: str
    sentences: int
    tokens: int
    format: str = ""  # how its source was read (a SourceFormat value: book_text, json_lines...)
    position: int = 0  # where in its source it starts, for rejects in input order; not in the table
    language: str = ""  # identified language (filters.languages set), else ""
    language_score: float | None = None  # its probability under the language model; null when not identified


DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.int64()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("record_id", pa.string()),
        ("title", pa.string()),
        ("sentences", pa.int32()),
        ("tokens", pa.int32()),
        ("format", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
    ],
    metadata={contract.SCHEMA_METADATA_KEY: str(contract.SCHEMA_VERSION).encode()},
)


class DocumentFormat(ShardFormat):
    suffix = contract.SHARD_SUFFIX

    def encode(self, chunks):
        records = sorted(chunks, key=lambda r: r.doc_id)
        columns = {name: [getattr(r, name) for r in records] for name in DOCUMENT_SCHEMA.names}
        batch = pa.RecordBatch.from_pydict(columns, schema=DOCUMENT_SCHEMA)
        return arrow_file_bytes([batch], DOCUMENT_SCHEMA), len(records), sum(r.tokens for r in records)


__all__ = ["ExampleFormat", "DocumentFormat", "DocumentRecord", "JsonLinesFormat", "DOCUMENT_SCHEMA"]
