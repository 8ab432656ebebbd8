"""A worker process of the local runner: Beam's SDK harness under the job's logging.

    python -m pipeline.worker      (started by the FnApiRunner, never by hand)

``runner=direct`` with ``direct_running_mode=multi_processing`` starts one such process per
worker (``pipeline.run.make_runner``). Beam's own entry point (``sdk_worker_main``) logs its
start-up at INFO to stderr whatever the job's level, and Beam's modules warn through the root
logger as they are imported, so each worker printed about 20 lines around the job's summary.
Here logging is set up before Beam is imported, at the launcher's level (``WORKER_LOG_LEVEL_ENV``),
and Beam's own loggers stay quiet below ERROR unless that level is INFO or DEBUG. Everything
else is Beam's: the harness reads the control and logging endpoints and the pipeline options
from the environment the runner gives it.
"""

import logging
import os
import sys

WORKER_LOG_LEVEL_ENV = "BERT_PRETRAIN_LOG_LEVEL"


def beam_level_for(level: str) -> str:
    """Beam's loggers in a worker: as chatty as asked at INFO/DEBUG, else errors only (the
    launcher already reports what concerns the user, e.g. an unparseable pipeline option)."""
    return level if logging.getLevelName(level) < logging.WARNING else "ERROR"


def main() -> None:
    from pipeline.cli import configure_logging

    level = os.environ.get(WORKER_LOG_LEVEL_ENV, "WARNING")
    configure_logging(level, beam_level_for(level))
    from apache_beam.runners.worker import sdk_worker_main

    # The harness sets the root logger to INFO while it starts, then to the pipeline option
    # default_sdk_harness_log_level (which pipeline.run sets to the job's level); the levels
    # of Beam's loggers set above hold throughout.
    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
