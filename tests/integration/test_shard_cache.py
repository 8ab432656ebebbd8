"""Shards from object storage (``training/shard_cache.py``): a real data job's output uploaded to a
real S3 endpoint (moto's server, ``tests/s3_server.py``), trained on through ``data_dir=s3://...``.
Requests are counted with moto's request recorder (every request the server answers, as a line of
JSON), so "no download" is a count, not a timing.

Runtimes (2 cores): shards ~20 s, each training run 15-30 s, the whole file ~2.5 min.
"""

import hashlib
import json
import os
import subprocess
import urllib.request

import pytest

from launch_helpers import REPO, read_steps, run, single_process_command, torchrun_command, trainer_env
from s3_server import FAKE_CREDENTIALS, S3Server
from test_trainer import SMOKE

BUCKET = "shards-bucket"
STEPS = 6
RUN = ("trainer.eval_every=0", "trainer.checkpoint_every=100", "deepspeed.precision=fp32")


class RecordingS3:
    """moto's server with its request recorder on: ``requests()`` is every request answered since
    the last ``reset()``, as (method, key), the key without the bucket ('' for bucket-level calls)."""

    def __init__(self, server: S3Server, recording: str):
        self.server, self.recording = server, recording

    def _api(self, action: str) -> None:
        url = f"{self.server.endpoint_url}/moto-api/recorder/{action}"
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).close()

    def reset(self) -> None:
        self._api("reset-recording")

    def requests(self) -> list[tuple[str, str]]:
        from urllib.parse import unquote, urlparse

        if not os.path.exists(self.recording):
            return []
        out = []
        with open(self.recording) as f:
            for line in f:
                entry = json.loads(line)
                path = unquote(urlparse(entry["url"]).path).lstrip("/")
                out.append((entry["method"], path.split("/", 1)[1] if "/" in path else ""))
        return out

    def object_gets(self) -> list[str]:
        """Keys of the objects read (GET of a key; a listing is a GET of the bucket)."""
        return sorted(key for method, key in self.requests() if method == "GET" and key)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    recording = str(tmp_path_factory.mktemp("moto") / "requests.jsonl")
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_CREDENTIALS.items():
            env.setenv(name, value)  # boto3 in this process and in the trainer's subprocesses
        env.delenv("AWS_PROFILE", raising=False)
        env.setenv("MOTO_RECORDER_FILEPATH", recording)  # read by the server process at its start
        with S3Server() as server:
            server.client().create_bucket(Bucket=BUCKET)
            recorder = RecordingS3(server, recording)
            recorder._api("start-recording")
            yield recorder


def upload(s3, local_dir, prefix) -> list[str]:
    """Every file of ``local_dir`` to s3://BUCKET/prefix/...; the keys relative to prefix."""
    client = s3.server.client()
    names = sorted(
        os.path.relpath(os.path.join(root, f), local_dir) for root, _, files in os.walk(local_dir) for f in files
    )
    for name in names:
        client.upload_file(os.path.join(local_dir, name), BUCKET, f"{prefix}/{name}")
    return names


@pytest.fixture(scope="module")
def bucket_shards(s3, trainer_shards):  # noqa: F811
    """The trainer fixture's job output at s3://BUCKET/shards; (url, the files the cache must hold)."""
    upload(s3, trainer_shards, "shards")
    manifest = json.load(open(os.path.join(trainer_shards, "manifest.json")))
    needed = sorted(["manifest.json", manifest["vocab_file"], *(s["file"] for s in manifest["shards"])])
    return f"s3://{BUCKET}/shards", needed


def storage(s3):
    return f"storage.s3_endpoint_url={s3.server.endpoint_url}"


def train(data_dir, output_dir, *extra, nproc=1):
    overrides = (*SMOKE, f"data_dir={data_dir}", f"output_dir={output_dir}", *RUN, *extra)
    command = single_process_command(*overrides) if nproc == 1 else torchrun_command(nproc, *overrides)
    result = run(command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return read_steps(output_dir)


def cache_state(cache_root):
    """(inode, mtime_ns, size) of every file under the cache: unchanged = nothing rewritten."""
    return {
        os.path.relpath(os.path.join(r, f), cache_root): (st.st_ino, st.st_mtime_ns, st.st_size)
        for r, _, files in os.walk(cache_root)
        for f in files
        for st in [os.stat(os.path.join(r, f))]
        if f not in (".lock", ".last_used")  # the lock, and the mark each start touches (data.cache_max_gb's order)
    }


def shard_cache_of(cache_root, url):
    from training.shard_cache import cache_dir_for

    return cache_dir_for(url, str(cache_root))


@pytest.fixture(scope="module")
def cold_and_warm(s3, bucket_shards, trainer_shards, tmp_path_factory):  # noqa: F811
    """The same run on the local directory and on the bucket (cold cache), then a restart of the
    bucket run for 2 more steps (warm cache), with the requests of each bucket run."""
    url, _ = bucket_shards
    tmp = tmp_path_factory.mktemp("runs")
    cache = tmp / "cache"
    local_steps = train(trainer_shards, tmp / "local", f"trainer.max_steps={STEPS}")
    s3.reset()
    cold_steps = train(url, tmp / "s3", f"trainer.max_steps={STEPS}", storage(s3), f"data.cache_dir={cache}")
    cold_requests = s3.object_gets()
    before = cache_state(cache)
    s3.reset()
    warm_steps = train(url, tmp / "s3", f"trainer.max_steps={STEPS + 2}", storage(s3), f"data.cache_dir={cache}")
    return dict(
        local=local_steps,
        cold=cold_steps,
        cold_gets=cold_requests,
        warm=warm_steps,
        warm_gets=s3.object_gets(),
        before=before,
        after=cache_state(cache),
        cache=cache,
        local_out=tmp / "local",
        s3_out=tmp / "s3",
    )


def test_training_on_the_bucket_gives_the_steps_of_the_local_directory(cold_and_warm, bucket_shards):
    runs = cold_and_warm
    assert [s["step"] for s in runs["cold"]] == list(range(1, STEPS + 1))
    assert runs["cold"] == runs["local"]  # losses, lr, samples and example ids, exactly
    _, needed = bucket_shards
    assert runs["cold_gets"] == [f"shards/{n}" for n in needed]  # each file fetched once, nothing else
    # the run records the data_dir as given; the cache only stands in for it
    record = json.load(open(os.path.join(runs["s3_out"], "checkpoints", f"step{STEPS:08d}", "run_config.json")))
    assert record["config"]["data_dir"] == bucket_shards[0]
    local_record = json.load(
        open(os.path.join(runs["local_out"], "checkpoints", f"step{STEPS:08d}", "run_config.json"))
    )
    assert record["data"] == local_record["data"]  # the same shards' identity


def test_a_restart_reuses_the_verified_cache_without_downloading(cold_and_warm):
    runs = cold_and_warm
    # resumed from step STEPS and went on: its first steps are the cold run's
    assert [s["step"] for s in runs["warm"]] == list(range(1, STEPS + 3))
    assert runs["warm"][:STEPS] == runs["cold"]
    assert runs["warm_gets"] == ["shards/manifest.json"]  # only the manifest is read again
    assert runs["after"] == runs["before"]  # not a byte rewritten (inodes, mtimes, sizes)


def test_a_corrupt_or_truncated_cached_file_is_fetched_again(
    s3,
    bucket_shards,
    trainer_shards,  # noqa: F811
    tmp_path,
):
    from pipeline.config import StorageConfig
    from pipeline.contract import sha256_file
    from training.shard_cache import cached_data_dir

    url, needed = bucket_shards
    cfg = StorageConfig(s3_endpoint_url=s3.server.endpoint_url)
    local = cached_data_dir(url, str(tmp_path), cfg)
    assert local == shard_cache_of(tmp_path, url) and local.startswith(str(tmp_path))
    shards = [n for n in needed if n.endswith(".arrow")]
    corrupt, truncated = shards[0], shards[-1]
    assert corrupt != truncated
    with open(os.path.join(local, corrupt), "r+b") as f:  # flip one byte in place
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open(os.path.join(local, truncated), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(local, truncated)) // 2)
    os.remove(os.path.join(local, "manifest.json"))  # also one gone entirely
    s3.reset()
    assert cached_data_dir(url, str(tmp_path), cfg) == local
    assert s3.object_gets() == sorted(f"shards/{n}" for n in ("manifest.json", corrupt, truncated))
    for name in needed:
        assert sha256_file(os.path.join(local, name)) == sha256_file(os.path.join(trainer_shards, name))
    assert not [n for n in os.listdir(os.path.dirname(os.path.join(local, corrupt))) if n.endswith(".partial")]

    # the verified marker is what spares the hash: while size, mtime and inode are those it
    # recorded, the file is not read again (here its bytes changed behind the marker's back)
    path = os.path.join(local, corrupt)  # re-fetched and marked just now
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    s3.reset()
    cached_data_dir(url, str(tmp_path), cfg)
    assert s3.object_gets() == ["shards/manifest.json"]
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: hashed, found corrupt, fetched
    s3.reset()
    cached_data_dir(url, str(tmp_path), cfg)
    assert s3.object_gets() == sorted(["shards/manifest.json", f"shards/{os.path.relpath(path, local)}"])


def test_a_bucket_that_does_not_hold_its_manifests_shards_fails_before_training(
    s3,
    trainer_shards,  # noqa: F811
    tmp_path,
):
    from pipeline.config import StorageConfig
    from training.data import DataContractError
    from training.shard_cache import FETCH_ATTEMPTS, cached_data_dir

    client = s3.server.client()
    upload(s3, trainer_shards, "bad")
    listed = {s["file"]: s["sha256"] for s in json.load(open(os.path.join(trainer_shards, "manifest.json")))["shards"]}
    shard = sorted(listed)[0]
    data = bytearray(open(os.path.join(trainer_shards, shard), "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    client.put_object(Bucket=BUCKET, Key=f"bad/{shard}", Body=bytes(data))
    s3.reset()
    out = tmp_path / "run"
    result = subprocess.run(
        single_process_command(
            *SMOKE,
            f"data_dir=s3://{BUCKET}/bad",
            f"output_dir={out}",
            storage(s3),
            f"data.cache_dir={tmp_path / 'cache'}",
        ),
        cwd=REPO,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: s3://{BUCKET}/bad/{shard} does not match its manifest.json: {FETCH_ATTEMPTS} downloads "
        f"had sha256 {hashlib.sha256(data).hexdigest()} ({len(data)} bytes), the manifest says "
        f"{listed[shard]}; the object store does not hold the data job's output (restore it or rerun "
        "the job)"
    ]
    assert not os.path.exists(out / "steps.jsonl")
    assert s3.object_gets().count(f"bad/{shard}") == FETCH_ATTEMPTS
    cached = os.path.join(shard_cache_of(tmp_path / "cache", f"s3://{BUCKET}/bad"), shard)
    assert not os.path.exists(cached) and not os.path.exists(cached + ".partial")  # nothing unverified kept

    cfg = StorageConfig(s3_endpoint_url=s3.server.endpoint_url)
    cache = str(tmp_path / "cache2")
    # cut short in the bucket: found from the listing, nothing downloaded
    client.put_object(Bucket=BUCKET, Key=f"bad/{shard}", Body=bytes(data[:100]))
    with pytest.raises(
        DataContractError,
        match=rf"bad/{shard} has 100 bytes in the object store, its "
        r"manifest.json says \d+",
    ):
        cached_data_dir(f"s3://{BUCKET}/bad", cache, cfg)
    client.delete_object(Bucket=BUCKET, Key=f"bad/{shard}")
    with pytest.raises(DataContractError, match=rf"bad/{shard} is listed in its manifest.json but missing"):
        cached_data_dir(f"s3://{BUCKET}/bad", cache, cfg)
    client.delete_object(Bucket=BUCKET, Key="bad/manifest.json")
    with pytest.raises(
        DataContractError, match=rf"^no manifest.json at data_dir=s3://{BUCKET}/bad \(\d+ other objects under it\)"
    ):
        cached_data_dir(f"s3://{BUCKET}/bad", cache, cfg)
    with pytest.raises(
        DataContractError,
        match=rf"no manifest.json at data_dir=s3://{BUCKET}/nothing-here "
        r"\(nothing is stored under it\)",
    ):
        cached_data_dir(f"s3://{BUCKET}/nothing-here", cache, cfg)


def test_two_ranks_on_one_node_fill_the_cache_once_and_both_train(s3, bucket_shards, tmp_path):
    url, needed = bucket_shards
    s3.reset()
    steps = train(
        url, tmp_path / "run", "trainer.max_steps=3", storage(s3), f"data.cache_dir={tmp_path / 'cache'}", nproc=2
    )
    assert [s["step"] for s in steps] == [1, 2, 3]
    for s in steps:  # global 8 = micro 4 x 2 ranks: both ranks' examples, disjoint
        assert len(s["example_ids"]) == 8 and len(set(s["example_ids"])) == 8
    gets = s3.object_gets()
    assert sorted(set(gets)) == [f"shards/{n}" for n in needed]
    assert gets.count("shards/manifest.json") == 2  # each rank reads the manifest
    assert all(gets.count(f"shards/{n}") == 1 for n in needed if n != "manifest.json")  # the rest once


def test_the_cache_keeps_what_the_manifest_lists_and_fits_its_limit(s3, bucket_shards, tmp_path):
    """Files of an older version of the data (another shard name, its marker, a download a killed run
    left) are removed at start; with data.cache_max_gb another data_dir's copy is removed, least
    recently used first, and never the copy in use or one whose lock another process holds."""
    import fcntl

    from pipeline.config import StorageConfig
    from training.shard_cache import cached_data_dir

    url, needed = bucket_shards
    cfg = StorageConfig(s3_endpoint_url=s3.server.endpoint_url)
    local = cached_data_dir(url, str(tmp_path), cfg)
    stale = ["train/part-00000-of-00009.arrow", ".verified/train/part-00000-of-00009.arrow.json"]
    stale.append(f"{[n for n in needed if n.endswith('.arrow')][0]}.partial")
    for name in stale:
        os.makedirs(os.path.dirname(os.path.join(local, name)), exist_ok=True)
        with open(os.path.join(local, name), "wb") as f:
            f.write(b"x" * 1000)
    s3.reset()
    assert cached_data_dir(url, str(tmp_path), cfg) == local
    assert s3.object_gets() == ["shards/manifest.json"]  # what is listed was kept, verified
    assert not [n for n in stale if os.path.exists(os.path.join(local, n))]
    assert all(os.path.exists(os.path.join(local, n)) for n in needed)

    def other_copy(name: str, used_at: float) -> str:
        copy = os.path.join(str(tmp_path), "s3", "other-bucket", name)
        os.makedirs(copy)
        with open(os.path.join(copy, "part.arrow"), "wb") as f:
            f.write(b"y" * 3_000_000)
        for mark in (".lock", ".last_used"):
            open(os.path.join(copy, mark), "w").close()
        os.utime(os.path.join(copy, ".last_used"), (used_at, used_at))
        return copy

    older, newer, busy = other_copy("older", 1e9), other_copy("newer", 2e9), other_copy("busy", 0.0)
    ours = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(local) for f in fs)
    limit_gb = (ours + 3_500_000 * 2) / 1e9  # room for ours and two others: one of three must go
    with open(os.path.join(busy, ".lock")) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # "another run" holds the oldest copy
        cached_data_dir(url, str(tmp_path), cfg, limit_gb)
    assert os.path.exists(busy) and not os.path.exists(older) and os.path.exists(newer)
    assert all(os.path.exists(os.path.join(local, n)) for n in needed)


def test_cache_location_and_resumable_keys():
    from training.config import config_differences
    from training.shard_cache import cache_dir_for, remote_scheme

    assert remote_scheme("s3://b/x") == "s3" and remote_scheme("gs://b/x") == "gs"
    assert remote_scheme("/data/shards") is None and remote_scheme("file:///data") is None
    assert cache_dir_for("gs://b/out/shards/", "/c") == "/c/gs/b/out/shards"
    # a run may resume from another cache or endpoint: the shards are compared by content
    saved = {"data": {"cache_dir": None, "cache_max_gb": None}, "storage": {"s3_endpoint_url": None}}
    now = {
        "data": {"cache_dir": "/nvme/cache", "cache_max_gb": 500.0},
        "storage": {"s3_endpoint_url": "http://minio:9000"},
    }
    assert config_differences(saved, now) == []
