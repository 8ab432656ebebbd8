"""The training loop: pre-training under DeepSpeed, resumable to the sample.

    train(cfg, resolved_config)   # every rank; returns the process exit code

Build order: W&B login check -> this rank's checks (``training.preflight``: shards and manifest,
the objective, resume guard, init_from, precision) -> process group -> the ranks agree on
output_dir, config and checkpoint (``check_ranks_agree``; a rank whose own checks failed says so
there, so every rank stops together) -> the objective's network (``build_model``), optimizer,
schedule -> ``deepspeed.initialize`` (``training.engine``) -> resume from that checkpoint, the
schedule set to this run's (``optim.restore_schedule_position``).

A *step* is one optimizer step: ``accumulation`` micro batches per rank (``engine.backward`` and
``engine.step`` on each; DeepSpeed steps the optimizer on the last one of the window). What a
micro batch computes is the objective's (``training.objectives``): its loss and named statistics.

No host syncs between optimizer steps. Within a step nothing computed on the device is read on
the host: the loss and the objective's statistics are summed on the device in one fixed-shape
vector (``training.step_statistics``), and the steps' vectors are reduced over ranks and read once
per ``trainer.log_every`` steps (and before a save, a stop and the end), when their steps.jsonl
lines are written (``training.run_log``). The host-side agreements of every step (the stop flag,
the example ids) travel over a gloo group (``DistributedContext.control_group``), which never waits
for the device. What still reads the device once per optimizer step is the optimizer's own check
of the gradients (DeepSpeed's gradient norm at the step, or ``optim.SkipNonFiniteStep``'s flag).

Non-finite losses. A micro batch whose loss is not finite is backpropagated as NaN
(``step_statistics.poisoned_loss``), so every gradient it touches is NaN and the optimizer step of
its window is skipped on every rank (the gradients are reduced first, so all ranks see it):
DeepSpeed's ZeRO and bf16/fp16 optimizers skip a step whose gradient norm is not finite,
``optim.SkipNonFiniteStep`` does at ZeRO stage 0. No gradient of a non-finite micro batch is ever
applied, and neither are those of the other micro batches of its step; the skipped step is not
counted (the next step takes its number and the schedule does not move), its samples are.
``trainer.max_nonfinite_in_a_row`` consecutive skipped steps stop the run with an error. Before
each save the ranks check that the weights are finite and refuse to save if not.

Each step, rank 0 records a line for ``output_dir/steps.jsonl``: step, the statistics, learning
rate, samples consumed and (``trainer.record_example_ids``) the example ids of the step (all ranks,
rank-major, micro batch order) -- what a resumed run is compared against, and a record of what
each step trained on.

SIGTERM/SIGINT set a flag (``training.clean_stop``); at the end of the step the ranks agree on it
(over the gloo group), save a checkpoint, write $BERT_CLEAN_STOP_FILE where a launch recipe set it
and return 0. torchrun forwards a SIGTERM it receives to its workers (and then exits 1 itself,
which that file lets a recipe tell from a failure); it kills workers that take longer than about
30 s, so a slow save under torchrun can be cut short -- the last complete checkpoint then still
stands. Data loading and evaluation run under ``torch.random.fork_rng`` so they never consume the
global RNG that dropout draws from: a resumed run (RNG states restored from its checkpoint) draws
the same dropout masks as an uninterrupted one.

At the end: evaluation, a final checkpoint, and (rank 0) a Hugging Face export of that
checkpoint's fp32 weights to ``output_dir/hf`` (``export.export_checkpoint``).
"""

from __future__ import annotations

import logging
import os
import random
import resource
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from training import checkpoint as ckpt
from training.clean_stop import StopRequest, write_clean_stop
from training.config import ConfigError, TrainConfig
from training.data import DataContractError
from training.distributed import (
    DistributedContext,
    check_ranks_agree,
    choose_deepspeed_accelerator,
    init_distributed,
    launcher_world_size,
    select_local_device,
)
from training.engine import build_engine
from training.export import HF_SUBDIR, export_checkpoint
from training.init_from import load_init_weights, log_init_report, saved_init_report
from training.objectives import LOSS, Objective, device_batch
from training.optim import restore_schedule_position, schedule_change
from training.preflight import PreparedRun, agreement_record, eval_split_warnings, prepare_run
from training.run_log import (
    EVAL_BATCHES,
    EVAL_PREFIX,
    RunLog,
    console,
    drop_torn_steps_line,
    show_console,
    truncate_steps,
)
from training.step_statistics import (
    HOST_COUNTS,
    StatisticsLayout,
    all_reduce_sum,
    host_count,
    host_counts,
    poisoned_loss,
)
from training.throughput import mfu, resolve_peak_tflops
from training.tracking import check_wandb_login, format_progress, make_tracker

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses (``trainer.max_nonfinite_in_a_row``)."""


def build_model(objective: Objective, model_cfg, cfg: TrainConfig, resuming: bool) -> tuple[nn.Module, Optional[dict]]:
    """The objective's network with the same initial weights on every rank (seeded by cfg.seed),
    then ``trainer.init_from``'s where it has them (not when resuming). Returns the network and
    ``init_from.load_init_weights``' report (None without init_from)."""
    torch.manual_seed(cfg.seed)
    model = objective.build(model_cfg, unpad=cfg.trainer.unpad)
    if cfg.trainer.init_from and not resuming:
        return model, load_init_weights(model, cfg.trainer.init_from)
    return model, None


def seed_rank(seed: int, rank: int) -> None:
    """Per-rank streams for dropout (ranks must not draw the same masks)."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def use_deterministic_kernels() -> None:
    """``trainer.deterministic``: torch picks deterministic kernels (the backward of index_select /
    index_copy and of SDPA's memory-efficient kernel otherwise add with atomics in a varying order),
    or stops naming an operation that has none; cuBLAS needs a fixed workspace for it."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def device_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak RSS (KiB on Linux)


@dataclass
class PendingStep:
    """A step taken whose statistics are still on the device, until the next read (``flush_steps``)."""

    step: int
    device_stats: torch.Tensor
    """(layout.size,) this rank's sums over the step's micro batches, on the device."""
    host_stats: torch.Tensor
    """(len(HOST_COUNTS),) this rank's, on the host."""
    lr: float
    samples_consumed: int
    example_ids: Optional[list[int]]
    """Every rank's, rank-major (trainer.record_example_ids), else None."""


@dataclass
class RunState:
    """The run's position beyond what DeepSpeed keeps."""

    step: int = 0
    samples_consumed: int = 0
    """Training sequences consumed over all ranks and epochs (skipped micro batches included)."""
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    last_saved_step: int = -1


@dataclass
class Trainer:
    cfg: TrainConfig
    resolved: dict
    ctx: DistributedContext
    run: PreparedRun
    """The checked shards, model config, objective, run record and checkpoint to resume."""
    engine: object
    accumulation: int
    state: RunState = field(default_factory=RunState)

    def __post_init__(self):
        self.objective = self.run.objective
        self.checkpoint_dir = os.path.join(self.cfg.output_dir, ckpt.CHECKPOINTS_SUBDIR)
        self.loader = self.run.data.train_loader(self.ctx.rank, self.ctx.world_size, self.cfg.data.micro_batch_size)
        self.cfg_hash = ckpt.config_hash(self.resolved)
        self.stop = StopRequest()
        self.tracker = None
        self.start_step = 0
        self.peak_tflops = resolve_peak_tflops(self.cfg.trainer.peak_tflops)
        self.step_lr = 0.0
        self.layout = StatisticsLayout(self.objective.statistics)
        self.pending: list[PendingStep] = []
        self.interval = torch.zeros(self.layout.size + len(HOST_COUNTS), dtype=torch.float64)
        """Summed statistics of the steps read since the last logging step (``flush_steps`` adds)."""
        self.interval_start = self.paused = 0.0
        self.run_log = RunLog(self.cfg.output_dir) if self.is_main else None

    @property
    def is_main(self) -> bool:
        return self.ctx.rank == 0

    # -- what resumes --

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the run besides DeepSpeed's engine state and the RNG states
        (``checkpoint.client_state`` wraps it)."""
        return {
            "step": int(self.state.step),
            "samples_consumed": int(self.state.samples_consumed),
            "loader": dict(self.loader.state_dict()),
            "tracker_run_id": self.tracker.run_id if self.tracker else None,
            "config_hash": self.cfg_hash,
        }

    def load_state_dict(self, state: dict) -> None:
        """From a checkpoint's client state (``checkpoint.load``): the step, the samples consumed
        and the loader's position."""
        self.loader.load_state_dict(state["loader"])
        self.state.step = self.state.last_saved_step = state["step"]
        self.state.samples_consumed = state["samples_consumed"]

    def resume(self) -> Optional[str]:
        """Load the checkpoint ``preflight.checkpoint_to_resume`` chose, if any; returns the tracker's run id."""
        tag = self.run.resume_tag
        if tag is None:
            if self.is_main:
                truncate_steps(self.cfg.output_dir, 0)  # lines of a run killed before its first checkpoint
            return None
        client = ckpt.load(self.engine, self.checkpoint_dir, tag, self.ctx.rank)
        self.load_state_dict(client)
        # DeepSpeed restored the saved run's lr (0.0 where its schedule ended): set this run's.
        saved_next_lr = self.engine.get_lr()[0]
        rates = restore_schedule_position(
            self.engine.lr_scheduler, self.cfg.optim, self.cfg.trainer.max_steps, self.state.step
        )
        if self.is_main:
            console.info("resumed from %s at step %d", os.path.join(self.checkpoint_dir, tag), self.state.step)
            last_lr = truncate_steps(self.cfg.output_dir, self.state.step)
            saved = ckpt.read_run_record(self.checkpoint_dir, tag) or {}
            saved_max_steps = saved.get("config", {}).get("trainer", {}).get("max_steps")
            line = schedule_change(
                self.state.step, saved_max_steps, self.cfg.trainer.max_steps, last_lr, saved_next_lr, rates[0]
            )
            if line:
                console.info(line)
        return client.get("tracker_run_id")

    def save(self) -> None:
        self.flush_steps()  # the checkpoint's steps are in steps.jsonl before it is complete
        finite = torch.tensor([1.0 if ckpt.local_weights_finite(self.engine) else 0.0])
        if all_reduce_sum(finite, self.ctx.device).item() < self.ctx.world_size:
            raise RuntimeError(
                f"non-finite weights at step {self.state.step}: refusing to save a checkpoint "
                f"(the last good one is step {self.state.last_saved_step})"
            )
        client = ckpt.client_state(self.state_dict())
        tag = ckpt.save(
            self.engine,
            self.checkpoint_dir,
            self.state.step,
            client,
            self.ctx.rank,
            self.cfg.trainer.keep_last_k,
            self.run.record,
        )
        self.state.last_saved_step = self.state.step
        if self.is_main:
            console.info("saved checkpoint %s", os.path.join(self.checkpoint_dir, tag))

    # -- one step --

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Training micro batches forever, epoch after epoch, without touching the global RNG."""
        while True:
            it = iter(self.loader)
            while True:
                with torch.random.fork_rng(devices=[]):
                    batch = next(it, None)
                if batch is None:
                    break
                yield batch

    def micro_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's loss on one micro batch, and its statistics as a (layout.size,) device row."""
        loss, stats = self.objective.loss(self.engine, device_batch(batch, self.objective.batch_keys, self.ctx.device))
        return loss, self.layout.device_row(loss, stats)

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> Optional[PendingStep]:
        """One optimizer step: ``accumulation`` micro batches, each forward, backward and
        ``engine.step`` (DeepSpeed steps the optimizer on the last). Nothing is read from the device
        here. Returns the step's record, or None when the optimizer skipped the step (a non-finite
        micro batch on some rank: see the module docstring)."""
        lr = self.engine.get_lr()[0]  # the rate this step's update uses (the scheduler moves after it)
        on_device = self.layout.zeros(self.ctx.device)
        on_host = torch.zeros(len(HOST_COUNTS), dtype=torch.float64)
        ids: list[np.ndarray] = []
        for _ in range(self.accumulation):
            batch = next(batches)
            self.state.samples_consumed += batch["input_ids"].shape[0] * self.ctx.world_size
            loss, row = self.micro_batch(batch)
            self.engine.backward(poisoned_loss(loss))
            self.engine.step()
            on_device += row
            on_host += host_counts(batch)
            ids.append(batch["example_id"].numpy())
        if not self.engine.was_step_applied():  # the optimizer's own check, on the host already
            self._skipped_step()
            return None
        self.state.nonfinite_in_a_row = 0
        self.state.step += 1
        gathered = self.gather_ids(np.concatenate(ids)) if self.cfg.trainer.record_example_ids else None
        return PendingStep(self.state.step, on_device, on_host, lr, self.state.samples_consumed, gathered)

    def _skipped_step(self) -> None:
        """After a step the optimizer skipped: the schedule stays at this step (DeepSpeed's ZeRO
        optimizers leave it; set it either way), count it, stop after too many in a row."""
        restore_schedule_position(self.engine.lr_scheduler, self.cfg.optim, self.cfg.trainer.max_steps, self.state.step)
        self.state.nonfinite_in_a_row += 1
        self.state.nonfinite_total += 1
        if self.is_main:
            console.info(
                "non-finite loss or gradient in step %d on some rank: step skipped, its %d micro batches per "
                "rank dropped (%d in a row)",
                self.state.step + 1,
                self.accumulation,
                self.state.nonfinite_in_a_row,
            )
        if self.state.nonfinite_in_a_row >= self.cfg.trainer.max_nonfinite_in_a_row:
            raise NonFiniteLossError(
                f"{self.state.nonfinite_in_a_row} non-finite steps in a row at step {self.state.step + 1} "
                f"(trainer.max_nonfinite_in_a_row={self.cfg.trainer.max_nonfinite_in_a_row}): the run diverged; "
                f"lower optim.lr, raise warmup, or use fp32/bf16; resume restarts from step "
                f"{self.state.last_saved_step}"
            )

    def gather_ids(self, ids: np.ndarray) -> list[int]:
        """Example ids of the step over all ranks, rank-major, over the host-side group."""
        if self.ctx.world_size == 1:
            return ids.tolist()
        local = torch.from_numpy(ids.astype(np.int64))
        parts = [torch.empty_like(local) for _ in range(self.ctx.world_size)]
        dist.all_gather(parts, local, group=self.ctx.control_group)
        return np.concatenate([p.numpy() for p in parts]).tolist()

    def stop_agreed(self) -> bool:
        """Whether any rank was asked to stop: one small all_reduce over the host-side group."""
        flag = torch.tensor([1 if self.stop.requested else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM, group=self.ctx.control_group)
        return bool(flag.numpy()[0])

    def flush_steps(self) -> None:
        """Read the pending steps' statistics: one all_reduce over ranks and one device-to-host copy
        for all of them; rank 0 writes their steps.jsonl lines; their sum goes into ``interval``."""
        if not self.pending:
            return
        rows = torch.stack(
            [torch.cat([p.device_stats, p.host_stats.to(self.ctx.device)]) for p in self.pending]
        )  # (S, layout.size + len(HOST_COUNTS)) on the device
        summed = all_reduce_sum(rows, self.ctx.device)
        if self.is_main:
            for pending, stats in zip(self.pending, summed):
                self.run_log.write_step(self.step_record(pending, stats))
            self.run_log.flush()
        self.pending.clear()
        self.interval += summed.sum(dim=0)

    def step_record(self, pending: PendingStep, stats: torch.Tensor) -> dict:
        """The steps.jsonl line of a step from its statistics summed over ranks."""
        record = {"step": pending.step, **self.layout.summarise(stats), "lr": pending.lr}
        record["samples_consumed"] = pending.samples_consumed
        if pending.example_ids is not None:
            record["example_ids"] = pending.example_ids
        if self.run.resume_tag is not None and pending.step == self.start_step + 1:
            record["resumed_from"] = self.start_step  # where this attempt took over: training.report marks it
        return record

    # -- evaluation --

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The objective's statistics over trainer.eval_steps batches per rank (null: the whole
        split), each over its summed denominator, so the mean over the split. Every rank runs the
        same number of batches (the minimum over ranks): under ZeRO-3 each forward is collective."""
        loader = self.run.data.eval_loader(self.ctx.rank, self.ctx.world_size)
        count = torch.tensor([float(len(loader))], device=self.ctx.device)
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        batches = int(count.item())
        if self.cfg.trainer.eval_steps is not None:
            batches = min(batches, self.cfg.trainer.eval_steps)
        if batches == 0:
            return {}
        on_device = self.layout.zeros(self.ctx.device)
        self.engine.eval()
        with torch.random.fork_rng(devices=[]):
            for i, batch in enumerate(loader):
                if i == batches:
                    break
                on_device += self.micro_batch(batch)[1]
        self.engine.train()
        summary = self.layout.summarise(all_reduce_sum(on_device, self.ctx.device))
        metrics = {f"{EVAL_PREFIX}{name}": value for name, value in summary.items() if name != LOSS}
        metrics[f"{EVAL_PREFIX}{LOSS}"] = summary.get(LOSS, 0.0)
        metrics[EVAL_BATCHES] = batches
        return metrics

    # -- logging --

    def interval_metrics(self, stats: torch.Tensor, seconds: float) -> dict[str, float]:
        metrics = {f"train/{k}": v for k, v in self.layout.summarise(stats).items()}
        tokens, samples = host_count(stats, self.layout, "tokens"), host_count(stats, self.layout, "samples")
        tokens_per_s = tokens / max(seconds, 1e-9)
        metrics["train/lr"] = self.step_lr
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics["train/grad_norm"] = float(grad_norm)
        if self.cfg.deepspeed.precision == "fp16":
            scale = getattr(self.engine.optimizer, "loss_scale", None)
            if scale is not None:
                metrics["train/loss_scale"] = float(scale)
        metrics["perf/samples_per_s"] = samples / max(seconds, 1e-9)
        metrics["perf/tokens_per_s"] = tokens_per_s
        if self.peak_tflops and tokens > 0:
            mean_length = tokens / samples  # non-padding tokens
            predictions = host_count(stats, self.layout, "predictions")
            sparse = predictions / tokens if self.objective.sparse_head else None
            flops = self.objective.flops_per_token(self.run.model_cfg, max(1, round(mean_length)), sparse)
            metrics["perf/mfu"] = mfu(tokens_per_s, flops, self.peak_tflops, self.ctx.world_size)
        metrics["perf/memory_gb"] = device_memory_gb(self.ctx.device)
        metrics["train/samples_consumed"] = self.state.samples_consumed
        metrics["train/nonfinite_skipped"] = self.state.nonfinite_total
        return metrics

    # -- the loop --

    def fit(self) -> int:
        """Resume if there is a checkpoint, train to trainer.max_steps (or a stop signal), evaluate,
        save, export. Returns the exit code (0); raises on divergence or a broken run."""
        run_id = self.resume()
        self.start_step = self.state.step
        if self.is_main:
            self.run_log.open()
        self.tracker = make_tracker(self.cfg.logger, self.resolved, self.cfg.output_dir, self.ctx.rank, run_id)
        self.stop.install()
        try:
            return self._loop()
        except NonFiniteLossError:
            self.flush_steps()  # every rank raised it at the same step, so the collective is safe
            raise
        finally:
            self.stop.uninstall()
            self.tracker.finish()
            if self.run_log is not None:
                self.run_log.close()

    def _loop(self) -> int:
        t = self.cfg.trainer
        batches = self.batches()
        started = self.interval_start = time.perf_counter()
        self.paused = 0.0  # seconds of evaluation and saving in the interval, left out of the throughput
        while self.state.step < t.max_steps:
            pending = self.train_step(batches)
            stop = self.stop_agreed()
            if pending is not None:
                self.pending.append(pending)
                self.step_lr = pending.lr
                if self.state.step % t.log_every == 0 or self.state.step == t.max_steps:
                    self._log_interval(started)
            pause_start = time.perf_counter()
            if stop:
                self.save()
                write_clean_stop(self.ctx, self.state.step, self.stop.signal_name, self.checkpoint_dir)
                if self.is_main:
                    console.info(
                        "stopping at step %d on request (%s); resume by running the same command again",
                        self.state.step,
                        self.stop.signal_name or "signal to another rank",
                    )
                return 0
            if pending is not None:  # a skipped step keeps its number: nothing new to evaluate or save
                if t.eval_every and self.state.step % t.eval_every == 0 and self.state.step < t.max_steps:
                    self._log_eval()
                if self.state.step % t.checkpoint_every == 0:
                    self.save()
            self.paused += time.perf_counter() - pause_start
        self.flush_steps()
        final = self._log_eval()
        if self.is_main:
            self.tracker.summary(
                {**final, "train/step": self.state.step, "train/samples_consumed": self.state.samples_consumed}
            )
        if self.state.last_saved_step != self.state.step:
            self.save()
        if t.export_hf:
            self.export()
        return 0

    def _log_interval(self, started: float) -> None:
        """At a logging step: read the pending steps (the one device read in log_every steps), then
        log the interval's metrics; its time ends after that read, so it counts the device's work."""
        self.flush_steps()
        now = time.perf_counter()
        metrics = self.interval_metrics(self.interval, now - self.interval_start - self.paused)
        if self.is_main:
            self.tracker.log(metrics, self.state.step)
            console.info(
                format_progress(
                    self.state.step,
                    self.cfg.trainer.max_steps,
                    metrics[f"train/{LOSS}"],
                    metrics["perf/tokens_per_s"],
                    now - started,
                    start_step=self.start_step,
                )
            )
        self.interval.zero_()
        self.interval_start, self.paused = time.perf_counter(), 0.0

    def _log_eval(self) -> dict[str, float]:
        metrics = self.evaluate()
        if metrics and self.is_main:
            self.tracker.log(metrics, self.state.step)
            self.run_log.write_eval(self.state.step, metrics)
            console.info(
                "eval " + " ".join(f"{k[len(EVAL_PREFIX) :]}={v:.4f}" for k, v in metrics.items() if k != EVAL_BATCHES)
            )
        return metrics

    def export(self) -> None:
        """Rank 0: the Hugging Face export of the final checkpoint to output_dir/hf."""
        if self.is_main:
            out_dir = export_checkpoint(
                self.objective,
                self.checkpoint_dir,
                ckpt.tag_for(self.state.step),
                self.run.model_cfg,
                self.cfg.data_dir,
                os.path.join(self.cfg.output_dir, HF_SUBDIR),
            )
            console.info("exported Hugging Face model to %s", out_dir)


def train(cfg: TrainConfig, resolved: dict) -> int:
    """Run (or resume) the training described by ``cfg`` on this rank; returns the exit code.

    resolved: the resolved Hydra config as a plain dict (tracked with the run, hashed into
    checkpoints, and kept redacted beside each one to be compared on a resume).

    Alone, a failed check stops the process before the process group exists. Under a launcher
    with several ranks, a rank whose own checks failed still joins the group and says so there
    (``check_ranks_agree``), which also compares output_dir and the config across ranks: every
    rank then stops with one message, none waits for the others until the collective timeout.
    """
    check_wandb_login(cfg.logger)  # seconds, not a traceback after the engine is built
    if cfg.trainer.deterministic:
        use_deterministic_kernels()  # before CUDA starts: cuBLAS reads its workspace setting then
    select_local_device()  # before anything touches CUDA
    choose_deepspeed_accelerator()  # before DeepSpeed is first imported
    # DeepSpeed calls torch.distributed's deprecated *_tensor collectives every step.
    warnings.filterwarnings("ignore", message=r".*is deprecated\. Please use", category=FutureWarning)
    show_console()
    try:
        run = prepare_run(cfg, resolved)
        error, agreed = None, agreement_record(run.record, run.resume_tag)
    except (ConfigError, DataContractError) as e:
        if launcher_world_size() == 1:
            raise
        error, agreed = e, {}
    ctx = init_distributed(cfg.trainer.dist_backend, cfg.trainer.dist_timeout_minutes)  # once per process
    check_ranks_agree(ctx, cfg.output_dir, agreed, error)
    os.makedirs(cfg.output_dir, exist_ok=True)
    if ctx.is_main:
        drop_torn_steps_line(cfg.output_dir)
        for line in eval_split_warnings(run.data, cfg.trainer.eval_every):
            log.warning(line)
        console.info(run.data.masking_summary())
        for line in run.data.masking_warnings():
            log.warning(line)
    model, init_report = build_model(run.objective, run.model_cfg, cfg, resuming=run.resume_tag is not None)
    if init_report is not None and ctx.is_main:
        log_init_report(init_report)
    if init_report is None and run.resume_tag is not None:
        init_report = saved_init_report(cfg.output_dir, run.resume_tag)
    if init_report is not None:
        run.record["init_from"] = init_report  # written beside every checkpoint (run_config.json)
    seed_rank(cfg.seed, ctx.rank)
    engine, accumulation = build_engine(model, cfg, ctx.world_size)
    trainer = Trainer(cfg, resolved, ctx, run, engine, accumulation)
    code = trainer.fit()
    dist.barrier()  # leave together: no rank tears the group down while rank 0 still exports
    return code
