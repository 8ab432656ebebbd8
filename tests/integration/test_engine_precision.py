"""What DeepSpeed 0.19 does with a non-finite micro batch, per ZeRO stage and precision, on real
CPU engines built from our config (training/deepspeed_config.py) with a plain torch optimizer.

A window of two micro batches whose first loss is NaN, backpropagated, then the boundary step:
does DeepSpeed skip it (``engine.was_step_applied()`` False, the weights and the lr schedule
unchanged), and does the next clean window step normally? The trainer's non-finite handling is
built on this table: where DeepSpeed does not skip, the trainer has to (``optim.SkipNonFiniteStep``).
"""

import json
import subprocess
import sys

import pytest

from launch_helpers import one_rank_env
from paths import REPO

_PROBE = r"""
import json, sys
import torch, deepspeed
from deepspeed.accelerator import get_accelerator
from deepspeed.utils import safe_get_full_fp32_param
from training.config import DataConfig, EngineConfig, OptimConfig, TrainerConfig
from training.deepspeed_config import build_deepspeed_config

deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)

class Affine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)
    def forward(self, x):  # a loss per micro batch
        return self.lin(x.to(self.lin.weight.dtype)).float().pow(2).mean()

def masters(engine):
    # fp32 masters (ZeRO 1-3, bf16 optimizer), else the weights themselves (stage 0), as one vector
    out = []
    for p in engine.module.parameters():
        m = safe_get_full_fp32_param(p)
        out.append((p if m is None else m).detach().float().flatten().clone())
    return torch.cat(out)

def window(engine, nan_first):
    for i in range(2):
        loss = engine(torch.randn(8))
        engine.backward(loss * float("nan") if nan_first and i == 0 else loss)
        engine.step()

precisions = ["fp32", "bf16"] + (["fp16"] if get_accelerator().is_fp16_supported() else [])
out = {}
for stage in (0, 1, 2, 3):
    for precision in precisions:
        torch.manual_seed(0)
        model = Affine()
        # fp16: a loss scale at which this model's clean gradients do not overflow (2**16 does)
        engine_cfg = EngineConfig(zero_stage=stage, precision=precision, initial_scale_power=8)
        config = build_deepspeed_config(engine_cfg,
                                        TrainerConfig(global_batch_size=2), DataConfig(micro_batch_size=1),
                                        OptimConfig(), 1, 36)
        config["zero_allow_untested_optimizer"] = True
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2), config=config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0))
        window(engine, nan_first=False)  # optimizer state exists; a clean step is applied
        first = engine.was_step_applied()
        before, lr_steps = masters(engine), engine.lr_scheduler.last_epoch
        window(engine, nan_first=True)
        after = masters(engine)
        row = {"optimizer": type(engine.optimizer).__name__, "clean_step_applied": first,
               "nan_step_applied": engine.was_step_applied(), "weights_unchanged": bool(torch.equal(before, after)),
               "weights_finite": bool(after.isfinite().all()),
               "lr_stepped": engine.lr_scheduler.last_epoch != lr_steps, "skipped_steps": engine.skipped_steps}
        window(engine, nan_first=False)
        row["next_step_applied"] = engine.was_step_applied()
        row["finite_after_next"] = bool(masters(engine).isfinite().all())
        out[f"{stage}-{precision}"] = row
        print(f"{stage}-{precision}", row, file=sys.stderr, flush=True)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def nonfinite():
    """The probe in a subprocess (its process group and DeepSpeed's globals stay out of this one)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, env=one_rank_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (line,) = [out for out in done.stdout.splitlines() if out.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


PASSED_THROUGH = {"0-fp32", "0-bf16"}
"""Stage 0 in fp32, and in bf16 under torch autocast (fp32 weights): DeepSpeed steps the optimizer it
was given as it is, NaN gradients and all. Every other (stage, precision) skips the step."""


def test_every_stage_and_precision_was_probed(nonfinite):
    assert {key.split("-")[0] for key in nonfinite} == {"0", "1", "2", "3"}
    assert {"0-fp32", "0-bf16", "1-bf16", "3-fp32"} <= set(nonfinite)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_nan_micro_batch_skips_the_step_except_at_stage_0_without_fp16(nonfinite, stage, precision):
    key = f"{stage}-{precision}"
    if key not in nonfinite:
        pytest.skip(f"{precision} is not supported by this machine's DeepSpeed accelerator")
    row = nonfinite[key]
    assert row["clean_step_applied"] is True
    if key in PASSED_THROUGH:
        assert row["optimizer"] == "AdamW"  # the plain optimizer, passed through
        assert row["nan_step_applied"] is True and row["lr_stepped"] is True and row["skipped_steps"] == 0
        assert not row["weights_unchanged"] and not row["weights_finite"]  # NaN written into the weights
    else:
        assert row["nan_step_applied"] is False and row["skipped_steps"] == 1
        assert row["weights_unchanged"] and row["weights_finite"] and not row["lr_stepped"]
        # ... and nothing of the skipped window is left behind: the next clean one steps.
        assert row["next_step_applied"] is True and row["finite_after_next"] is True
