"""Throughput and model FLOPs utilisation (MFU).

FLOPs per token come from ``training.model.flops_per_token`` (its docstring gives the formula);
this module adds the wall clock and the device's peak:

    MFU = tokens/s (all ranks) * FLOPs/token / (peak FLOP/s of one device * world size)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.0),
    ("H200", 989.0),  # SXM
    ("A100", 312.0),
    ("A10G", 125.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("V100", 125.0),  # fp16 tensor cores; no bf16
]
"""Dense bf16 tensor-core TFLOP/s (without sparsity) from the vendor datasheets, matched as
substrings of ``torch.cuda.get_device_name()``, first match wins (so more specific names first)."""


def peak_tflops_for(device_name: str) -> Optional[float]:
    """The table's peak for a device name, or None for a device it does not know."""
    name = device_name.lower()
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in name:
            return tflops
    return None


def resolve_peak_tflops(override: Optional[float] = None) -> Optional[float]:
    """Peak dense TFLOP/s of one device: the config's value if set, else the table's entry for the
    current CUDA device; None (no MFU reported) on CPU or an unknown GPU."""
    if override is not None:
        if not override > 0:
            raise ValueError(f"peak TFLOP/s must be positive, got {override}")
        return float(override)
    if torch.cuda.is_available():
        return peak_tflops_for(torch.cuda.get_device_name())
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float, world_size: int = 1) -> float:
    """Model FLOPs utilisation in [0, 1] (for realistic inputs).

    tokens_per_s: tokens processed per second by all ``world_size`` devices together.
    flops_per_token: training FLOPs (forward + backward) per token.
    peak_tflops: peak TFLOP/s of one device.
    """
    if not peak_tflops > 0 or world_size < 1:
        raise ValueError(f"need peak_tflops > 0 and world_size >= 1, got {peak_tflops}, {world_size}")
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12 * world_size)


@dataclass(frozen=True)
class Throughput:
    """What passed between two log points."""

    samples: int
    """Sequences."""
    tokens: int
    """Non-padding tokens."""
    seconds: float
    """Wall-clock time of the window."""

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


Count = Union[int, torch.Tensor]


class ThroughputMeter:
    """Counts samples and non-padding tokens between log points, on the wall clock.

    ``update`` takes counts as ints or 0-d tensors; tensors are summed where they live (no host
    sync per step) and read once in ``report``. Before reading the clock, ``report`` and ``start``
    synchronise CUDA (when there is a device to wait for), so queued kernels are counted in the
    window they belong to.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter, sync_cuda: Optional[bool] = None):
        self._clock = clock
        self._sync = torch.cuda.is_available() if sync_cuda is None else sync_cuda
        self.start()

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return self._clock()

    def start(self) -> None:
        """Open a new window now (after a pause such as evaluation or a checkpoint)."""
        self._samples: Count = 0
        self._tokens: Count = 0
        self._since = self._now()

    def update(self, samples: Count, tokens: Count) -> None:
        """Add one micro batch: its sequences and its non-padding tokens."""
        self._samples = self._samples + samples
        self._tokens = self._tokens + tokens

    def report(self) -> Throughput:
        """The window since the last ``start``/``report``; opens the next window."""
        now = self._now()
        window = Throughput(samples=int(self._samples), tokens=int(self._tokens), seconds=now - self._since)
        self._samples, self._tokens, self._since = 0, 0, now
        return window
