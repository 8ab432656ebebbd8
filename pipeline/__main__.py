"""python -m pipeline output_dir=<dir> [inputs='[<path, glob or directory>, ...]'] [overrides]"""

import logging
import sys

from pipeline.cli import configure_logging, exit_with, user_error

configure_logging("WARNING")  # before Beam is imported: its modules warn as they load

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pipeline.config import PipelineConfig, register_configs  # noqa: E402
from pipeline.run import JobError, run  # noqa: E402

USAGE = "python -m pipeline output_dir=<dir> [inputs='[<path, glob or directory>, ...]'] [key=value ...]"

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    try:
        config: PipelineConfig = OmegaConf.to_object(cfg)  # plain dataclasses: picklable for Beam workers
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - anything that is not a user error is re-raised
        message = user_error(e, USAGE)
        if message is None:
            raise
        exit_with(message)
    configure_logging(config.log_level)
    logging.getLogger(__name__).debug("resolved config: %s", resolved)
    try:
        run(config, resolved)
    except JobError as e:
        exit_with(str(e), code=1)


if __name__ == "__main__":
    sys.exit(main())
