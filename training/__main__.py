"""python -m training data_dir=<shards> output_dir=<dir> [overrides]  (alone, or under torchrun / deepspeed)."""

import json
import os
import re
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pipeline.cli import config_or_exit, exit_on
from training.config import ConfigError, register_configs, to_train_config

USAGE = "python -m training data_dir=<shards> output_dir=<dir> [group=option ...] [key=value ...]"
EXIT_CONFIG_ERROR = 2
"""The exit code of a configuration or data-contract error (pipeline.cli's ``config_or_exit``, ``exit_on``)."""
CONFIG_ERROR_ENV = "BERT_CONFIG_ERROR_FILE"
"""Set by a launch recipe (infra/k8s/base/train_node.py): the file a rank writes before it exits
EXIT_CONFIG_ERROR. torchrun exits 1 whatever its workers' codes; the recipe reads this file to pass
the 2 on, which a Kubernetes Job's podFailurePolicy takes for a permanent failure (no retries)."""

register_configs()


@hydra.main(config_path="pkg://training.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from training.data import DataContractError
    from training.trainer import train

    train_cfg, resolved = config_or_exit(cfg, USAGE, to_train_config)
    # output_dir itself in a single run, output_dir/<job number> in a multirun sweep (conf/train/train.yaml)
    train_cfg.output_dir = resolved["output_dir"] = HydraConfig.get().runtime.output_dir
    with exit_on(ConfigError, DataContractError):  # what to change, without a traceback
        code = train(train_cfg, resolved)
    if code:
        sys.exit(code)  # returning keeps a multirun sweep going with its next job


def mark_config_error(code) -> None:
    """Where $BERT_CONFIG_ERROR_FILE is set and this process exits ``code`` = EXIT_CONFIG_ERROR:
    {"rank": RANK} into that file (any rank of the node; the last one's stays)."""
    path = os.environ.get(CONFIG_ERROR_ENV)
    if not path or code != EXIT_CONFIG_ERROR:
        return
    with open(f"{path}.{os.getpid()}.tmp", "w") as f:
        json.dump({"rank": os.environ.get("RANK")}, f)
    os.replace(f"{path}.{os.getpid()}.tmp", path)


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
    except SystemExit as e:  # the error's own line is already on stderr
        mark_config_error(e.code)
        raise
    finally:
        shutdown()  # once, after every job of a sweep: DeepSpeed cannot re-create the group
