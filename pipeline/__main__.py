"""python -m pipeline inputs='[<path or glob>, ...]' output_dir=<dir> seed=<int> [overrides]"""

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.config import PipelineConfig, register_configs
from pipeline.run import JobError, run

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # Beam's INFO chatter drowns the summary
    config: PipelineConfig = OmegaConf.to_object(cfg)  # plain dataclasses: picklable for Beam workers
    try:
        run(config, OmegaConf.to_container(cfg, resolve=True))
    except JobError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
