"""The job on object storage: a real S3 endpoint (moto's server, ``tests/s3_server.py``) holds the
inputs and receives the output, which must equal the local run's byte for byte, leave no
temporaries and no stale shards behind, and keep secrets out of the manifest. Also Beam's worker
pool (EXTERNAL mode), whose workers get no pipeline options from the runner."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from conftest import IN_MEMORY, compose_pipeline_config, run_job
from s3_server import FAKE_CREDENTIALS, S3Server, free_port

PROSE = (
    "The river rises in the northern hills and flows south for many miles. Farmers along its banks "
    "grow wheat and barley in the summer months. In winter the water freezes near the source. "
)
BUCKET = "corpus"
# filters=none: the bad-bytes book repeats one paragraph (what the repeated n-gram filter removes),
# and these tests are about reading through S3, not about filtering.
SMALL = ("tokenizer.vocab_size=2000", "masking.dupe_factor=1", "progress_every_s=0", "filters=none")
TWO_PROCESSES = ("runner.direct_num_workers=2", "runner.direct_running_mode=multi_processing")
# Passed in runner.extra (Beam takes them over the environment's); moto accepts any key.
SECRET_FLAGS = ("--s3_access_key_id=AKIAEXAMPLEKEYID0001", "--s3_secret_access_key=do-not-write-me-anywhere")


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server for the session; boto3 (here and in worker processes) finds fake
    credentials in the environment."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_CREDENTIALS.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        with S3Server() as server:
            server.client().create_bucket(Bucket=BUCKET)
            yield server


def write_corpus(d, paragraphs, wiki_sample_path):
    """The real Wikipedia sample, three .txt books, and two malformed files: a truncated .bz2
    book and a .txt with invalid UTF-8."""
    import bz2
    import shutil

    d.mkdir()
    shutil.copy(wiki_sample_path, d / os.path.basename(wiki_sample_path))
    for i in range(3):
        (d / f"book-{i}.txt").write_text("\n\n".join(paragraphs[i * 15 : (i + 1) * 15]) + "\n", "utf-8")
    compressed = bz2.compress(("A compressed book. " + PROSE * 50).encode())
    (d / "broken.txt.bz2").write_bytes(compressed[: len(compressed) // 2])
    (d / "bad-bytes.txt").write_bytes(
        ("Good lines first. " + PROSE * 3).encode()
        + b"\n\nBroken \xff\xfe bytes.\n\n"
        + ("Good lines after. " + PROSE * 3).encode()
    )
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_paragraphs, wiki_sample_path, s3):
    """(local directory, its copy in the bucket as s3://corpus/in)."""
    local = write_corpus(tmp_path_factory.mktemp("corpus") / "in", sample_paragraphs, wiki_sample_path)
    client = s3.client()
    for name in sorted(os.listdir(local)):
        client.upload_file(str(local / name), BUCKET, f"in/{name}")
    return local, f"s3://{BUCKET}/in"


@pytest.fixture(scope="module")
def local_job(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("local") / "shards"
    start = time.perf_counter()
    manifest = run_job(out, f"inputs=[{corpus[0]}]", *SMALL, *IN_MEMORY)
    return out, manifest, time.perf_counter() - start


@pytest.fixture(scope="module")
def s3_job(s3, corpus, local_job):
    """The same job, its inputs (a "directory" of the bucket) and output on S3, with credentials
    passed in runner.extra (secrets the manifest must not hold)."""
    out = f"s3://{BUCKET}/out/s3-job"
    extra = "runner.extra=[" + ",".join(f"'{flag}'" for flag in SECRET_FLAGS) + "]"
    start = time.perf_counter()
    manifest = run_job(
        out, f"inputs=[{corpus[1]}]", f"storage.s3_endpoint_url={s3.endpoint_url}", extra, *SMALL, *IN_MEMORY
    )
    return out, manifest, time.perf_counter() - start


def object_bytes(s3, url: str) -> bytes:
    bucket, key = url[len("s3://") :].split("/", 1)
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def output_keys(s3, out: str) -> list[str]:
    """The keys under output dir ``out``, relative to it."""
    prefix = out[len(f"s3://{BUCKET}/") :] + "/"
    return [k[len(prefix) :] for k in s3.keys(BUCKET, prefix)]


def shard_list(manifest):
    return [(s.file, s.split, s.rows, s.sha256) for s in manifest.shards]


def documents_by_name(table: pa.Table) -> list[dict]:
    """The documents table's rows with each source reduced to its file name (the local run's
    sources are local paths, the S3 run's s3:// URLs)."""
    rows = table.to_pylist()
    for r in rows:
        r["source"] = r["source"].rsplit("/", 1)[-1]
    return rows


def test_s3_inputs_and_output_give_the_local_bytes(s3, local_job, s3_job):
    local, local_manifest, local_s = local_job
    out, manifest, s3_s = s3_job
    print(f"\njob on the sample + books: local {local_s:.1f} s, S3 input and output {s3_s:.1f} s")
    assert manifest.statistics["documents_read"] == local_manifest.statistics["documents_read"]
    assert shard_list(manifest) == shard_list(local_manifest)
    keys = output_keys(s3, out)
    local_files = sorted(os.path.relpath(os.path.join(r, f), local) for r, _, fs in os.walk(local) for f in fs)
    assert keys == local_files  # the same files, and nothing else: no .temp-*/ (spill/ included) left
    for rel in keys:
        if rel.startswith(("train/", "eval/")) or rel == "vocab.txt":
            assert sha256(object_bytes(s3, f"{out}/{rel}")) == sha256((local / rel).read_bytes()), rel
        elif rel.startswith("documents/"):
            ours = pa.ipc.open_file(pa.BufferReader(object_bytes(s3, f"{out}/{rel}"))).read_all()
            theirs = pa.ipc.open_file(pa.memory_map(str(local / rel))).read_all()
            assert documents_by_name(ours) == documents_by_name(theirs), rel


def test_the_manifest_holds_no_secret_passed_in_runner_extra(s3, s3_job):
    out, manifest, _ = s3_job
    text = object_bytes(s3, f"{out}/manifest.json").decode("utf-8")
    for flag in SECRET_FLAGS:
        name, value = flag.split("=", 1)
        assert value not in text
        assert f"{name}=<redacted>" in text
    assert manifest.config["storage"]["s3_endpoint_url"] == s3.endpoint_url  # not a secret: kept


def rejects_by_name(lines: list[str]) -> list[tuple]:
    rows = [json.loads(line) for line in lines]
    return sorted((r["source"].rsplit("/", 1)[-1], r["record_id"].rsplit("/", 1)[-1], r["reason"]) for r in rows)


def test_malformed_objects_are_rejected_like_local_files(s3, local_job, s3_job):
    local, _, _ = local_job
    out, manifest, _ = s3_job
    ours = object_bytes(s3, f"{out}/rejects/part-00000-of-00001.jsonl").decode("utf-8").splitlines()
    theirs = (local / "rejects" / "part-00000-of-00001.jsonl").read_text("utf-8").splitlines()
    assert rejects_by_name(ours) == rejects_by_name(theirs)
    reasons = {}
    for r in map(json.loads, ours):
        reasons.setdefault(r["source"], set()).add(r["reason"])
    assert reasons[f"s3://{BUCKET}/in/broken.txt.bz2"] & {"corrupt_compression", "truncated"}
    assert reasons[f"s3://{BUCKET}/in/bad-bytes.txt"] == {"invalid_encoding"}  # the rest of the book is kept
    documents = pa.ipc.open_file(pa.BufferReader(object_bytes(s3, f"{out}/documents/part-00000-of-00001.arrow")))
    assert f"s3://{BUCKET}/in/bad-bytes.txt" in documents.read_all().column("source").to_pylist()


def test_overwrite_with_another_shard_count_leaves_no_stale_shard_in_the_bucket(s3, corpus):
    """The rerun also runs 2 worker processes, whose FileSystems the harness and the DoFns set."""
    out = f"s3://{BUCKET}/out/rerun"
    books = (f"inputs=[{corpus[1]}/book-*.txt]", "instances.eval_fraction=0")  # a train split only
    run_job(out, *books, f"storage.s3_endpoint_url={s3.endpoint_url}", "output.num_shards=3", *SMALL, *IN_MEMORY)
    assert "train/part-00002-of-00003.arrow" in output_keys(s3, out)
    manifest = run_job(
        out,
        *books,
        f"storage.s3_endpoint_url={s3.endpoint_url}",
        "output.num_shards=2",
        "overwrite=true",
        *SMALL,
        *TWO_PROCESSES,
    )
    shards = [f"train/part-{i:05d}-of-00002.arrow" for i in range(2)]
    assert output_keys(s3, out) == sorted(
        shards
        + ["documents/part-00000-of-00001.arrow", "manifest.json", "rejects/part-00000-of-00001.jsonl", "vocab.txt"]
    )
    assert sorted(s.file for s in manifest.shards) == shards
    for s in manifest.shards:
        assert sha256(object_bytes(s3, f"{out}/{s.file}")) == s.sha256


def test_an_existing_output_in_the_bucket_is_not_overwritten_silently(s3, corpus, s3_job):
    from pipeline.run import JobError

    out, _, _ = s3_job
    with pytest.raises(JobError, match=r"already holds a job's output \(manifest.json, train, eval, documents"):
        run_job(out, f"inputs=[{corpus[1]}/book-0.txt]", f"storage.s3_endpoint_url={s3.endpoint_url}", *IN_MEMORY)


# --- workers the runner does not configure -------------------------------------------------------


def start_worker_pool(port: int) -> subprocess.Popen:
    """Beam's worker pool, as Flink/Spark's EXTERNAL environment runs it: its SDK harness starts
    with no pipeline options, so FileSystems knows no S3 endpoint unless the DoFns set it."""
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **FAKE_CREDENTIALS},
    )
    import socket

    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return pool
        except OSError as e:
            if pool.poll() is not None or time.monotonic() > deadline:
                pool.kill()
                raise RuntimeError("Beam's worker pool did not start") from e
            time.sleep(0.2)


def test_workers_of_an_external_worker_pool_configure_their_storage(s3, corpus, local_job):
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.transforms import environments

    from pipeline import storage
    from pipeline.contract import ShardManifest
    from pipeline.run import build, expand_inputs

    _, local_manifest, _ = local_job
    out = f"s3://{BUCKET}/out/external"
    cfg, as_dict = compose_pipeline_config(
        [f"output_dir={out}", f"inputs=[{corpus[1]}]", f"storage.s3_endpoint_url={s3.endpoint_url}", *SMALL, *IN_MEMORY]
    )
    # The launcher's part, as pipeline.run.run does it (beam.Pipeline sets FileSystems' options too).
    options = PipelineOptions(storage.storage_flags(cfg.storage))
    FileSystems.set_options(options)
    paths = expand_inputs(list(cfg.inputs))
    port = free_port()
    pool = start_worker_pool(port)
    try:
        runner = fn_runner.FnApiRunner(default_environment=environments.ExternalEnvironment(f"localhost:{port}"))
        with beam.Pipeline(runner=runner, options=options) as p:
            build(p, cfg, paths, as_dict, None, f"{out}/.temp-external")
    finally:
        pool.terminate()
        try:
            pool.wait(10)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()
    with FileSystems.open(f"{out}/manifest.json") as f:
        manifest = ShardManifest.from_dict(json.loads(f.read().decode("utf-8")))
    assert shard_list(manifest) == shard_list(local_manifest)
    assert not [k for k in output_keys(s3, out) if k.startswith(".temp-")]


def test_secret_flags_are_redacted_in_either_form():
    from pipeline.redaction import REDACTED, redact

    extra = [
        "--s3_endpoint_url=http://x",
        "--s3_secret_access_key=abc",
        "--s3_session_token",
        "tok",
        "--job_name=j",
        {"aws_access_key_id": "AKIA"},
    ]
    assert redact({"runner": {"extra": extra}}) == {
        "runner": {
            "extra": [
                "--s3_endpoint_url=http://x",
                f"--s3_secret_access_key={REDACTED}",
                "--s3_session_token",
                REDACTED,
                "--job_name=j",
                {"aws_access_key_id": REDACTED},
            ]
        }
    }
    assert redact({"tokenizer": {"vocab_size": 1}, "special_tokens": [1]}) == {
        "tokenizer": {"vocab_size": 1},
        "special_tokens": [1],
    }


def test_one_s3_client_serves_every_filesystem_call_of_a_process(s3, corpus):
    """Beam makes an S3 wrapper per call; with the job's storage configured, all of them share one
    low-level client (not one built per call, ~0.1 s each), and the calls still work."""
    from apache_beam.io.aws import s3io
    from apache_beam.io.filesystems import FileSystems

    from pipeline import s3_clients, storage
    from pipeline.config import StorageConfig

    storage.configure_filesystems(StorageConfig(s3_endpoint_url=s3.endpoint_url))
    before = s3_clients.made
    listed = storage.files_under(corpus[1])
    assert [p.rsplit("/", 1)[1] for p in listed] == sorted(os.listdir(corpus[0]))
    for path in listed:
        assert FileSystems.exists(path)
        with FileSystems.open(path, compression_type="uncompressed") as f:
            assert f.read() == (corpus[0] / path.rsplit("/", 1)[1]).read_bytes()
    out = f"s3://{BUCKET}/out/shared-client/"
    storage.write_bytes(out + "a.txt", b"x")
    storage.write_bytes(out + "empty.txt", b"")
    assert storage.files_under(out) == [out + "a.txt", out + "empty.txt"]
    storage.delete_directory(out)
    assert not storage.exists(out)
    # at most one new client (none when an earlier test of this process made it), for 20-odd calls
    assert s3_clients.made - before <= 1
    options = FileSystems._pipeline_options
    assert s3io.S3IO(options=options).client.client is s3io.S3IO(options=options).client.client
    # other settings (here another spelling of the endpoint) are another client, made once
    shared = s3io.S3IO(options=options).client.client
    storage.configure_filesystems(StorageConfig(s3_endpoint_url=s3.endpoint_url + "/"))
    made = s3_clients.made
    other = [s3io.S3IO(options=FileSystems._pipeline_options).client.client for _ in range(3)]
    assert other[0] is other[1] is other[2] and other[0] is not shared
    assert s3_clients.made == made + 1
    storage.configure_filesystems(StorageConfig(s3_endpoint_url=s3.endpoint_url))
    assert s3io.S3IO(options=FileSystems._pipeline_options).client.client is shared
