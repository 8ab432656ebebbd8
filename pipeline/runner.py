"""The Beam runner of a job: its pipeline options, the runner object, the local workers' environment.

``runner=direct`` runs Beam's FnApiRunner (the DirectRunner's batch engine) chosen explicitly:
Beam's ``DirectRunner`` first tries the Prism runner, which downloads a binary at run time and
fails on machines without internet. Its ``multi_processing`` mode starts one worker process per
core; here those processes run ``python -m pipeline.worker`` (Beam's SDK harness under the job's
logging) with the malloc settings below.

Every other runner is Beam's own, resolved from ``--runner``. ``runner=portable`` submits the job
to a job service (``--job_endpoint``: a Flink or Spark job server, Beam's Python job service) whose
SDK workers run elsewhere (``--environment_type``): the path Flink, Spark and Dataflow Runner v2 take.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import sys
import threading
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import RunnerConfig
from pipeline.worker import WORKER_LOG_LEVEL_ENV

# glibc malloc settings for the DirectRunner's worker processes, which inherit the environment.
# By default a process may get up to 8 malloc arenas per core and keeps large freed buffers in
# its heap, so a worker's resident memory follows the largest input it ever received (Beam's
# local runner sends a worker its whole part of a grouped input at once). Two arenas, and
# buffers of 1 MiB or more mapped on their own and unmapped when freed, keep it near what is
# live: on the benchmark's 4x input a worker's peak went from 455 to 330 MiB at the same speed.
# Variables already set by the user win. Cluster workers take these from their container image.
WORKER_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 20),
}
WORKER_COMMAND = f"{sys.executable} -m pipeline.worker"
# mallopt(3) parameters for the same settings in the launcher, which hosts the local runner.
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}
TRIM_EVERY_S = 1.0


def _local_processes(cfg: RunnerConfig) -> bool:
    return cfg.runner == "DirectRunner" and cfg.direct_running_mode == "multi_processing"


def _environment_config(cfg: RunnerConfig) -> str | None:
    """environment_config as Beam reads it. PROCESS takes JSON ({"command": ...}), which Hydra's
    command line would parse into a dict, so a plain boot command is wrapped here."""
    config = cfg.environment_config
    if cfg.environment_type == "PROCESS" and config and not config.lstrip().startswith("{"):
        return json.dumps({"command": config})
    return config


def beam_options(cfg: RunnerConfig, log_level: str = "WARNING", extra_flags: Sequence[str] = ()) -> PipelineOptions:
    """The pipeline options of ``cfg``; SDK workers log at ``log_level`` (except those of a worker
    pool started by Beam's ``worker_pool_main``, which receive no pipeline options: docs/clusters.md).

    extra_flags: more ``--name=value`` options from other parts of the config (e.g. object
    storage), placed before ``cfg.extra`` so that a user's own runner.extra wins."""
    flags = [f"--runner={cfg.runner}", f"--default_sdk_harness_log_level={log_level}"]
    values = {
        k: getattr(cfg, k)
        for k in (
            "project",
            "region",
            "temp_location",
            "staging_location",
            "job_name",
            "machine_type",
            "max_num_workers",
            "setup_file",
            "sdk_container_image",
            "flink_master",
            "spark_master_url",
            "environment_type",
            "job_endpoint",
            "artifact_endpoint",
            "direct_running_mode",
        )
    }
    values["environment_config"] = _environment_config(cfg)
    if cfg.runner == "DirectRunner" and cfg.direct_num_workers is not None:
        values["direct_num_workers"] = cfg.direct_num_workers or os.cpu_count() or 1
    if _local_processes(cfg):
        # make_runner hands the FnApiRunner the worker processes itself; told multi_processing,
        # the runner would replace them with its own (Beam's entry point, Beam's logging).
        values["direct_running_mode"] = "in_memory"
    flags += [f"--{k}={v}" for k, v in values.items() if v is not None]
    return PipelineOptions(flags + list(extra_flags) + [str(x) for x in cfg.extra])


def make_runner(cfg: RunnerConfig, options: PipelineOptions):
    """The runner object for ``beam.Pipeline``; None lets Beam resolve ``--runner``.

    "DirectRunner" is Beam's FnApiRunner with the options' pipeline options provisioned to its
    workers; in multi_processing mode its workers are ``WORKER_COMMAND`` processes.
    """
    if cfg.runner != "DirectRunner":
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    from apache_beam.transforms import environments

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    environment = None
    if _local_processes(cfg):
        environment = environments.SubprocessSDKEnvironment.from_command_string(WORKER_COMMAND)
        # The runner warns that "in_memory" with several workers gives no parallelism; these
        # workers are processes (see beam_options), so that warning would mislead.
        logging.getLogger(fn_runner.__name__).setLevel(logging.ERROR)
    return fn_runner.FnApiRunner(default_environment=environment, provision_info=provision)


@contextlib.contextmanager
def worker_environment(cfg: RunnerConfig, log_level: str = "WARNING", extra: dict | None = None):
    """While the job runs, the DirectRunner's worker processes (which inherit the environment)
    start with WORKER_MALLOC_ENV, the job's log level and ``extra``; variables the user has set win."""
    wanted = (
        dict(WORKER_MALLOC_ENV, **{WORKER_LOG_LEVEL_ENV: log_level}, **(extra or {}))
        if cfg.runner == "DirectRunner"
        else {}
    )
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def runner_heap(cfg: RunnerConfig):
    """While a local job runs, the launcher process, where Beam's FnApiRunner relays every
    bundle's data between workers over gRPC, keeps its heap near what is live: the malloc
    settings the workers get (WORKER_MALLOC_ENV, through mallopt, except those the user set),
    and a thread that returns freed heap pages to the system every TRIM_EVERY_S
    (malloc_trim). Measured on the memory benchmark (bench/pipeline_memory.py), the runner's
    Python objects stayed near 130 MB while its resident memory grew with the corpus: glibc
    kept the freed buffers of the relayed messages in its per-thread arenas. glibc only."""
    libc = _libc() if cfg.runner == "DirectRunner" else None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        yield
        return
    for name, param in _MALLOPT.items():
        if name not in os.environ:
            libc.mallopt(param, int(WORKER_MALLOC_ENV[name]))
    stop = threading.Event()

    def trim():
        while not stop.wait(TRIM_EVERY_S):
            libc.malloc_trim(0)

    thread = threading.Thread(target=trim, name="malloc-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
