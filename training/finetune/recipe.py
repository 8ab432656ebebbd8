"""Learning rate, batch size and epochs that fit the encoder and the training set, for the ones
the config leaves null (the default; ``recipe=paper`` sets all three to the paper's).

BERT's recipe (lr 2e-5 to 5e-5, batch 32, 3 epochs) was tuned for BERT-Base on GLUE-size data.
On a small encoder or a few hundred rows it takes a handful of updates at a rate too low to move
a fresh head: the model stays at one class. Google's small-BERT release tuned each size over lr
3e-5 to 3e-4 (higher for smaller models) and more epochs; measured here (bench/README.md,
tests/integration/test_finetune.py): all-MiniLM-L6-v2 (H=384) on a 68-row task, the paper's
recipe 0.79 dev accuracy, these choices (lr 1e-4, batch 8, 10 epochs) 1.0.

- lr, by hidden size H: 2e-5 for H >= 768 (the paper's), 1e-4 for H in 257..767 (small, medium,
  MiniLM), 3e-4 for H <= 256 (tiny, mini);
- batch size: 32, halved down to 8 while an epoch would have fewer than 10 steps;
- epochs: 3, raised to reach 100 steps in all, at most 10.
"""

from __future__ import annotations

import dataclasses
import math

from training.finetune.config import OptimConfig, TrainLoopConfig

LR_BY_HIDDEN_SIZE = ((256, 3e-4), (767, 1e-4))
"""(largest hidden size, lr) for small encoders; larger ones get PAPER_LR."""
PAPER_LR = 2e-5
BATCH_SIZES = (32, 16, 8)
"""Tried in this order; the first giving MIN_STEPS_PER_EPOCH (or the last) is chosen."""
MIN_STEPS_PER_EPOCH = 10
PAPER_EPOCHS = 3
MIN_STEPS = 100
MAX_EPOCHS = 10


def learning_rate(hidden_size: int) -> float:
    return next((lr for largest, lr in LR_BY_HIDDEN_SIZE if hidden_size <= largest), PAPER_LR)


def batch_size(train_rows: int) -> int:
    return next((b for b in BATCH_SIZES if math.ceil(train_rows / b) >= MIN_STEPS_PER_EPOCH), BATCH_SIZES[-1])


def epochs(train_rows: int, batch: int) -> int:
    steps_per_epoch = math.ceil(train_rows / batch)
    return min(MAX_EPOCHS, max(PAPER_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))


def fill_in(
    optim: OptimConfig, loop: TrainLoopConfig, hidden_size: int, train_rows: int
) -> tuple[OptimConfig, TrainLoopConfig, dict]:
    """optim and loop with their null lr, batch_size and epochs chosen; and {key: value} of what
    was chosen (empty when the config set all three)."""
    chosen: dict = {}
    if optim.lr is None:
        chosen["optim.lr"] = learning_rate(hidden_size)
        optim = dataclasses.replace(optim, lr=chosen["optim.lr"])
    if loop.batch_size is None:
        chosen["train.batch_size"] = batch_size(train_rows)
        loop = dataclasses.replace(loop, batch_size=chosen["train.batch_size"])
    if loop.epochs is None:
        chosen["train.epochs"] = epochs(train_rows, loop.batch_size)
        loop = dataclasses.replace(loop, epochs=chosen["train.epochs"])
    return optim, loop, chosen
