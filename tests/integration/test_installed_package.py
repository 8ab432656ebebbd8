"""The package as a cluster worker or a container gets it: built into a wheel, installed (not
editable) into a fresh virtual environment, run from outside the repository. Both CLIs must find
their Hydra configs there: conf/ (one subtree per command) travels as the packages pyproject.toml maps
it onto (pipeline.conf, training.conf, training.finetune.conf, training.evaluate_conf)."""

import subprocess

from installed_venv import build_installed_venv


def test_a_wheel_installed_in_a_fresh_venv_composes_every_commands_config(tmp_path):
    venv = build_installed_venv(tmp_path)  # checks that `pipeline` and `training` are the installed copies
    run_dir = tmp_path / "elsewhere"
    env = venv.env()
    job = subprocess.run(
        [venv.python, "-m", "pipeline", "--cfg", "job", "output_dir=out", "instances=phase2"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.returncode == 0, job.stderr
    assert "max_seq_length: 512" in job.stdout and "output_dir: out" in job.stdout
    trainer = subprocess.run(
        [venv.python, "-m", "training", "--cfg", "job", "data_dir=shards", "output_dir=run", "experiment=cpu_smoke"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trainer.returncode == 0, trainer.stderr
    assert "hidden_size: 256" in trainer.stdout and "data_dir: shards" in trainer.stdout  # model=mini
    finetune = subprocess.run(
        [
            venv.python,
            "-m",
            "training.finetune",
            "--cfg",
            "job",
            "task=mrpc",
            "data_dir=glue",
            "model_dir=hf",
            "output_dir=ft",
            "logger=wandb_offline",
        ],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finetune.returncode == 0, finetune.stderr
    assert "name: mrpc" in finetune.stdout and "mode: offline" in finetune.stdout  # task and the trainer's logger
    evaluate = subprocess.run(
        [venv.python, "-m", "training.evaluate", "--cfg", "job", "model_dir=hf"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert "task: lee" in evaluate.stdout and "model_dir: hf" in evaluate.stdout
