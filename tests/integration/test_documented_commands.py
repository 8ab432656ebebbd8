"""The commands the docs give to copy and run, run as written: in a scratch directory, through bash,
with this interpreter's python first on PATH. Today: continued pre-training from the published
MiniLM (docs/trainer.md), whose path `python -m training.encoders` prints.

Runtime (2 busy cores): the data job on the sample with MiniLM's vocabulary ~1 min, 20 CPU steps of
MiniLM ~1 min.
"""

import os
import re
import subprocess
import sys

import yaml

from launch_helpers import read_steps, trainer_env
from paths import REPO, minilm_dir

TRAINER_DOC = os.path.join(REPO, "docs", "trainer.md")
CONTINUED = "Continued pre-training from a published BERT"


def bash_blocks(doc: str, heading: str) -> list[str]:
    """The ```bash blocks of the section ``## <heading>`` of ``doc``, in order."""
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"{doc} has no section '## {heading}'"
    return re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)


def run_as_written(script: str, cwd, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = trainer_env()
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_continued_pretraining_from_minilm_runs_as_the_docs_write_it(tmp_path):
    first_try, on_gpus = bash_blocks(TRAINER_DOC, CONTINUED)
    result = run_as_written(first_try, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    log = result.stdout + result.stderr
    assert f"trainer.init_from={minilm_dir()}: weights from model.safetensors" in log
    steps = read_steps(tmp_path / "out" / "cont")
    assert len(steps) == 20 and max(s["lr"] for s in steps) <= 3e-5  # the low rate the text asks for
    assert os.path.isfile(tmp_path / "out" / "cont" / "hf" / "model.safetensors")

    # The GPU command composes as written (Hydra prints its config and stops), after the first block's MINILM=.
    minilm_line = first_try.splitlines()[0]
    assert minilm_line.startswith("MINILM=")
    composed = run_as_written(f"{minilm_line}\n{on_gpus.strip()} --cfg job", tmp_path, timeout=300)
    assert composed.returncode == 0, composed.stderr[-3000:]
    cfg = yaml.safe_load(composed.stdout)
    assert cfg["trainer"]["init_from"] == minilm_dir() and cfg["optim"]["lr"] == 3e-5
    assert (cfg["model"]["hidden_size"], cfg["model"]["num_attention_heads"]) == (384, 12)
    assert (cfg["logger"]["backend"], cfg["logger"]["mode"]) == ("wandb", "offline")  # no login needed


def test_encoders_prints_the_packaged_minilm_directory(tmp_path):
    listing = run_as_written("python -m training.encoders", tmp_path, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith(f"minilm\t{minilm_dir()}\tall-MiniLM-L6-v2"), listing.stdout
    alone = run_as_written("python -m training.encoders minilm", tmp_path, timeout=120)
    assert alone.stdout == minilm_dir() + "\n" and os.path.isfile(os.path.join(alone.stdout.strip(), "config.json"))
