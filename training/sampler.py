"""Which rows each data-parallel rank reads, batch by batch: pure index arithmetic, numpy only.

Training order. Epoch e of a split of N rows follows one global permutation of 0..N-1 drawn
from (seed, e). The permutation is consumed from its start in *global batches* of
G = world_size x micro_batch_size positions; in the global batch that begins at position p,
rank r takes positions p + r, p + r + W, ..., p + r + (B-1)W (without a resume p is a multiple
of G, so rank r reads positions r, r+W, r+2W, ... of the permutation). The tail that does not
fill a whole global batch (fewer than G rows) is dropped, so every rank runs the same number of
full micro batches per epoch; a different permutation each epoch drops different rows.

Because the order is global, the loader's position is a single number, the samples consumed in
the epoch (a prefix of the permutation), the same on every rank. A resumed run continues from
that prefix with whatever world size and micro batch size it has: no row is repeated or skipped.

Evaluation order. Rows in storage order, rank r takes rows r, r+W, ... (nothing dropped), in
micro batches; ranks may therefore get a different number of batches (by at most one).

Each batch travels to the DataLoader as a ``BatchRequest`` (epoch, row indices), made in the
main process: workers only read and collate, so their number never changes what is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.seeding import rng_for


@dataclass(frozen=True)
class BatchRequest:
    """One micro batch to read: global row indices and the epoch (dynamic masks depend on it)."""

    epoch: int
    indices: np.ndarray  # (B,) int64 global row indices of the split


def epoch_order(seed: int, epoch: int, num_samples: int, shuffle: bool = True) -> np.ndarray:
    """(N,) the global order of the rows in epoch ``epoch``: a permutation seeded by (seed, epoch),
    or storage order when ``shuffle`` is false.

    Equal to ``rng.permutation(N)`` for that generator; built in int32 where it fits to halve the
    host memory of large splits.
    """
    dtype = np.int32 if num_samples <= np.iinfo(np.int32).max else np.int64
    order = np.arange(num_samples, dtype=dtype)
    if shuffle:
        rng_for("epoch_order", int(seed), int(epoch)).shuffle(order)
    return order


@dataclass(frozen=True)
class TrainBatchPlan:
    """Shuffled, rank-disjoint micro batches of the training split (see the module docstring)."""

    num_samples: int
    """Rows N in the split."""
    micro_batch_size: int
    """Rows B per micro batch on one rank."""
    seed: int
    """Seeds the per-epoch permutation."""
    rank: int = 0
    """This process's data-parallel rank r."""
    world_size: int = 1
    """Data-parallel ranks W."""
    shuffle: bool = True
    """False: every epoch in storage order (still rank-strided and resumable)."""

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank}, world_size {self.world_size}")
        if self.num_samples < self.global_batch_size:
            raise ValueError(
                f"the split has {self.num_samples} rows, fewer than one global batch of "
                f"world_size x micro_batch_size = {self.global_batch_size}: lower the micro batch size "
                f"or build more data"
            )

    @property
    def global_batch_size(self) -> int:
        """Rows G = W x B consumed from the permutation per step (all ranks together)."""
        return self.world_size * self.micro_batch_size

    def batches_left(self, start: int) -> int:
        """Full micro batches this rank still runs in an epoch whose first ``start`` rows are consumed."""
        return max(self.num_samples - start, 0) // self.global_batch_size

    def batches_per_epoch(self) -> int:
        return self.batches_left(0)

    def rank_batches(self, epoch: int, start: int = 0) -> Iterator[np.ndarray]:
        """This rank's micro batches of ``epoch`` from permutation position ``start`` on: (B,) row indices."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} is outside the epoch of {self.num_samples} rows")
        order = epoch_order(self.seed, epoch, self.num_samples, self.shuffle)
        G = self.global_batch_size
        for k in range(self.batches_left(start)):
            lo = start + k * G + self.rank
            yield order[lo : lo + G - self.rank : self.world_size].astype(np.int64)  # (B,)

    def requests(self, epoch: int, start: int = 0) -> "BatchRequests":
        """The batches of ``rank_batches`` as a sized iterable of ``BatchRequest`` (a DataLoader sampler)."""
        return BatchRequests(self, epoch, start)


class BatchRequests:
    """Sized iterable of this rank's ``BatchRequest``s for one epoch from a start position; lazy,
    so an epoch's index lists are never all in memory."""

    def __init__(self, plan: TrainBatchPlan, epoch: int, start: int):
        self.plan, self.epoch, self.start = plan, epoch, start

    def __len__(self) -> int:
        return self.plan.batches_left(self.start)

    def __iter__(self) -> Iterator[BatchRequest]:
        for indices in self.plan.rank_batches(self.epoch, self.start):
            yield BatchRequest(self.epoch, indices)


@dataclass(frozen=True)
class EvalBatchPlan:
    """Unshuffled, rank-disjoint micro batches of the eval split, keeping the tail."""

    num_samples: int
    """Rows N in the split."""
    micro_batch_size: int
    """Rows per micro batch (the last one of a rank may be shorter)."""
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank}, world_size {self.world_size}")

    def rank_batches(self) -> list[np.ndarray]:
        """(B,) row indices per micro batch: rows r, r+W, ... in storage order."""
        mine = np.arange(self.rank, self.num_samples, self.world_size, dtype=np.int64)
        return [mine[i : i + self.micro_batch_size] for i in range(0, len(mine), self.micro_batch_size)]

    def requests(self, epoch: int = 0) -> list[BatchRequest]:
        """Every batch as a ``BatchRequest``; ``epoch`` only chooses the dynamic masks (fixed for eval)."""
        return [BatchRequest(epoch, indices) for indices in self.rank_batches()]
