"""The package as a cluster worker or a container gets it: built into a wheel, installed (not
editable) into a fresh virtual environment, run from outside the repository. Every command must find
its Hydra configs there: conf/ (one subtree per command) travels as the packages pyproject.toml maps
it onto (pipeline.conf, training.conf, training.finetune.conf, training.evaluate_conf)."""

import subprocess

import pytest

from installed_venv import build_installed_venv

# command, overrides, what its composed config must show
COMMANDS = [
    ("pipeline", ["output_dir=out", "instances=phase2"], ["max_seq_length: 512", "output_dir: out"]),
    (
        "training",
        ["data_dir=shards", "output_dir=run", "experiment=cpu_smoke"],
        ["hidden_size: 256", "data_dir: shards"],  # model=mini
    ),
    (
        "training.finetune",
        ["task=mrpc", "data_dir=glue", "model_dir=hf", "output_dir=ft", "logger=wandb_offline"],
        ["name: mrpc", "mode: offline"],  # its task group and the trainer's logger group
    ),
    ("training.evaluate", ["model_dir=hf"], ["task: lee", "model_dir: hf"]),
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("installed")
    return build_installed_venv(work), work / "elsewhere"  # checks `pipeline` and `training` are installed copies


def run_installed(installed, *args: str) -> subprocess.CompletedProcess:
    """The installed venv's python with ``args``, run from outside the repository."""
    venv, run_dir = installed
    return subprocess.run(
        [venv.python, *args], cwd=run_dir, env=venv.env(), capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("command, overrides, shown", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_an_installed_wheel_composes_every_commands_config(installed, command, overrides, shown):
    composed = run_installed(installed, "-m", command, "--cfg", "job", *overrides)
    assert composed.returncode == 0, composed.stderr
    assert all(line in composed.stdout for line in shown), composed.stdout


def test_an_installed_wheel_reads_the_model_presets_from_its_yaml(installed):
    """training.models.presets reads conf/train/model/*.yaml as the installed package's data."""
    read = run_installed(
        installed, "-c", "from training.models import presets; print(sorted(presets()), presets()['base'])"
    )
    assert read.returncode == 0, read.stderr
    assert (
        "'modern_small'" in read.stdout
        and "'hidden_size': 768" in read.stdout
        and "'architecture': 'bert'" in read.stdout
    )
