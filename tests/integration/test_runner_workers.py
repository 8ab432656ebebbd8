"""The local runner's worker processes (runner.direct_running_mode=multi_processing) start with the
malloc settings the launcher gives them (pipeline/runner.py, WORKER_MALLOC_ENV), a user's own value
kept. Beam starts real worker processes here, so this sits in the integration layer; the option
translation is tested in tests/unit/test_config.py."""

import os

from pipeline.config import RunnerConfig
from pipeline.runner import WORKER_MALLOC_ENV, beam_options, make_runner, worker_environment


def test_direct_runner_worker_processes_start_with_the_malloc_settings(monkeypatch):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # set by the user: kept
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    cfg = RunnerConfig(direct_num_workers=1, direct_running_mode="multi_processing")
    names = sorted(WORKER_MALLOC_ENV)
    expected = dict(WORKER_MALLOC_ENV, MALLOC_ARENA_MAX="4")
    options = beam_options(cfg)
    with worker_environment(cfg), beam.Pipeline(runner=make_runner(cfg, options), options=options) as p:
        seen = p | beam.Create([None]) | beam.Map(lambda _: sorted((k, os.environ.get(k), os.getpid()) for k in names))
        parent = os.getpid()
        assert_that(
            seen | beam.Map(lambda kvs: ({k: v for k, v, _ in kvs}, kvs[0][2] != parent)), equal_to([(expected, True)])
        )  # in a worker process, not this one
    assert os.environ["MALLOC_ARENA_MAX"] == "4" and "MALLOC_MMAP_THRESHOLD_" not in os.environ
