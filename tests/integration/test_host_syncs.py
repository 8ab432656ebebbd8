"""Host syncs of the training step, counted on CPU (tests/sync_probe.py records every host read of
tensor data, which on a GPU waits for the device): two ranks over gloo, 4 micro batches a step.

Between optimizer steps nothing is read: no read in any forward, backward or non-boundary
``engine.step``, and none of the trainer's own outside the reads of its statistics at logging
steps, saves and evaluation. What remains per optimizer step is DeepSpeed's check of the gradient
norm at the boundary (it decides whether the step is applied; the trainer's non-finite rule rests
on it), counted here so a change shows. Over both architectures (training.models): BERT on NSP
shards, the ModernBERT-style encoder on instances=none shards, padded and unpadded.
"""

import collections
import json
import os
import subprocess
import sys

import pytest

from launch_helpers import REPO, trainer_env
from test_modern_trainer import TINY_MODERN, modern_shards  # noqa: F401 (a fixture)
from test_trainer import overrides

STEPS, LOG_EVERY, ACCUMULATION = 6, 3, 4


def probe_command(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        os.path.join(REPO, "tests", "sync_probe.py"),
        *args,
    ]


MODERN = {"modern": TINY_MODERN, "modern-unpad": (*TINY_MODERN, "trainer.unpad=true")}
"""Overrides of the modern encoder's runs (on modern_shards), padded and unpadded."""


@pytest.fixture(
    scope="module",
    params=["zero2-fp32", "zero1-bf16", "zero0-bf16", "modern-zero2-fp32", "modern-unpad-zero1-bf16"],
)
def probed_run(request, trainer_shards, modern_shards, tmp_path_factory):  # noqa: F811
    """ZeRO-2 with DeepSpeed's ZeRO optimizer; ZeRO-1 under bf16 with its BF16 optimizer; ZeRO-0
    under torch autocast with our optimizer wrapped in optim.SkipNonFiniteStep; the modern encoder
    under the first two (unpadded under bf16)."""
    *model, stage, precision = request.param.split("-")
    model_overrides = MODERN.get("-".join(model), ())
    out = tmp_path_factory.mktemp(f"syncs_{request.param}")
    probe_dir = out / "probe"
    probe_dir.mkdir()
    command = probe_command(
        *overrides(
            modern_shards if model else trainer_shards,
            out / "run",
            *model_overrides,
            f"deepspeed={stage}",
            f"deepspeed.precision={precision}",
            f"trainer.max_steps={STEPS}",
            f"trainer.log_every={LOG_EVERY}",
            f"trainer.global_batch_size={4 * ACCUMULATION * 2}",  # micro batch 4 x 4 x 2 ranks
            "trainer.eval_every=0",
            "trainer.checkpoint_every=1000",
        )
    )
    env = {**trainer_env(), "SYNC_PROBE_DIR": str(probe_dir)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    records = {}
    for rank in (0, 1):
        with open(probe_dir / f"rank{rank}.jsonl") as f:
            records[rank] = [json.loads(line) for line in f]
    return request.param, records


def describe(records) -> str:
    counts = collections.Counter((r["name"], r["boundary"], r["who"], r["what"], r["where"]) for r in records)
    return "\n".join(f"{n} x {key}" for key, n in counts.most_common(20))


def test_nothing_is_read_between_optimizer_steps(probed_run):
    stage, records = probed_run
    for rank, rank_records in records.items():
        in_window = [
            r
            for r in rank_records
            if r["step"] > 0 and (r["name"] in ("forward", "backward") or (r["name"] == "step" and not r["boundary"]))
        ]
        assert not in_window, f"{stage} rank {rank}: host reads inside the accumulation window:\n{describe(in_window)}"
        ours = [
            r for r in rank_records if r["who"] == "ours" and r["step"] > 0 and r["name"] in ("train_step", "other")
        ]
        assert not ours, (
            f"{stage} rank {rank}: the trainer read the device outside its logging reads:\n{describe(ours)}"
        )


def test_the_statistics_are_read_once_per_logging_interval(probed_run):
    stage, records = probed_run
    flush = [r for r in records[0] if r["name"] == "flush" and r["who"] == "ours"]
    copies = [r for r in flush if r["what"] in ("Tensor.cpu", "Tensor.tolist")]
    # One copy of all the pending steps' statistics to the host per read, at steps 3 and 6 (the
    # end's flush and the final save find nothing pending); what follows reads that host copy.
    assert len(copies) == STEPS // LOG_EVERY, describe(flush)


def test_the_optimizer_checks_the_gradients_once_per_step_at_the_boundary(probed_run):
    stage, records = probed_run
    at_boundary = [r for r in records[0] if r["name"] == "step" and r["boundary"]]
    per_step = collections.Counter(r["step"] for r in at_boundary)
    assert sorted(per_step) == list(range(1, STEPS + 1)), describe(at_boundary)
    print(f"{stage}: host reads per optimizer step at the boundary: {dict(per_step)}\n{describe(at_boundary)}")
