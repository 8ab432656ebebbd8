"""Start the trainer as a subprocess the way users do, and read what it wrote.

Also runnable as ``python tests/launch_helpers.py <training overrides>``: the trainer with a
fault injected for tests -- the loss of the forward calls listed in ``INJECT_NAN_AT_CALLS``
(comma-separated, 1-based, training-mode calls only) is replaced by NaN, on every rank or only
on rank ``INJECT_NAN_RANK`` if set. Under torchrun: ``torchrun ... tests/launch_helpers.py ...``.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trainer_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a lone process must not inherit a launcher's environment
    return env


def fault_injecting_command(*overrides: str, nproc: int = 1) -> list[str]:
    """The trainer under this module's NaN injection (see the module docstring)."""
    script = os.path.join(REPO, "tests", "launch_helpers.py")
    if nproc == 1:
        return [sys.executable, script, *overrides]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script,
            *overrides]


def single_process_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "training", *overrides]


def torchrun_command(nproc: int, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "training", *overrides]


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=trainer_env(), capture_output=True, text=True, timeout=timeout)


def read_steps(output_dir) -> list[dict]:
    """The per-step records of ``output_dir/steps.jsonl``."""
    with open(os.path.join(output_dir, "steps.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _run_with_injected_nan() -> None:
    import torch

    from training import model as model_module

    calls = {int(c) for c in os.environ.get("INJECT_NAN_AT_CALLS", "").split(",") if c}
    only_rank = os.environ.get("INJECT_NAN_RANK")
    if only_rank is not None and only_rank != os.environ.get("RANK", "0"):
        calls = set()
    original = model_module.BertForPreTraining.forward
    count = [0]

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            count[0] += 1
            if count[0] in calls:
                out.loss = out.loss * torch.tensor(float("nan"))
        return out

    model_module.BertForPreTraining.forward = forward
    sys.argv = ["training", *sys.argv[1:]]
    sys.path.insert(0, REPO)
    runpy.run_path(os.path.join(REPO, "training", "__main__.py"), run_name="__main__")


if __name__ == "__main__":
    _run_with_injected_nan()
