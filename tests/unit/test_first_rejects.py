"""The rejects quoted when the train split is empty come in input order, whatever the shards'."""

import json

from pipeline.config import SourceConfig
from pipeline.outputs import _reject_key, first_rejects
from pipeline.records import Rejection, RejectReason
from pipeline.shard_sink import JsonLinesFormat, WrittenShard, shard_of
from pipeline.sources import read_source


def test_first_rejects_are_the_first_lines_of_the_first_source(tmp_path):
    """15 records without a text field in each of two files, written to reject shards as the job
    writes them (by a hash, each shard sorted): the first five quoted are lines 1-5 of a.jsonl."""
    rejects = []
    for name in ("b.jsonl", "a.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps({"content": f"Record {i}."}) + "\n" for i in range(15)))
        rejects += [r.to_json_dict() for r in read_source(str(path), lambda p=path: open(p, "rb"), SourceConfig())]
    assert all(isinstance(r, dict) for r in rejects) and len(rejects) == 30
    num_shards = 3
    written = []
    for index in range(num_shards):
        chunk = [r for r in rejects if shard_of(7, _reject_key(r), num_shards) == index]
        data, rows, _ = JsonLinesFormat().encode(chunk)
        temp = tmp_path / f"rejects-{index}.jsonl"
        temp.write_bytes(data)
        written.append(WrittenShard("rejects", index, num_shards, str(temp), rows, 0, "", len(data)))

    first = first_rejects(written)
    assert [(r["source"].rsplit("/", 1)[1], r["record_id"]) for r in first] == [
        ("a.jsonl", f"line {n}") for n in range(1, 6)
    ]
    assert first[0]["detail"].startswith("line 1: no 'text' field (the record has: content;")


def test_a_reject_carries_its_position():
    assert Rejection("a.jsonl", "line 3", RejectReason.MISSING_TEXT, position=3).to_json_dict()["position"] == 3
