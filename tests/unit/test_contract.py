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
        out.append(
            contract.ExampleColumns.of_example(
                ids, int(rng.integers(2, length)), int(rng.integers(0, 2)), pos, ids[pos], i, 10 * i, 10 * i + 1
            )
        )
    return out


@pytest.mark.parametrize("objective,masking", [("nsp", "static"), ("sop", "dynamic"), ("none", "static")])
def test_round_trip(tmp_path, objective, masking):
    schema = contract.example_schema(30522, objective, masking)
    exs = examples()
    path = tmp_path / "part-00000-of-00001.arrow"
    path.write_bytes(
        arrow_file_bytes(
            [
                contract.to_record_batch(contract.ExampleColumns.concat(exs[:20]), schema),
                contract.to_record_batch(contract.ExampleColumns.concat(exs[20:]), schema),
            ],
            schema,
        )
    )
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
        assert cols.input_ids[cols.offsets[e] : cols.offsets[e + 1]].tolist() == ex.input_ids.tolist()
        lo, hi = cols.masked_offsets[e], cols.masked_offsets[e + 1]
        assert cols.masked_lm_positions[lo:hi].tolist() == ex.masked_lm_positions.tolist()


def job_manifest(**changes):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "##s", "é"]
    parts = dict(
        vocab=vocab,
        vocab_sha256="ab" * 32,
        lowercase=True,
        strip_accents=False,
        casing_reason="vocabulary trained by the job with lowercase=true",
        max_seq_length=128,
        objective="sop",
        masking=contract.MaskingSpec("static", 0.15, 20, True, 5),
        seed=7,
        shards=[
            contract.ShardInfo("train/part-00000-of-00002.arrow", "train", 10, 300, "cd" * 32, 4096),
            contract.ShardInfo("train/part-00001-of-00002.arrow", "train", 12, 320, "ef" * 32, 4200),
            contract.ShardInfo("eval/part-00000-of-00001.arrow", "eval", 2, 40, "01" * 32, 900),
        ],
        statistics={"examples": {"train": 22, "eval": 2}, "files_read": 1},
        config={"seed": 7, "tokenizer": {"vocab_size": 8}},
    )
    parts.update(changes)
    return parts, contract.ShardManifest.from_job(**parts)


def test_manifest_from_job_fills_in_the_contract_and_round_trips_through_json(tmp_path):
    parts, manifest = job_manifest()
    assert (manifest.schema_version, manifest.vocab_file) == (contract.SCHEMA_VERSION, contract.VOCAB_FILE)
    assert manifest.vocab_size == len(parts["vocab"])
    assert manifest.special_tokens == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert (manifest.lowercase, manifest.strip_accents, manifest.strips_accents) == (True, False, False)
    assert [s.split for s in manifest.shards_of("train")] == ["train", "train"]
    (tmp_path / contract.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    back = contract.read_manifest(str(tmp_path))
    assert back == manifest
    assert back.to_json() == manifest.to_json()


def test_manifest_from_job_refuses_a_vocabulary_without_the_special_tokens():
    with pytest.raises(contract.ContractError, match=r"\[MASK\]"):
        job_manifest(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the"])
