"""A step's statistics in one fixed-shape vector, summed on the device and read once per interval.

    layout = StatisticsLayout(objective.statistics)     # ("mlm_loss", "mlm_accuracy", ...)
    row = layout.device_row(loss, stats)                 # (2K,) float64 on the device, no host read
    counts = host_counts(batch)                          # (len(HOST_COUNTS),) float64 on the host
    ... sum rows over micro batches, stack the steps, one all_reduce and one copy to the host ...
    layout.summarise(totals)                             # {"loss": ..., "mlm_loss": ..., ...}

The device part holds K (numerator, denominator) pairs: the trainer's ``loss`` (the backpropagated
loss over 1 per micro batch, so its mean over micro batches) and then the objective's statistics,
in the objective's order. Every value is reported as its summed numerator over its summed
denominator, and left out where that denominator is 0. A micro batch whose loss is not finite adds
zeros to every pair (numerators and denominators alike), so the sums stay readable and its
statistics simply do not count. The host part holds what the collated batch says by itself
(``HOST_COUNTS``), for throughput and MFU.
"""

from __future__ import annotations

import torch

from training.labels import IGNORE_INDEX
from training.objectives import LOSS, Statistics

HOST_COUNTS = ("tokens", "samples", "predictions")
"""Per micro batch, from the host-side batch: real tokens, real sequences (evaluation pads a short
batch with rows of example id -1) and masked positions with a label (the MLM head's work)."""


class StatisticsLayout:
    """Where each statistic's numerator and denominator sit in a step's device vector."""

    def __init__(self, objective_statistics: tuple[str, ...]):
        self.names = (LOSS, *objective_statistics)
        """Reported names, in order: the trainer's loss first."""
        self.size = 2 * len(self.names)
        """Length of the device vector: numerator, denominator per name."""

    def zeros(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(self.size, dtype=torch.float64, device=device)

    def device_row(self, loss: torch.Tensor, stats: Statistics) -> torch.Tensor:
        """(size,) float64 on the loss's device from one micro batch's loss and its objective's
        statistics; all zeros when the loss is not finite. No host read."""
        if stats.keys() != set(self.names[1:]):
            raise ValueError(f"the objective returned statistics {sorted(stats)}, it declared {list(self.names[1:])}")
        finite = torch.isfinite(loss.detach())
        pairs = [(loss.detach(), finite)] + [stats[name] for name in self.names[1:]]
        row = torch.stack([value.double() for pair in pairs for value in pair])  # (size,)
        return torch.where(finite, row, 0.0)

    def summarise(self, totals: torch.Tensor) -> dict[str, float]:
        """{name: numerator / denominator} from a summed (size,) host vector (or a longer one that
        starts with it), names in order, those with a zero denominator left out. ``.numpy()``: the
        vector is on the host already, nothing is copied."""
        values = [float(v) for v in totals[: self.size].numpy()]
        return {name: values[2 * i] / values[2 * i + 1] for i, name in enumerate(self.names) if values[2 * i + 1]}


def host_counts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(len(HOST_COUNTS),) float64 on the host: the counts known from the collated batch itself
    (``.numpy()`` reads host tensors only: no device read)."""
    samples = int((batch["example_id"].numpy() >= 0).sum())
    predictions = int((batch["masked_lm_labels"].numpy() != IGNORE_INDEX).sum()) if "masked_lm_labels" in batch else 0
    return torch.tensor([float(batch["num_tokens"].numpy()), float(samples), float(predictions)], dtype=torch.float64)


def host_count(totals: torch.Tensor, layout: StatisticsLayout, name: str) -> float:
    """One of ``HOST_COUNTS`` from a summed (layout.size + len(HOST_COUNTS),) host vector."""
    return float(totals.numpy()[layout.size + HOST_COUNTS.index(name)])


def poisoned_loss(loss: torch.Tensor) -> torch.Tensor:
    """The loss to backpropagate: itself when finite, NaN otherwise, without reading it on the host.
    NaN times anything is NaN, so every gradient the micro batch touches is NaN and the optimizer
    skips the step (a finite-looking gradient of an infinite loss, e.g. -inf logit at the label,
    would otherwise be applied)."""
    nan_if_bad = torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
    return loss * nan_if_bad.to(loss.dtype)


def all_reduce_sum(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a small tensor over ranks (moved to the device for NCCL), back on the host: a host sync."""
    import torch.distributed as dist

    buf = t.to(device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()
