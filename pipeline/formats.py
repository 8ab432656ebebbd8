"""The file formats of the job's outputs: examples and documents as Arrow, rejects as JSON lines."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipeline import contract
from pipeline.shard_sink import JsonLinesFormat, ShardFormat, arrow_file_bytes


class ExampleFormat(ShardFormat):
    """PretrainingExample rows under the contract's schema, ``rows_per_batch`` per record batch."""

    suffix = contract.SHARD_SUFFIX

    def __init__(self, schema: pa.Schema, rows_per_batch: int):
        self.schema, self.rows_per_batch = schema, rows_per_batch

    def key(self, example) -> int:
        return example.example_id

    def size(self, example) -> int:
        return len(example.input_ids)

    def encode(self, examples):
        n = self.rows_per_batch
        batches = [contract.to_record_batch(examples[i:i + n], self.schema) for i in range(0, len(examples), n)]
        return arrow_file_bytes(batches, self.schema), sum(len(e.input_ids) for e in examples)


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


DOCUMENT_SCHEMA = pa.schema([
    ("doc_id", pa.int64()), ("split", pa.string()), ("source", pa.string()), ("record_id", pa.string()),
    ("title", pa.string()), ("sentences", pa.int32()), ("tokens", pa.int32())],
    metadata={contract.SCHEMA_METADATA_KEY: str(contract.SCHEMA_VERSION).encode()})


class DocumentFormat(ShardFormat):
    suffix = contract.SHARD_SUFFIX

    def key(self, record: DocumentRecord) -> int:
        return record.doc_id

    def encode(self, records):
        columns = {name: [getattr(r, name) for r in records] for name in DOCUMENT_SCHEMA.names}
        batch = pa.RecordBatch.from_pydict(columns, schema=DOCUMENT_SCHEMA)
        return arrow_file_bytes([batch], DOCUMENT_SCHEMA), sum(r.tokens for r in records)


__all__ = ["ExampleFormat", "DocumentFormat", "DocumentRecord", "JsonLinesFormat", "DOCUMENT_SCHEMA"]
