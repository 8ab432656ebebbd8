"""python -m training data_dir=<shards> output_dir=<dir> [overrides]  (alone, or under torchrun / deepspeed)."""

import os
import re
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline.cli import exit_with, user_error
from training.config import ConfigError, register_configs, to_train_config

USAGE = "python -m training data_dir=<shards> output_dir=<dir> [group=option ...] [key=value ...]"

register_configs()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from training.data import DataContractError
    from training.trainer import train

    try:
        train_cfg, resolved = to_train_config(cfg), OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - anything that is not a user error is re-raised
        message = user_error(e, USAGE)
        if message is None:
            raise
        exit_with(message)
    # output_dir itself in a single run, output_dir/<job number> in a multirun sweep (training/conf/train.yaml)
    train_cfg.output_dir = resolved["output_dir"] = HydraConfig.get().runtime.output_dir
    try:
        code = train(train_cfg, resolved)
    except (ConfigError, DataContractError) as e:  # what to change, without a traceback
        exit_with(str(e))
    if code:
        sys.exit(code)  # returning keeps a multirun sweep going with its next job


def take_launcher_local_rank(argv: list[str]) -> list[str]:
    """The deepspeed launcher appends ``--local_rank=N`` (older ones ``--local_rank N``), which Hydra
    would reject: move it to LOCAL_RANK, where torchrun puts it, and hand Hydra the rest."""
    out, i = [], 0
    while i < len(argv):
        m = re.fullmatch(r"--local[_-]rank(?:=(\d+))?", argv[i])
        if m:
            value = m.group(1)
            if value is None and i + 1 < len(argv):
                i += 1
                value = argv[i]
            os.environ.setdefault("LOCAL_RANK", value)
        else:
            out.append(argv[i])
        i += 1
    return out


if __name__ == "__main__":
    from training.distributed import shutdown

    sys.argv = [sys.argv[0]] + take_launcher_local_rank(sys.argv[1:])
    try:
        main()
    finally:
        shutdown()  # once, after every job of a sweep: DeepSpeed cannot re-create the group
