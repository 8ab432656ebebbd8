"""python -m training.finetune task=<preset> data_dir=<task files> model_dir=<HF BERT> output_dir=<dir> [overrides]"""

import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline.cli import exit_with, user_error
from training.config import ConfigError
from training.finetune.config import register_configs, to_finetune_config

USAGE = ("python -m training.finetune task=<preset> data_dir=<task files> model_dir=<HF BERT dir> "
         "output_dir=<dir> [key=value ...]")
# Fine-tuning's own configs (finetune.yaml, the task group), then the trainer's, for the logger
# group (finetune.yaml's hydra.searchpath): kept apart so the trainer's help lists no task presets.
CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf")
TRAINING_CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def presets(group: str) -> str:
    """The options of a config group, for the help text (``${finetune_presets:task}``)."""
    return ", ".join(sorted({f[:-5] for d in (CONF_DIR, TRAINING_CONF_DIR) if os.path.isdir(os.path.join(d, group))
                             for f in os.listdir(os.path.join(d, group)) if f.endswith(".yaml")}))


register_configs()
OmegaConf.register_new_resolver("finetune_presets", presets, replace=True)


@hydra.main(config_path="conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from training.finetune.kinds import BadInputError
    from training.finetune.loop import run

    try:
        finetune_cfg, resolved = to_finetune_config(cfg), OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - anything that is not a user error is re-raised
        message = user_error(e, USAGE)
        if message is None:
            raise
        exit_with(message)
    # output_dir itself in a single run, output_dir/<job number> in a multirun sweep (conf/finetune.yaml)
    hydra_cfg = HydraConfig.get()
    finetune_cfg.output_dir = resolved["output_dir"] = hydra_cfg.runtime.output_dir
    try:
        return run(finetune_cfg, resolved, overrides=list(hydra_cfg.overrides.task))
    except (ConfigError, BadInputError) as e:  # what to change, without a traceback
        exit_with(str(e))


if __name__ == "__main__":
    main()
