"""The layering the code promises: the shard contract and the modules both stages share (masking,
seeding) import neither Beam nor torch, so the trainer reads shards without Beam and the data job's
workers need no torch; the trainer, its data loader, the export and the fine-tuning loop import no
Beam; the model imports torch alone. Each probe imports its modules in a fresh interpreter, which then
lists the heavy packages loaded (a package absent after importing a group is absent after each one)."""

import json
import subprocess
import sys

from paths import REPO

BEAM, TORCH, DEEPSPEED = "apache_beam", "torch", "deepspeed"
SHARED = ["pipeline.contract", "pipeline.masking", "pipeline.seeding"]
TRAINING_SIDE = ["training.trainer", "training.data", "training.export", "training.finetune.loop", "training.evaluate"]


def heavy_packages_loaded_by(*modules: str) -> set[str]:
    """The top-level packages among Beam, torch and DeepSpeed that importing ``modules`` loads."""
    probe = (
        f"import importlib, json, sys\nfor m in {list(modules)!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {{{BEAM!r}, {TORCH!r}, {DEEPSPEED!r}}})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_shared_modules_import_neither_beam_nor_torch():
    assert heavy_packages_loaded_by(*SHARED) == set()


def test_training_side_imports_no_beam():
    assert BEAM not in heavy_packages_loaded_by(*TRAINING_SIDE)


def test_the_model_imports_torch_alone():
    """A model file imports torch and takes one config dataclass: no DeepSpeed, no Beam."""
    assert heavy_packages_loaded_by("training.model") == {TORCH}


def test_the_probe_sees_what_an_import_loads():
    """The check itself can fail: the job's transforms load Beam (and the model torch, above)."""
    assert BEAM in heavy_packages_loaded_by("pipeline.transforms")
