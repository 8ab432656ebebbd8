"""The job on corpora as they come: the embedded Wikipedia sample's articles as JSON lines, as
.jsonl.zst and as Parquet files in wikimedia/wikipedia's layout (several row groups each, read as
separate units of work on two worker processes) give the same shards. Bad Parquet rows and files
and a truncated zstd frame are counted rejects, the job keeping everything else."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import IN_MEMORY, run_job
from pipeline.config import SourceConfig
from pipeline.records import RawDocument
from pipeline.run import JobError
from pipeline.sources import read_source
from shards import read_split, shard_hashes

SMALL = ("tokenizer.vocab_size=2000", "masking.dupe_factor=2", "instances.eval_fraction=0.05")
TWO_PROCESSES = ("runner.direct_num_workers=2", "runner.direct_running_mode=multi_processing")


@pytest.fixture(scope="module")
def articles(wiki_sample_path) -> list[dict]:
    """The sample's articles as wikimedia/wikipedia has them: id, url, title, text."""
    docs = [
        d
        for d in read_source(wiki_sample_path, lambda: open(wiki_sample_path, "rb"), SourceConfig())
        if isinstance(d, RawDocument)
    ]
    return [
        {
            "id": d.record_id,
            "url": f"https://en.wikipedia.org/wiki?curid={d.record_id}",
            "title": d.title,
            "text": d.text,
        }
        for d in docs
    ]


def json_lines(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write_parquet(path, records, row_group_size):
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)


@pytest.fixture(scope="module")
def corpus(articles, tmp_path_factory):
    """A folder per form of the same articles: jsonl/, zst/, parquet/."""
    inputs = tmp_path_factory.mktemp("corpus")
    (inputs / "jsonl").mkdir()
    (inputs / "jsonl" / "wiki.jsonl").write_bytes(json_lines(articles))
    (inputs / "zst").mkdir()
    (inputs / "zst" / "wiki.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor(level=3, write_checksum=True).compress(json_lines(articles))
    )
    (inputs / "parquet").mkdir()  # two files as a dataset repository splits them, 12 rows per row group
    half = len(articles) // 2
    write_parquet(inputs / "parquet" / "train-00000-of-00002.parquet", articles[:half], 12)
    write_parquet(inputs / "parquet" / "train-00001-of-00002.parquet", articles[half:], 12)
    return inputs


@pytest.fixture(scope="module")
def same_corpus_three_ways(corpus, tmp_path_factory):
    """(output dir, manifest) of the job on each form of the corpus."""
    runs = {}
    for form, runner in (("jsonl", IN_MEMORY), ("zst", IN_MEMORY), ("parquet", TWO_PROCESSES)):
        out = tmp_path_factory.mktemp(f"out-{form}")
        runs[form] = out, run_job(out, f"inputs=[{corpus / form}]", *SMALL, *runner)
    return runs


def test_parquet_row_groups_read_from_s3_give_the_local_shards(same_corpus_three_ways, s3_corpus, tmp_path):
    """Beam's S3 files are seekable: each worker reads its row groups by range requests (moto's
    server as the endpoint), and the shards are those of the local files."""
    endpoint, url = s3_corpus
    out = tmp_path / "from-s3"
    manifest = run_job(out, f"inputs=[{url}]", f"storage.s3_endpoint_url={endpoint}", *SMALL, *IN_MEMORY)
    assert manifest.statistics["documents_read"] == same_corpus_three_ways["parquet"][1].statistics["documents_read"]
    assert examples_and_vocabulary(out) == examples_and_vocabulary(same_corpus_three_ways["parquet"][0])


@pytest.fixture(scope="module")
def s3_corpus(corpus):
    """(endpoint, s3:// prefix) of the Parquet files in moto's S3 server."""
    from s3_server import FAKE_CREDENTIALS, S3Server

    local = corpus / "parquet"
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_CREDENTIALS.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        with S3Server() as server:
            client = server.client()
            client.create_bucket(Bucket="corpus")
            for name in sorted(os.listdir(local)):
                client.upload_file(str(local / name), "corpus", f"wikipedia/{name}")
            yield server.endpoint_url, "s3://corpus/wikipedia"


def examples_and_vocabulary(output_dir) -> dict:
    """Shard hashes of everything but the documents table (which names each document's source
    file and format) and the rejects."""
    return {k: v for k, v in shard_hashes(output_dir).items() if not k.startswith(("documents/", "rejects/"))}


def test_jsonl_zstd_and_parquet_give_the_same_shards(same_corpus_three_ways, articles):
    hashes = {form: examples_and_vocabulary(out) for form, (out, _) in same_corpus_three_ways.items()}
    assert any(k.startswith("train/") for k in hashes["jsonl"]) and "vocab.txt" in hashes["jsonl"]
    assert hashes["zst"] == hashes["jsonl"] and hashes["parquet"] == hashes["jsonl"]
    read = {form: m.statistics["documents_read"] for form, (_, m) in same_corpus_three_ways.items()}
    assert read == {
        "jsonl": {"json_lines": len(articles)},
        "zst": {"json_lines": len(articles)},
        "parquet": {"parquet": len(articles)},
    }


def test_the_documents_are_the_same_rows_named_by_file_and_row(same_corpus_three_ways):
    def documents(form):
        table = read_split(same_corpus_three_ways[form][0], "documents")
        return sorted(zip(*(table.column(c).to_pylist() for c in ("doc_id", "record_id", "title", "split", "tokens"))))

    assert documents("parquet") == documents("jsonl") == documents("zst")
    table = read_split(same_corpus_three_ways["parquet"][0], "documents")
    assert set(table.column("format").to_pylist()) == {"parquet"}
    assert {os.path.basename(s) for s in table.column("source").to_pylist()} == {
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    }


# --- bad inputs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_job(articles, tmp_path_factory):
    """Good rows beside a null text, a text that is no string, bytes that are no UTF-8, a file
    without a text column, a file cut short, and a .jsonl.zst whose frame is cut."""
    inputs = tmp_path_factory.mktemp("bad")
    good = articles[:30]
    texts = pa.array([a["text"].encode() for a in good[:8]] + [None, b"Bad \xff byte. " + good[8]["text"].encode()])
    pq.write_table(
        pa.table({"id": [a["id"] for a in good[:10]], "text": texts}),
        inputs / "rows.parquet",
        row_group_size=4,
    )
    pq.write_table(pa.table({"id": ["n1", "n2"], "text": [1, 2]}), inputs / "numbers.parquet")
    pq.write_table(pa.table({"doc": ["x"], "words": [good[0]["text"]]}), inputs / "columns.parquet")
    write_parquet(inputs / "cut.parquet", good[10:20], 5)
    data = (inputs / "cut.parquet").read_bytes()
    (inputs / "cut.parquet").write_bytes(data[: len(data) // 2])
    packed = zstandard.ZstdCompressor().compress(json_lines(good[20:30] * 40))
    (inputs / "cut.jsonl.zst").write_bytes(packed[: len(packed) * 3 // 4])
    out = tmp_path_factory.mktemp("bad-out") / "shards"
    manifest = run_job(
        out, f"inputs=[{inputs}]", "tokenizer.vocab_size=500", "cleaning.min_document_chars=100", *IN_MEMORY
    )
    with open(os.path.join(out, "rejects", "part-00000-of-00001.jsonl"), encoding="utf-8") as f:
        rejects = [json.loads(line) for line in f]
    return out, manifest, rejects


def rejects_of(rejects, name):
    """(reason, position, detail) of one file's rejects, in input order."""
    return sorted((r["reason"], r["position"], r["detail"]) for r in rejects if os.path.basename(r["source"]) == name)


def test_bad_rows_and_files_are_counted_rejects_with_file_and_row(bad_job):
    out, manifest, rejects = bad_job
    assert sorted(rejects_of(rejects, "rows.parquet"), key=lambda r: r[1]) == [
        ("missing_text", 9, "row 9: 'text' is null"),
        ("invalid_encoding", 10, "row 10: byte 4 of 'text': invalid start byte"),
    ]
    assert rejects_of(rejects, "numbers.parquet") == [
        ("missing_text", 1, "row 1: 'text' is int '1', not a string"),
        ("missing_text", 2, "row 2: 'text' is int '2', not a string"),
    ]
    [(reason, _, detail)] = rejects_of(rejects, "columns.parquet")
    assert reason == "missing_text" and "the file has: doc: string, words: string" in detail
    assert "source.text_field" in detail
    assert [r[0] for r in rejects_of(rejects, "cut.parquet")] == ["unreadable"]
    [(reason, _, detail)] = [r for r in rejects_of(rejects, "cut.jsonl.zst") if r[0] == "truncated"]
    assert "zstd stream ends early" in detail
    by_reason = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    assert manifest.statistics["rejected"] == by_reason


def test_every_readable_row_is_kept(bad_job, articles):
    out, manifest, _ = bad_job
    docs = read_split(out, "documents")
    kept = set(zip(map(os.path.basename, docs.column("source").to_pylist()), docs.column("record_id").to_pylist()))
    assert {("rows.parquet", a["id"]) for a in articles[:8]} <= kept
    from_zst = {record_id for source, record_id in kept if source == "cut.jsonl.zst"}
    assert from_zst and from_zst <= {a["id"] for a in articles[20:30]}
    assert manifest.statistics["documents_read"]["parquet"] == 8


def test_a_parquet_corpus_without_the_text_column_fails_naming_the_columns(articles, tmp_path):
    path = tmp_path / "export.parquet"
    renamed = [{"doc_id": a["id"], "article": a["text"]} for a in articles[:20]]
    write_parquet(path, renamed, 10)
    with pytest.raises(JobError, match="missing_text 1") as failed:
        run_job(tmp_path / "default", f"inputs=[{path}]", "tokenizer.vocab_size=500", *IN_MEMORY)
    assert "no 'text' column (the file has: doc_id: string, article: string; set source.text_field=" in str(
        failed.value
    )
    manifest = run_job(
        tmp_path / "set",
        f"inputs=[{path}]",
        "source.text_field=article",
        "source.id_field=doc_id",
        "tokenizer.vocab_size=500",
        "masking.dupe_factor=1",
        *IN_MEMORY,
    )
    assert manifest.statistics["documents_read"] == {"parquet": 20}
