"""DeepSpeed engines built from our config (training/deepspeed_config.py), on CPU, at every ZeRO stage:
no throughput timer (it synchronises the device twice per micro batch), gradients accumulated and
reduced in fp32 under bf16, reduction overlapped with backward in buckets sized to the model where
the optimizer reduces in buckets."""

import json
import subprocess
import sys

import pytest

from launch_helpers import one_rank_env
from paths import REPO

_PROBE = r"""
import json, os, sys
import torch, deepspeed
from deepspeed.utils import safe_get_full_fp32_param
from training.config import DataConfig, EngineConfig, OptimConfig, TrainerConfig
from training.deepspeed_config import build_deepspeed_config

deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)

class Dot(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 1, bias=False)  # a matmul: autocast runs it in bf16
        torch.nn.init.zeros_(self.lin.weight)
        self.output_dtype = None
    def forward(self, x):  # gradient wrt the weight: x
        y = self.lin(x.to(self.lin.weight.dtype))
        self.output_dtype = str(y.dtype)
        return y.float().sum()

def deepspeed_bf16_default(config):
    # DeepSpeed's own bf16: bf16 weights, gradients summed and reduced in bf16
    for key in ("torch_autocast", "communication_data_type"):
        config.pop(key, None)
    return dict(config, bf16={"enabled": True}, data_types={"grad_accum_dtype": "bf16"})

out = {}
for stage in (0, 1, 2, 3):
    for variant in ("bf16", "fp32", "bf16-deepspeed-default"):
        precision = variant.split("-")[0]
        config = build_deepspeed_config(EngineConfig(zero_stage=stage, precision=precision),
                                        TrainerConfig(global_batch_size=8), DataConfig(micro_batch_size=1),
                                        OptimConfig(), 1, 64)
        config["gradient_clipping"] = 0.0
        config["zero_allow_untested_optimizer"] = True
        if variant == "bf16-deepspeed-default":
            config = deepspeed_bf16_default(config)
        model = Dot()
        engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), config=config)
        for i in range(8):
            x = torch.full((64,), 1.0 if i == 0 else 2.0**-10)  # exact in bf16: only the sum can round
            engine.backward(engine(x))
            engine.step()  # steps at the 8th: SGD with lr 1 from 0 leaves minus the averaged gradient
        weight = engine.module.lin.weight
        master = safe_get_full_fp32_param(weight)  # None at stage 0: the weights are the optimizer's
        g = -(weight if master is None else master).detach().float()
        out[f"{stage}-{variant}"] = {
            "grad": float(g.mean()), "dtypes": [str(t) for t in engine.get_data_types()],
            "weight_dtype": str(weight.dtype), "output_dtype": model.output_dtype,
            "optimizer": type(engine.optimizer).__name__,
            "optimizer_overlaps": getattr(engine.optimizer, "overlap_comm", None),
            "reduce_dtype": str(engine.communication_data_type), "autocast": engine.torch_autocast_enabled(),
            "timer": engine.tput_timer.config.enabled, "overlap": engine.zero_overlap_comm(),
            "bucket": engine.zero_reduce_bucket_size()}
print("RESULT " + json.dumps(out))
"""

# (1 + 7 x 2^-10) / 8 micro batches: what fp32 accumulation gives, exactly (the engine scales each
# micro batch's loss by 1/8). In bf16 the seven small terms round away at 0.125 (8 bits of mantissa:
# 0.125 + 2^-13 is 0.125), off by 7e-3; one bf16 rounding of the fp32 sum (a reduction in bf16) is
# off by 1e-3.
EXPECTED = (1.0 + 7 * 2.0**-10) / 8
TOLERANCE = 1e-6  # relative


def off_by(grad: float) -> float:
    return abs(grad - EXPECTED) / EXPECTED


@pytest.fixture(scope="module")
def engines():
    """The probe in a subprocess (its process group and DeepSpeed's globals stay out of this one)."""
    env = one_rank_env()
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (line,) = [out for out in done.stdout.splitlines() if out.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_bf16_gradients_accumulate_in_fp32(engines, stage):
    ours, fp32, bf16 = (engines[f"{stage}-{v}"] for v in ("bf16", "fp32", "bf16-deepspeed-default"))
    assert off_by(ours["grad"]) < TOLERANCE and off_by(fp32["grad"]) < TOLERANCE
    # The check could fail: the same run with DeepSpeed's bf16 defaults is off.
    assert bf16["dtypes"] == ["torch.bfloat16", "torch.bfloat16"]
    assert off_by(bf16["grad"]) > 5e-3


def test_stage0_bf16_keeps_fp32_weights_and_computes_in_bf16(engines):
    """DeepSpeed 0.19 refuses fp32 accumulation with bf16 weights at stage 0: torch autocast instead."""
    ours = engines["0-bf16"]
    assert ours["autocast"] is True and ours["dtypes"] == ["torch.float32", "torch.float32"]
    assert ours["weight_dtype"] == "torch.float32" and ours["output_dtype"] == "torch.bfloat16"
    assert ours["optimizer"] == "SGD"  # the optimizer given, unwrapped: LAMB keeps its per-tensor trust ratio
    assert engines["0-fp32"]["output_dtype"] == "torch.float32"


@pytest.mark.parametrize(
    "stage, optimizer", [(1, "BF16_Optimizer"), (2, "DeepSpeedZeroOptimizer"), (3, "DeepSpeedZeroOptimizer_Stage3")]
)
def test_zero_bf16_keeps_bf16_weights_and_an_fp32_accumulator(engines, stage, optimizer):
    ours = engines[f"{stage}-bf16"]
    assert ours["autocast"] is False and ours["dtypes"] == ["torch.bfloat16", "torch.float32"]
    assert ours["weight_dtype"] == ours["output_dtype"] == "torch.bfloat16"
    assert ours["optimizer"] == optimizer


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_gradients_are_reduced_in_fp32(engines, stage):
    """Under bf16 DeepSpeed reduces in bf16 unless told: the ranks' gradients would be summed in bf16."""
    assert engines[f"{stage}-bf16"]["reduce_dtype"] == engines[f"{stage}-fp32"]["reduce_dtype"] == "torch.float32"
    assert engines[f"{stage}-bf16-deepspeed-default"]["reduce_dtype"] == "torch.bfloat16"


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_no_throughput_timer_and_overlapped_reduction_in_model_sized_buckets(engines, stage, precision):
    engine = engines[f"{stage}-{precision}"]
    assert engine["timer"] is False
    if stage == 0:
        return  # plain data parallel: DeepSpeed all-reduces after backward, no ZeRO knobs
    assert engine["overlap"] is True and engine["bucket"] == 1 << 20  # the 64-parameter probe: the smallest bucket
    if engine["optimizer"] == "BF16_Optimizer":
        # ZeRO-1 under bf16: one all-reduce of the fp32 sums per step, after backward; no buckets of its own
        assert (stage, precision, engine["optimizer_overlaps"]) == (1, "bf16", None)
    elif stage < 3:  # (ZeRO-3's optimizer keeps only the stream the setting chose, none on CPU)
        assert engine["optimizer"] == "DeepSpeedZeroOptimizer" and engine["optimizer_overlaps"] is True
