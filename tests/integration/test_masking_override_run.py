"""A real trainer run at 30% masking (data.masking.masked_lm_prob=0.3) on shards the data job made
with BERT's 15% (masking=dynamic): it trains, evaluates, and records the override with its checkpoint.

Runtimes (2 cores): shards ~20 s, the run ~30 s."""

import json
import math
import os

import pytest

from conftest import IN_MEMORY, run_job
from launch_helpers import read_steps, run, single_process_command
from training import checkpoint as ckpt

SMOKE = ("experiment=cpu_smoke", "model=tiny", "optim.lr=3e-3", "trainer.export_hf=false", "trainer.eval_steps=2")
STEPS = 6


@pytest.fixture(scope="module")
def dynamic_shards(tmp_path_factory):
    """Unmasked examples (masking=dynamic at the job's 15%), no sentence-pair task, length 64, a 2000-id
    vocabulary, 5% held out."""
    out = tmp_path_factory.mktemp("dynamic_shards")
    manifest = run_job(
        out,
        "seed=3",
        "masking=dynamic",
        "instances=none",
        "tokenizer.vocab_size=2000",
        "instances.max_seq_length=64",
        "instances.eval_fraction=0.05",
        *IN_MEMORY,
    )
    assert manifest.masking.mode == "dynamic" and manifest.masking.masked_lm_prob == 0.15
    return str(out)


def test_a_30_percent_run_on_15_percent_dynamic_shards_trains_and_evaluates(dynamic_shards, tmp_path):
    out = tmp_path / "run"
    result = run(
        single_process_command(
            *SMOKE,
            f"data_dir={dynamic_shards}",
            f"output_dir={out}",
            "data.masking.masked_lm_prob=0.3",
            f"trainer.max_steps={STEPS}",
            "trainer.eval_every=3",
            f"trainer.checkpoint_every={STEPS}",
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    # the rule the run trains with, said once at start (P of 30% at these shards' length 64: 20)
    said = result.stdout + result.stderr
    assert said.count("masking: dynamic, training 30% of tokens, at most 20 per example") == 1, said[-3000:]
    steps = read_steps(out)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert all(math.isfinite(s["loss"]) and math.isfinite(s["mlm_loss"]) for s in steps)
    with open(os.path.join(out, "evals.jsonl")) as f:
        evals = [json.loads(line) for line in f]
    assert [e["step"] for e in evals] == [3, STEPS] and all(math.isfinite(e["eval/mlm_loss"]) for e in evals)
    # the override is part of the run's record: a resume at another rate is refused (tests/unit/test_masking_override.py)
    checkpoints = os.path.join(out, ckpt.CHECKPOINTS_SUBDIR)
    record = ckpt.read_run_record(checkpoints, ckpt.latest_complete(checkpoints))
    assert record["config"]["data"]["masking"]["masked_lm_prob"] == 0.3
