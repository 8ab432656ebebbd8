"""What one DataLoader worker does per training micro batch, in sequences/s on one core: read the rows,
mask them, collate them. The per-example path the loader had before issue 18 against today's batch path.

    python bench/loader_throughput.py [--micro-batch 256] [--batches 10] [--rounds 5] [--work DIR]

Shards: the data job on the embedded Wikipedia sample (length 128, a 30,522-piece vocabulary), three
times: static masks (stored, dupe_factor 5), dynamic masking, dynamic whole-word masking. The
sample is small (a few epochs' worth of micro batches), so the batches cycle through the epochs.

  per example: ``ShardedSplit.examples`` (one ``Example`` per row), then (dynamic) ``mask_tokens``
               with a generator per example, one example at a time, then the per-example collate
               loop (copied below as it was: T the longest sequence, P the most predictions).
  batch:       ``PretrainingExamples[BatchRequest]`` (``ShardedSplit.batch``, the masker over the whole
               batch with ``mask_examples``), then ``Collator`` as the trainer builds it now (T a
               multiple of 8, P the shards' max_predictions_per_seq).

Both paths read the same rows (the training order of one rank) and, for dynamic masking, give the
same masks (checked here before timing). One thread (torch.set_num_threads(1)), no DataLoader
workers (num_workers=0): the figure is one worker's. Rounds interleave every (masking, path) pair
and alternate which path goes first; each pair's best round is reported, with the median. Rates
are given per second of the thread's CPU time (what one core does, steady on a shared machine)
and per second of wall time (the same when the core is not shared).

Goals (issue 18): >= 15,000 sequences/s static and dynamic, >= 8,000 whole-word; one H100 at 50%
MFU consumes about 7,000 sequences/s of BERT-Base at length 128.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline import contract  # noqa: E402
from pipeline.masking import mask_tokens  # noqa: E402
from sample_shards import build_sample_shards  # noqa: E402
from training.config import DataConfig  # noqa: E402
from training.data import (  # noqa: E402
    Collator,
    PretrainingData,
    PretrainingExamples,
    RunExpectations,
    open_pretraining_data,
)
from training.labels import IGNORE_INDEX  # noqa: E402
from training.sampler import BatchRequest, TrainBatchPlan  # noqa: E402

MASKINGS = {
    "static": ["masking=static"],
    "dynamic": ["masking=dynamic"],
    "whole-word": ["masking=dynamic", "masking.whole_word=true"],
    "span": ["masking=span"],
}
GOALS = {"static": 15_000, "dynamic": 15_000, "whole-word": 8_000, "span": 8_000}
PATHS = ("per example", "batch")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--micro-batch", type=int, default=256, help="sequences per micro batch (default 256)")
    p.add_argument("--batches", type=int, default=10, help="micro batches per timed round and pair (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--work", default=None, help="where the shards are built and reused (default: a temporary dir)")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    if min(args.micro_batch, args.batches, args.rounds) < 1:
        p.error("--micro-batch, --batches and --rounds must be >= 1")
    return args


# --- shards ------------------------------------------------------------------------------------


def build_shards(work: str, masking: str) -> str:
    """The data job on the sample with this masking, into work/<masking> (reused when there)."""
    return build_sample_shards(os.path.join(work, masking), "tokenizer.vocab_size=30522", *MASKINGS[masking])


def open_data(data_dir: str, micro_batch: int, seed: int) -> PretrainingData:
    manifest = contract.read_manifest(data_dir)
    expect = RunExpectations(
        vocab_size=manifest.vocab_size,
        max_position_embeddings=manifest.max_seq_length,
        with_nsp_head=manifest.objective != "none",
    )
    cfg = DataConfig(micro_batch_size=micro_batch, num_workers=0, pin_memory=False)
    return open_pretraining_data(data_dir, cfg, seed, expect)


def requests(data: PretrainingData, micro_batch: int, seed: int):
    """This rank's training requests, epoch after epoch, forever."""
    plan = TrainBatchPlan(len(data.split(data.cfg.train_split)), micro_batch, seed)
    epoch = 0
    while True:
        yield from plan.requests(epoch, 0)
        epoch += 1


# --- the two paths -----------------------------------------------------------------------------


def collate_per_example(examples, pad_id: int, with_sentence_label: bool) -> dict[str, torch.Tensor]:
    """The collator as it was before issue 18 (training/data.py at 3dc5a99): a loop over the examples,
    T the longest sequence, P the most predictions of the batch."""
    B = len(examples)
    lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    T = int(lengths.max()) if B else 0
    P = max((len(e.masked_lm_positions) for e in examples), default=0)
    input_ids = np.full((B, T), pad_id, dtype=np.int64)
    positions = np.zeros((B, P), dtype=np.int64)
    labels = np.full((B, P), IGNORE_INDEX, dtype=np.int64)
    for i, e in enumerate(examples):
        input_ids[i, : lengths[i]] = e.input_ids
        positions[i, : len(e.masked_lm_positions)] = e.masked_lm_positions
        labels[i, : len(e.masked_lm_labels)] = e.masked_lm_labels
    columns = np.arange(T)[None, :]
    attention_mask = (columns < lengths[:, None]).astype(np.int64)
    b_start = np.array([e.segment_b_start for e in examples], dtype=np.int64)
    token_type_ids = ((columns >= b_start[:, None]) & (attention_mask == 1)).astype(np.int64)
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "masked_lm_positions": torch.from_numpy(positions),
        "masked_lm_labels": torch.from_numpy(labels),
    }
    if with_sentence_label:
        batch["next_sentence_label"] = torch.tensor([e.next_sentence_label for e in examples], dtype=torch.long)
    batch["example_id"] = torch.tensor([e.example_id for e in examples], dtype=torch.long)
    batch["num_tokens"] = torch.tensor(int(lengths.sum()), dtype=torch.long)
    return batch


class PerExamplePath:
    """Read, mask and collate one example at a time (the loader before issue 18)."""

    def __init__(self, data: PretrainingData):
        self.split, self.masker = data.split(data.cfg.train_split), data.masker()
        self.pad_id, self.with_sentence_label = data.special_tokens.pad, data.has_sentence_label

    def __call__(self, request: BatchRequest) -> dict[str, torch.Tensor]:
        examples = self.split.examples(request.indices)
        if self.masker is not None:
            examples = [self.mask(e, request.epoch) for e in examples]
        return collate_per_example(examples, self.pad_id, self.with_sentence_label)

    def mask(self, example, epoch: int):
        m = self.masker
        tokens = np.array(example.input_ids, dtype=np.int32)
        masked, positions, labels = mask_tokens(
            tokens, m.rng(epoch, example.example_id), m.params, m.never_mask, m.mask_id, m.vocab_size, m.is_continuation
        )
        return dataclasses.replace(example, input_ids=masked, masked_lm_positions=positions, masked_lm_labels=labels)


class BatchPath:
    """The loader's worker today: the dataset's micro batch, then the trainer's collator; also times
    each stage (read, mask, collate) for the breakdown."""

    def __init__(self, data: PretrainingData, micro_batch: int):
        self.dataset = PretrainingExamples(data.split(data.cfg.train_split), data.masker())
        self.collate: Collator = data.collator(micro_batch)
        self.stages = {"read": 0.0, "mask": 0.0, "collate": 0.0}

    def __call__(self, request: BatchRequest) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        batch = self.dataset.split.batch(request.indices)
        t1 = time.perf_counter()
        if self.dataset.masker is not None:
            batch = self.dataset.masker(batch, request.epoch)
        t2 = time.perf_counter()
        out = self.collate(batch)
        t3 = time.perf_counter()
        for name, seconds in zip(self.stages, (t1 - t0, t2 - t1, t3 - t2)):
            self.stages[name] += seconds
        return out


def check_same_batches(old: dict, new: dict) -> None:
    """The two paths give the same rows, ids and masks (new: padded further, in T and in P)."""
    B, T = old["input_ids"].shape
    P = old["masked_lm_positions"].shape[1]
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        if not torch.equal(new[key][:, :T], old[key]) or new["attention_mask"][:, T:].any():
            raise SystemExit(f"the batch path's {key} differ from the per-example path's")
    for key in ("masked_lm_positions", "masked_lm_labels"):
        if not torch.equal(new[key][:, :P], old[key]) or (new["masked_lm_labels"][:, P:] != IGNORE_INDEX).any():
            raise SystemExit(f"the batch path's {key} differ from the per-example path's")
    if not torch.equal(new["example_id"], old["example_id"]):
        raise SystemExit("the batch path read other rows")


# --- timing --------------------------------------------------------------------------------------


def timed(path, batch_requests: list[BatchRequest]) -> tuple[float, float]:
    """Sequences per second of ``path`` over these requests: per second of this thread's CPU time,
    and per second of wall time."""
    wall, cpu = time.perf_counter(), time.thread_time()
    sequences = sum(int(path(r)["input_ids"].shape[0]) for r in batch_requests)
    return sequences / (time.thread_time() - cpu), sequences / (time.perf_counter() - wall)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    work = args.work or tempfile.mkdtemp(prefix="loader_bench_")
    setups = {}
    for masking in MASKINGS:
        data = open_data(build_shards(work, masking), args.micro_batch, args.seed)
        rows = len(data.split(data.cfg.train_split))
        setups[masking] = (
            PerExamplePath(data),
            BatchPath(data, args.micro_batch),
            requests(data, args.micro_batch, args.seed),
        )
        spec = data.manifest.masking
        print(f"{masking}: {rows:,} training rows, mode {spec.mode}, whole_word {spec.whole_word}", flush=True)
    for old, new, source in setups.values():  # untimed: warm caches, and the same batches
        for request in [next(source) for _ in range(2)]:
            check_same_batches(old(request), new(request))
        new.stages = dict.fromkeys(new.stages, 0.0)
    print(f"same rows and masks on both paths: yes (micro batch {args.micro_batch})", flush=True)

    rates = {(m, p): [] for m in MASKINGS for p in PATHS}
    for round_ in range(args.rounds):
        for masking, (old, new, source) in setups.items():
            batch_requests = [next(source) for _ in range(args.batches)]
            order = PATHS if round_ % 2 == 0 else PATHS[::-1]
            for path in order:
                rates[masking, path].append(timed(old if path == "per example" else new, batch_requests))
        print(
            f"round {round_ + 1} (CPU time): "
            + ", ".join(
                f"{m} {rates[m, 'per example'][-1][0]:,.0f} -> {rates[m, 'batch'][-1][0]:,.0f}" for m in MASKINGS
            ),
            flush=True,
        )
    report(args, setups, rates)


def report(args, setups, rates) -> None:
    print(
        f"\n# loader worker, one core (torch threads 1, num_workers 0), micro batch {args.micro_batch}, "
        f"{args.rounds} rounds x {args.batches} batches per pair; sequences/s, best round (median)"
    )
    for clock, name in ((0, "per second of CPU time (the goals)"), (1, "per second of wall time")):
        print(f"{name}:")
        for masking in MASKINGS:
            old, new = (max(r[clock] for r in rates[masking, p]) for p in PATHS)
            medians = [statistics.median(r[clock] for r in rates[masking, p]) for p in PATHS]
            goal = GOALS[masking]
            print(
                f"  {masking:<11} per example {old:>8,.0f} ({medians[0]:>7,.0f})   batch {new:>8,.0f} "
                f"({medians[1]:>7,.0f})   batch / per example {new / old:5.1f}x (medians "
                f"{medians[1] / medians[0]:4.1f}x)   goal >= {goal:,}: {'met' if new >= goal else 'NOT met'}"
            )
    print("\nbatch path, time per sequence by stage (all rounds):")
    for masking, (_, new, _) in setups.items():
        sequences = args.rounds * args.batches * args.micro_batch
        parts = ", ".join(f"{name} {seconds / sequences * 1e6:5.1f} us" for name, seconds in new.stages.items())
        print(f"  {masking:<11} {parts}")


if __name__ == "__main__":
    main()
