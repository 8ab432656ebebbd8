"""python -m training data_dir=<shards> output_dir=<dir> [overrides]  (alone, or under torchrun / deepspeed)."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from training.config import ConfigError, register_configs, to_train_config

register_configs()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from training.data import DataContractError
    from training.trainer import train

    train_cfg, resolved = to_train_config(cfg), OmegaConf.to_container(cfg, resolve=True)
    # output_dir itself in a single run, output_dir/<job number> in a multirun sweep (conf/train.yaml)
    train_cfg.output_dir = resolved["output_dir"] = HydraConfig.get().runtime.output_dir
    try:
        code = train(train_cfg, resolved)
    except (ConfigError, DataContractError) as e:  # what to change, without a traceback
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    if code:
        sys.exit(code)  # returning keeps a multirun sweep going with its next job


if __name__ == "__main__":
    from training.distributed import shutdown

    try:
        main()
    finally:
        shutdown()  # once, after every job of a sweep: DeepSpeed cannot re-create the group
