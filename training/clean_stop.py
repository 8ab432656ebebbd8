"""Stopping on a signal: SIGTERM/SIGINT set a flag, the loop saves a checkpoint at the end of the
step and returns 0; $BERT_CLEAN_STOP_FILE then tells a launch recipe that stop from a failure."""

from __future__ import annotations

import json
import os
import signal
from typing import Optional

from training import checkpoint as ckpt
from training.distributed import DistributedContext


class StopRequest:
    """SIGTERM/SIGINT handlers that only set a flag; the loop acts on it at the end of a step.
    Repeated signals change nothing: Ctrl-C under torchrun delivers SIGINT from the terminal and
    then SIGTERM from torchrun to every worker, and both must still end in a checkpoint."""

    def __init__(self):
        self.requested = False
        self.signal_name: Optional[str] = None
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name


CLEAN_STOP_ENV = "BERT_CLEAN_STOP_FILE"
"""Set by a launch recipe (infra/slurm/train.sbatch, infra/k8s/base/train_node.py): the file that each
node's local rank 0 writes once the run saved a checkpoint and stopped on a signal. torchrun exits 1
when it was signalled itself, whatever its workers did; the recipe reads this file to tell that clean
stop from a failure."""


def write_clean_stop(ctx: DistributedContext, step: int, signal_name: Optional[str], checkpoint_dir: str) -> None:
    """After the stop's checkpoint is complete on every rank: {"step", "signal", "checkpoint"} as
    JSON to $BERT_CLEAN_STOP_FILE, by each node's local rank 0 (nothing when it is not set)."""
    path = os.environ.get(CLEAN_STOP_ENV)
    if not path or ctx.local_rank != 0:
        return
    record = {"step": step, "signal": signal_name, "checkpoint": os.path.join(checkpoint_dir, ckpt.tag_for(step))}
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
