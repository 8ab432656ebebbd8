"""``runner=portable``: the job submitted to a job service whose SDK workers run outside the
launching process, from another environment: the path Flink, Spark and Dataflow Runner v2 take.

Here the job service is Beam's Python one (``local_job_service_main``) and the workers come from a
worker pool (``worker_pool_main``, ``environment_type=EXTERNAL``), both running from a fresh venv
into which the project is installed from its wheel (``installed_venv``); the launcher is this test's
interpreter. The output must be the DirectRunner's, byte for byte, on the same input and settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from installed_venv import REPO, build_installed_venv
from launch_helpers import free_port

SMALL = ["tokenizer.vocab_size=2000", "masking.dupe_factor=1"]  # the default input: the real sample
JOB_TIMEOUT_S = 300  # a worker that cannot start (no Beam in its `python`) leaves the job waiting
START_TIMEOUT_S = 60
LOG_TAIL_LINES = 40


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory):
    return build_installed_venv(tmp_path_factory.mktemp("worker-venv"))


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def service(name: str, command: list[str], port: int, log_dir: Path, **popen):
    """A server process listening on ``port`` while the block runs; its output goes to
    ``log_dir/<name>.log``. It runs in a process group of its own, so that stopping it (terminate,
    wait, kill) also stops what it started (the worker pool's workers)."""
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} before listening on port {port}:\n{tail(log)}")
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} not listening on port {port} after {START_TIMEOUT_S} s:\n{tail(log)}")
                time.sleep(0.2)
        yield log
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process's group, up to 10 s to exit, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=10)


def run_job(overrides: list[str], cwd: Path, logs: list[Path]) -> float:
    """``python -m pipeline`` with ``overrides`` in this interpreter, from the sources the wheel was
    built from (launcher and workers must run the same code); its wall time in seconds. Fails with
    the job's stderr and the tails of ``logs`` if it fails or runs past JOB_TIMEOUT_S."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    start = time.perf_counter()
    try:
        job = subprocess.run(
            [sys.executable, "-m", "pipeline", *overrides],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:  # its output comes as bytes here, whatever text= says
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        problem = (
            f"did not finish in {JOB_TIMEOUT_S} s (a pool's worker that cannot start, e.g. no Beam in the "
            "`python` on the pool's PATH, leaves it waiting)"
        )
    else:
        if job.returncode == 0:
            return time.perf_counter() - start
        problem, stderr = f"exited with {job.returncode}", job.stderr
    services = "\n".join(f"--- {log.name} (last {LOG_TAIL_LINES} lines) ---\n{tail(log)}" for log in logs)
    pytest.fail(f"the job {' '.join(overrides)} {problem}\n--- job stderr ---\n{stderr[-4000:]}\n{services}")


def digests(output_dir: Path) -> dict[str, str]:
    """sha256 of every file of an output but the manifest (whose config names the runner)."""
    return {
        str(p.relative_to(output_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(output_dir.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_job_service_with_an_external_worker_pool_writes_the_direct_runners_bytes(worker_venv, tmp_path):
    cluster = tmp_path / "cluster"  # the services' working directory: not the repository
    cluster.mkdir()
    job_port, pool_port = free_port(), free_port()
    env = worker_venv.env()  # the pool starts each worker as `python` from PATH: the venv's
    with (
        service(
            "job-service",
            [worker_venv.python, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
            job_port,
            tmp_path,
            cwd=cluster,
            env=env,
        ) as job_log,
        service(
            "worker-pool",
            [worker_venv.python, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
            pool_port,
            tmp_path,
            cwd=cluster,
            env=env,
        ) as pool_log,
    ):
        portable_s = run_job(
            [
                f"output_dir={tmp_path / 'portable'}",
                "runner=portable",
                f"runner.job_endpoint=localhost:{job_port}",
                "runner.environment_type=EXTERNAL",
                f"runner.environment_config=localhost:{pool_port}",
                *SMALL,
            ],
            tmp_path,
            [job_log, pool_log],
        )
        assert "Starting worker with command" in pool_log.read_text()  # the pool's workers ran it
    direct_s = run_job([f"output_dir={tmp_path / 'direct'}", *SMALL], tmp_path, [])
    print(f"\nportable (job service + EXTERNAL worker pool): {portable_s:.1f} s; direct: {direct_s:.1f} s")

    portable, direct = digests(tmp_path / "portable"), digests(tmp_path / "direct")
    assert {"vocab.txt", "train/part-00000-of-00001.arrow", "documents/part-00000-of-00001.arrow"} <= set(direct)
    assert portable == direct
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("portable", "direct")]
    assert manifests[0]["shards"] == manifests[1]["shards"] and manifests[0]["shards"]
    assert manifests[0]["config"]["runner"]["runner"] == "PortableRunner"


def test_portable_runner_with_s3_inputs_and_output_writes_the_direct_runners_bytes(
    worker_venv, tmp_path, wiki_sample_path
):
    """The same through object storage: the sample read from a bucket of moto's S3 server and the
    shards written back there. The pool's workers never receive the pipeline options; they reach
    the store through the storage settings each step carries (``storage.*``)."""
    from s3_server import FAKE_CREDENTIALS, S3Server

    cluster = tmp_path / "cluster"
    cluster.mkdir()
    job_port, pool_port = free_port(), free_port()
    env = dict(worker_venv.env(), **FAKE_CREDENTIALS)
    with S3Server() as s3:
        client = s3.client()
        client.create_bucket(Bucket="corpus")
        client.upload_file(wiki_sample_path, "corpus", "in/" + os.path.basename(wiki_sample_path))
        with (
            service(
                "job-service",
                [
                    worker_venv.python,
                    "-m",
                    "apache_beam.runners.portability.local_job_service_main",
                    f"--port={job_port}",
                ],
                job_port,
                tmp_path,
                cwd=cluster,
                env=env,
            ) as job_log,
            service(
                "worker-pool",
                [
                    worker_venv.python,
                    "-m",
                    "apache_beam.runners.worker.worker_pool_main",
                    f"--service_port={pool_port}",
                ],
                pool_port,
                tmp_path,
                cwd=cluster,
                env=env,
            ) as pool_log,
        ):
            os.environ.update(FAKE_CREDENTIALS)  # the launcher's boto3 too (restored below)
            try:
                portable_s = run_job(
                    [
                        "inputs=[s3://corpus/in]",
                        "output_dir=s3://corpus/out",
                        f"storage.s3_endpoint_url={s3.endpoint_url}",
                        "runner=portable",
                        f"runner.job_endpoint=localhost:{job_port}",
                        "runner.environment_type=EXTERNAL",
                        f"runner.environment_config=localhost:{pool_port}",
                        *SMALL,
                    ],
                    tmp_path,
                    [job_log, pool_log],
                )
            finally:
                for name in FAKE_CREDENTIALS:
                    os.environ.pop(name, None)
        keys = s3.keys("corpus", "out/")
        rejects = [
            json.loads(line)
            for k in keys
            if k.startswith("out/rejects/")
            for line in client.get_object(Bucket="corpus", Key=k)["Body"].read().decode().splitlines()
        ]
        portable = {
            k[len("out/") :]: hashlib.sha256(client.get_object(Bucket="corpus", Key=k)["Body"].read()).hexdigest()
            for k in keys
        }
    direct_s = run_job([f"inputs=[{wiki_sample_path}]", f"output_dir={tmp_path / 'direct'}", *SMALL], tmp_path, [])
    print(f"\nportable with S3 in and out: {portable_s:.1f} s; direct, local files: {direct_s:.1f} s")
    direct = digests(tmp_path / "direct")
    assert not [k for k in keys if "/.temp-" in k or k.startswith("out/.temp-")]  # no temporaries left
    # The documents table and the rejects name each record's source path (s3://... vs local):
    # compare the shards and vocabulary byte for byte, the rejects by everything but the path.
    same = {k for k in direct if not k.startswith(("documents/", "rejects/"))}
    assert {"vocab.txt", "train/part-00000-of-00001.arrow", "eval/part-00000-of-00001.arrow"} <= same
    assert {k: portable[k] for k in same} == {k: direct[k] for k in same}
    assert set(portable) == set(direct) | {"manifest.json"}
    local_rejects = [
        json.loads(line)
        for p in sorted((tmp_path / "direct" / "rejects").iterdir())
        for line in p.read_text().splitlines()
    ]

    def without_path(r):
        return {k: (os.path.basename(v) if k == "source" else v) for k, v in r.items()}

    assert sorted(map(json.dumps, map(without_path, rejects))) == sorted(
        map(json.dumps, map(without_path, local_rejects))
    )
