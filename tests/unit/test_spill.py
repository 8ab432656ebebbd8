"""Chunk files that carry a shuffle's data (pipeline.spill): what is written is read back, whole."""

import numpy as np
import pytest

from pipeline.spill import ChunkWriter, KeyedChunkWriter, Spill, SpilledChunk, read_all


def spill_at(tmp_path, chunk_bytes=1000, pool_chunk_bytes=1000):
    return Spill(str(tmp_path / "spill"), chunk_bytes, pool_chunk_bytes)


def test_chunks_hold_every_element_in_order_and_flush_by_size(tmp_path):
    w = ChunkWriter(spill_at(tmp_path, chunk_bytes=300), "docs")
    items = [("train", i, np.arange(i, dtype=np.int32), "é" * i) for i in range(40)]
    chunks = [c for x in items for c in w.add(x)] + w.flush()
    assert len(chunks) > 3  # flushed on size, not only at the end
    assert all(c.length >= 300 for c in chunks[:-1])
    back = read_all(chunks)
    assert [b[:2] for b in back] == [x[:2] for x in items]
    assert all(np.array_equal(b[2], x[2]) and b[3] == x[3] for b, x in zip(back, items))
    assert sum(c.count for c in chunks) == 40
    assert w.flush() == []  # nothing buffered: no empty file


def test_keyed_chunks_give_each_key_its_own_piece(tmp_path):
    w = KeyedChunkWriter(spill_at(tmp_path, pool_chunk_bytes=10**9), "pools")
    for i in range(30):
        assert w.add(("train", i % 3), i) == []
    flushed = w.flush()
    assert sorted(k for k, _ in flushed) == [("train", 0), ("train", 1), ("train", 2)]
    assert len({c.path for _, c in flushed}) == 1  # one file per flush, a piece per key
    for (_, pool), chunk in flushed:
        assert chunk.read() == [i for i in range(30) if i % 3 == pool]


def test_each_flush_writes_a_new_file(tmp_path):
    """A retried bundle writes new names, never over a file an earlier attempt's references name."""
    spill = spill_at(tmp_path, chunk_bytes=1)
    a = ChunkWriter(spill, "docs").add("x")
    b = ChunkWriter(spill, "docs").add("x")
    assert a[0].path != b[0].path and a[0].read() == b[0].read() == ["x"]


def test_a_cut_short_or_foreign_chunk_is_an_error_not_fewer_elements(tmp_path):
    [chunk] = ChunkWriter(spill_at(tmp_path, chunk_bytes=1), "docs").add(list(range(100)))
    with open(chunk.path, "r+b") as f:
        f.truncate(chunk.length - 5)
    with pytest.raises(IOError, match="cut short"):
        chunk.read()
    [other] = ChunkWriter(spill_at(tmp_path, chunk_bytes=1), "docs").add("y")
    with pytest.raises(IOError, match="expected 2"):
        SpilledChunk(other.path, other.offset, other.length, 2).read()
