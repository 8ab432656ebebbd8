"""python -m pipeline output_dir=<dir> [inputs='[<path, glob or directory>, ...]'] [overrides]"""

import logging
import sys

from pipeline.cli import config_or_exit, configure_logging, exit_on

configure_logging("WARNING")  # before Beam is imported: its modules warn as they load

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.config import PipelineConfig, register_configs  # noqa: E402
from pipeline.run import JobError, run  # noqa: E402

USAGE = "python -m pipeline output_dir=<dir> [inputs='[<path, glob or directory>, ...]'] [key=value ...]"

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://pipeline.conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    config: PipelineConfig
    config, resolved = config_or_exit(cfg, USAGE)  # plain dataclasses: picklable for Beam workers
    configure_logging(config.log_level)
    logging.getLogger(__name__).debug("resolved config: %s", resolved)
    with exit_on(JobError, code=1):
        run(config, resolved)


if __name__ == "__main__":
    sys.exit(main())
