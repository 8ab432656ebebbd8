"""The run's own record in output_dir (rank 0), whatever the tracker, and its console lines.

    steps.jsonl   one line per optimizer step: {"step", <statistics>, "lr", "samples_consumed",
                  ["example_ids"], ["resumed_from"]}, written when the step's statistics are read
    evals.jsonl   one line per evaluation: {"step", "eval/<statistic>", ..., "eval/batches_per_rank"}

A resumed run first repairs steps.jsonl: a crash may leave a half-written last line
(``drop_torn_steps_line``), and a killed run leaves lines of steps after its last checkpoint, which
the resumed run trains again (``truncate_steps``). ``training.report`` reads both files.

Console lines (progress, evaluations, checkpoints, resumes) go to the ``training.console`` logger:
bare lines on stdout (``show_console``), so launch recipes and tests can match their starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Optional

log = logging.getLogger(__name__)
console = logging.getLogger("training.console")
"""Rank 0's lines for whoever watches the run: one message per line, no prefix."""

STEPS_FILE = "steps.jsonl"
EVALS_FILE = "evals.jsonl"  # rank 0: one line per evaluation, {"step": ..., "eval/...": ...}, whatever the logger
LOSS = "loss"
"""The statistic the trainer adds for every objective: the backpropagated loss, one per micro batch."""
STEP_FIELDS = ("step", "lr", "samples_consumed", "example_ids", "resumed_from")
"""The keys of a steps.jsonl line that are not the objective's statistics."""
EVAL_PREFIX = "eval/"
EVAL_BATCHES = EVAL_PREFIX + "batches_per_rank"
EVAL_FIELDS = ("step", EVAL_BATCHES)
"""The keys of an evals.jsonl line that are not ``eval/<statistic>``."""


def show_console() -> None:
    """Send ``console``'s lines to stdout as they are (once per process; Hydra's logging config
    formats the other loggers)."""
    if console.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    console.addHandler(handler)
    console.setLevel(logging.INFO)
    console.propagate = False


def drop_torn_steps_line(output_dir: str) -> None:
    """Rank 0, before a run starts: cut a last steps.jsonl line that a crash left half written
    (no newline, or not JSON), so the resume's truncation can read every line."""
    path = os.path.join(output_dir, STEPS_FILE)
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        data = f.read()
    lines = data.splitlines(keepends=True)
    if not lines:
        return
    last = lines[-1]
    try:
        torn = not last.endswith(b"\n") or (last.strip() and not isinstance(json.loads(last), dict))
    except ValueError:
        torn = True
    if torn:
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(last))
        log.warning("dropped a half-written last line of %s (%d bytes) left by a crash", path, len(last))


def truncate_steps(output_dir: str, step: int) -> Optional[float]:
    """Rank 0, on a resume from ``step`` (0: a fresh start): drop the steps.jsonl lines a killed run
    wrote after its last checkpoint (they will be trained again). Returns the learning rate recorded
    for ``step`` (None: no line for it)."""
    path = os.path.join(output_dir, STEPS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        keep = [(line, json.loads(line)) for line in f if line.strip()]
    keep = [(line, record) for line, record in keep if record["step"] <= step]
    with open(path, "w") as f:
        f.writelines(line for line, _ in keep)
    return next((record.get("lr") for _, record in reversed(keep) if record["step"] == step), None)


class RunLog:
    """Rank 0's steps.jsonl (open for appending for the whole run, flushed at each read of the
    statistics) and evals.jsonl (opened per evaluation)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self._steps = None

    def open(self) -> None:
        """After the resume cut steps.jsonl to the checkpoint's steps."""
        self._steps = open(os.path.join(self.output_dir, STEPS_FILE), "a")

    def write_step(self, record: dict) -> None:
        self._steps.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self._steps.flush()

    def write_eval(self, step: int, metrics: dict[str, float]) -> None:
        with open(os.path.join(self.output_dir, EVALS_FILE), "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None
