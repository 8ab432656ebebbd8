"""python -m training.finetune task=<preset> data_dir=<task files> model_dir=<HF BERT> output_dir=<dir> [overrides]"""

from importlib import resources

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline.cli import config_or_exit, exit_on
from training.config import ConfigError
from training.finetune.config import register_configs, to_finetune_config

USAGE = (
    "python -m training.finetune task=<preset> data_dir=<task files> model_dir=<HF BERT dir> "
    "output_dir=<dir> [key=value ...]"
)
# Fine-tuning's own configs (conf/finetune: finetune.yaml, the task group), then the trainer's
# (conf/train), for the logger group (finetune.yaml's hydra.searchpath): kept apart so the trainer's
# help lists no task presets. Both are packages (pyproject.toml maps conf/ onto them).
CONF_PACKAGES = ("training.finetune.conf", "training.conf")


def presets(group: str) -> str:
    """The options of a config group, for the help text (``${finetune_presets:task}``)."""
    names = set()
    for package in CONF_PACKAGES:
        folder = resources.files(package) / group
        if folder.is_dir():
            names.update(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))
    return ", ".join(sorted(names))


register_configs()
OmegaConf.register_new_resolver("finetune_presets", presets, replace=True)


@hydra.main(config_path="pkg://training.finetune.conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from training.finetune.kinds import BadInputError
    from training.finetune.loop import run

    finetune_cfg, resolved = config_or_exit(cfg, USAGE, to_finetune_config)
    # output_dir itself in a single run, output_dir/<job number> in a multirun sweep (conf/finetune.yaml)
    hydra_cfg = HydraConfig.get()
    finetune_cfg.output_dir = resolved["output_dir"] = hydra_cfg.runtime.output_dir
    with exit_on(ConfigError, BadInputError):  # what to change, without a traceback
        return run(finetune_cfg, resolved, overrides=list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    main()
