"""The package as a cluster worker or a container gets it: built into a wheel, installed (not
editable) into a fresh virtual environment, run from outside the repository. Both CLIs must find
their Hydra configs there (they travel inside the packages, ``pipeline/conf`` and ``training/conf``)."""

import os
import shutil
import subprocess
import sys
import sysconfig

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "outputs", "multirun", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache")


def test_a_wheel_installed_in_a_fresh_venv_composes_both_configs(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(source)], check=True, timeout=300)
    (wheel,) = wheels.glob("bert_pretrain-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # The project's dependencies come from this interpreter's site-packages, added as a plain path:
    # the editable install's own .pth / finder there is not processed, so only the wheel provides
    # `pipeline` and `training`.
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300)

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the venv's own paths
    where = subprocess.run([python, "-c", "import pipeline, training; print(pipeline.__file__, training.__file__)"],
                           cwd=run_dir, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert all(path.startswith(purelib) for path in where), where  # the installed copy, not the repository

    job = subprocess.run([python, "-m", "pipeline", "--cfg", "job", "output_dir=out", "instances=phase2"],
                         cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    assert "max_seq_length: 512" in job.stdout and "output_dir: out" in job.stdout
    trainer = subprocess.run([python, "-m", "training", "--cfg", "job", "data_dir=shards", "output_dir=run",
                              "experiment=cpu_smoke"], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert trainer.returncode == 0, trainer.stderr
    assert "hidden_size: 256" in trainer.stdout and "data_dir: shards" in trainer.stdout  # model=mini
