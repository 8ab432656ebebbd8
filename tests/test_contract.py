"""Round trip across the shard contract: ExampleColumns -> Arrow IPC file -> readers."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline import contract
from pipeline.shard_sink import arrow_file_bytes


def examples(n=50, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(5, 128))
        ids = rng.integers(0, 30522, length).astype(np.int32)
        pos = np.sort(rng.choice(np.arange(1, length), size=min(3, length - 1), replace=False)).astype(np.int32)
        out.append(contract.ExampleColumns.of_example(ids, int(rng.integers(2, length)), int(rng.integers(0, 2)),
                                                      pos, ids[pos], i, 10 * i, 10 * i + 1))
    return out


@pytest.mark.parametrize("objective,masking", [("nsp", "static"), ("sop", "dynamic"), ("none", "static")])
def test_round_trip(tmp_path, objective, masking):
    schema = contract.example_schema(30522, objective, masking)
    exs = examples()
    path = tmp_path / "part-00000-of-00001.arrow"
    path.write_bytes(arrow_file_bytes([contract.to_record_batch(contract.ExampleColumns.concat(exs[:20]), schema),
                                       contract.to_record_batch(contract.ExampleColumns.concat(exs[20:]), schema)],
                                      schema))
    table = contract.open_shard(str(path))
    assert table.schema.equals(schema)
    assert table.schema.field(contract.INPUT_IDS).type == pa.list_(pa.uint16())
    assert table.num_rows == len(exs)
    for row, ex in zip(table.to_pylist(), exs):
        assert row[contract.INPUT_IDS] == ex.input_ids.tolist()
        assert row[contract.SEGMENT_B_START] == ex.segment_b_start[0]
        assert row[contract.EXAMPLE_ID] == ex.example_id[0]
        assert (contract.NEXT_SENTENCE_LABEL in row) == (objective != "none")
        if masking == "static":
            assert row[contract.MASKED_LM_POSITIONS] == ex.masked_lm_positions.tolist()
            assert row[contract.MASKED_LM_IDS] == ex.masked_lm_ids.tolist()
        else:
            assert contract.MASKED_LM_IDS not in row


def test_large_vocabulary_uses_int32():
    assert contract.token_id_type(65536) == pa.uint16()
    assert contract.token_id_type(65537) == pa.int32()


def test_wrong_schema_version_is_refused(tmp_path):
    schema = contract.example_schema(100, "nsp", "static").with_metadata({contract.SCHEMA_METADATA_KEY: b"99"})
    path = tmp_path / "x.arrow"
    path.write_bytes(arrow_file_bytes([], schema))
    with pytest.raises(contract.ContractError, match="schema version"):
        contract.open_shard(str(path))


def test_token_type_ids():
    assert contract.token_type_ids(3, 6).tolist() == [0, 0, 0, 1, 1, 1]


def test_concat_keeps_each_example_whole():
    exs = examples(7)
    cols = contract.ExampleColumns.concat(exs)
    assert len(cols) == 7 and cols.offsets[-1] == len(cols.input_ids)
    for e, ex in enumerate(exs):
        assert cols.input_ids[cols.offsets[e]:cols.offsets[e + 1]].tolist() == ex.input_ids.tolist()
        lo, hi = cols.masked_offsets[e], cols.masked_offsets[e + 1]
        assert cols.masked_lm_positions[lo:hi].tolist() == ex.masked_lm_positions.tolist()
