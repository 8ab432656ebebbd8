"""The trainer's DeepSpeed engine on a CUDA GPU: ZeRO-2 under bf16 on one rank (NCCL), built by
``training.engine.build_engine`` from a TrainConfig, trains. Skipped without a GPU. CPU twins:
tests/integration/test_engine_precision.py (bf16 engines of every stage on CPU, fp32 accumulation)
and tests/integration/test_trainer.py::test_two_processes_loss_falls_under_zero (whole runs)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from launch_helpers import one_rank_env
from paths import REPO

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 8

_PROBE = rf"""
import json
import torch, deepspeed
from cuda_batches import collate, perturbed_model, random_examples, small_config
from training.config import DataConfig, EngineConfig, OptimConfig, TrainConfig, TrainerConfig
from training.data import model_inputs
from training.engine import build_engine

torch.cuda.set_device(0)
deepspeed.init_distributed(dist_backend="nccl", auto_mpi_discovery=False, verbose=False)
cfg = TrainConfig(
    data_dir="-",
    output_dir="-",
    data=DataConfig(micro_batch_size=16, max_seq_length=128, pad_to_max_length=True),
    optim=OptimConfig(lr=1e-3, warmup_steps=0),
    deepspeed=EngineConfig(zero_stage=2, precision="bf16"),
    trainer=TrainerConfig(max_steps={STEPS}, global_batch_size=16, init_from=None),
)
engine, accumulation = build_engine(perturbed_model(small_config(), seed=5), cfg, 1)
batch = {{k: v.cuda() for k, v in model_inputs(collate(random_examples(16, 128, 20, seed=5), 128, 20)).items()}}
losses = []
for _ in range({STEPS}):  # the same batch each step: the loss must fall
    loss = engine(**batch).loss
    engine.backward(loss)
    engine.step()
    losses.append(float(loss))
weight = next(engine.module.parameters())
print("RESULT " + json.dumps({{
    "losses": losses,
    "accumulation": accumulation,
    "stage": engine.zero_optimization_stage(),
    "dtypes": [str(t) for t in engine.get_data_types()],
    "weights": [str(weight.dtype), str(weight.device)],
}}))
"""


@pytest.fixture(scope="module")
def zero2_run() -> dict:
    """The probe in a subprocess with its own one-rank NCCL group, the GPU visible."""
    env = one_rank_env()  # CPU-only by default: give the GPU back
    env.pop("CUDA_VISIBLE_DEVICES")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    env["PYTHONPATH"] = os.pathsep.join([HERE, env["PYTHONPATH"]])
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    (line,) = [out for out in done.stdout.splitlines() if out.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


def test_zero2_bf16_engine_on_one_gpu_trains(zero2_run):
    losses = zero2_run["losses"]
    assert all(map(lambda x: x == x and abs(x) < float("inf"), losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses  # the same batch 8 times at lr 1e-3: it is learnt
    assert zero2_run["weights"] == ["torch.bfloat16", "cuda:0"]
    # bf16 weights, gradients summed in fp32 (training.deepspeed_config), no accumulation at 16 x 1 rank
    assert zero2_run["dtypes"] == ["torch.bfloat16", "torch.float32"]
    assert (zero2_run["stage"], zero2_run["accumulation"]) == (2, 1)
