"""The training loop: BERT pre-training under DeepSpeed, resumable to the sample.

    train(cfg, resolved_config)   # every rank; returns the process exit code

Build order: W&B login check -> shards (an object store's copied to the node's cache) and their
manifest -> ``BertConfig`` (vocabulary, sentence head) -> manifest check (``DataContractError``)
-> resume check (the newest complete checkpoint's run_config.json against this run:
``ConfigError`` naming what differs) -> ``trainer.init_from`` check (a Hugging Face directory:
the shards' vocabulary and the configured architecture, ``training.hf_checkpoint``) -> process group -> the ranks agree on output_dir, config and
checkpoint (``check_ranks_agree``; a rank whose own checks failed says so there, so every rank
stops together) -> model, optimizer, schedule -> ``deepspeed.initialize`` -> resume from that
checkpoint, the schedule set to this run's (``optim.restore_schedule_position``).

A *step* is one optimizer step: ``accumulation`` micro batches per rank (``engine.backward`` and
``engine.step`` on each; DeepSpeed steps the optimizer on the last one of the window).

No host syncs between optimizer steps. Within a step nothing computed on the device is read on
the host: losses and counts are summed on the device, and the steps' statistics are reduced over
ranks and read once per ``trainer.log_every`` steps (and before a save, a stop and the end), when
their steps.jsonl lines are written. The host-side agreements of every step (the stop flag, the
example ids) travel over a gloo group (``DistributedContext.control_group``), which never waits for
the device. What still reads the device once per optimizer step is the optimizer's own check of
the gradients (DeepSpeed's gradient norm at the step, or ``optim.SkipNonFiniteStep``'s flag).

Non-finite losses. A micro batch whose loss is not finite is backpropagated as NaN (the loss is
multiplied by NaN), so every gradient it touches is NaN and the optimizer step of its window is
skipped on every rank (the gradients are reduced first, so all ranks see it): DeepSpeed's ZeRO and
bf16/fp16 optimizers skip a step whose gradient norm is not finite, ``optim.SkipNonFiniteStep`` does
at ZeRO stage 0. No gradient of a non-finite micro batch is ever applied, and neither are those of
the other micro batches of its step; the skipped step is not counted (the next step takes its
number and the schedule does not move), its samples are. ``trainer.max_nonfinite_in_a_row``
consecutive skipped steps stop the run with an error. Before each save the ranks check that the
weights are finite and refuse to save if not.

Each step, rank 0 records a line for ``output_dir/steps.jsonl`` (written at the next read of the
statistics, see above): step, losses, learning rate, samples consumed and
(``trainer.record_example_ids``) the example ids of the step (all ranks, rank-major, micro batch
order) -- what a resumed run is compared against, and a record of what each step trained on.

SIGTERM/SIGINT set a flag; at the end of the step the ranks agree on it (over the gloo group), save a
checkpoint, write $BERT_CLEAN_STOP_FILE where a launch recipe set it
(``write_clean_stop``) and return 0. torchrun forwards a SIGTERM it receives to its workers (and
then exits 1 itself, which that file lets a recipe tell from a failure); it kills workers that take
longer than about 30 s, so a slow save under torchrun can be cut short -- the last complete checkpoint then still stands. Data loading and evaluation run under
``torch.random.fork_rng`` so they never consume the global RNG that dropout draws from: a resumed
run (RNG states restored from its checkpoint) draws the same dropout masks as an uninterrupted one.

At the end: evaluation, a final checkpoint, and (rank 0) a Hugging Face export of that checkpoint's
fp32 weights to ``output_dir/hf``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import signal
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from training import checkpoint as ckpt
from training.config import ConfigError, TrainConfig
from training.data import DataContractError, PretrainingData, RunExpectations, dense_mlm_labels, model_inputs
from training.distributed import (
    DistributedContext,
    check_ranks_agree,
    choose_deepspeed_accelerator,
    init_distributed,
    launcher_world_size,
    select_local_device,
)
from training.model import BertConfig, BertForPreTraining, flops_per_token
from training.optim import restore_schedule_position
from training.throughput import mfu, resolve_peak_tflops
from training.tracking import check_wandb_login, format_progress, make_tracker

log = logging.getLogger(__name__)

STEPS_FILE = "steps.jsonl"
EVALS_FILE = "evals.jsonl"  # rank 0: one line per evaluation, {"step": ..., "eval/...": ...}, whatever the logger
HF_SUBDIR = "hf"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses (``trainer.max_nonfinite_in_a_row``)."""


# --- building --------------------------------------------------------------------------------


def open_data(cfg: TrainConfig) -> tuple[BertConfig, PretrainingData]:
    """The model's config from the manifest and the config, and the validated shards.
    Raises DataContractError / ConfigError with what to change, before anything is built.

    An s3:// or gs:// data_dir is first copied into the node-local cache and verified
    (``training.shard_cache``); cfg.data_dir then becomes that local directory, so everything
    downstream (manifest checks, memory-mapped shards, the export's vocab.txt) reads local files.
    The resolved config the run records keeps the data_dir as given."""
    from pipeline import contract
    from pipeline.contract import ContractError
    from training.data import open_pretraining_data
    from training.shard_cache import cached_data_dir

    cfg.data_dir = cached_data_dir(cfg.data_dir, cfg.data.cache_dir, cfg.storage, cfg.data.cache_max_gb)
    try:
        manifest = contract.read_manifest(cfg.data_dir)
    except ContractError as e:
        raise DataContractError(
            f"cannot use data_dir={cfg.data_dir} as training data: {e} (data_dir is the "
            f"data job's output_dir: python -m pipeline output_dir=...)"
        ) from e
    bert_cfg = BertConfig(
        **cfg.model.bert_config_kwargs(manifest.vocab_size, manifest.objective, manifest.special_tokens["pad"])
    )
    expect = RunExpectations.of_model(bert_cfg, max_seq_length=cfg.data.max_seq_length)
    return bert_cfg, open_pretraining_data(cfg.data_dir, cfg.data, cfg.seed, expect, unpad=cfg.trainer.unpad)


def checkpoint_to_resume(cfg: TrainConfig, record: dict) -> Optional[str]:
    """The newest complete checkpoint tag in output_dir, once this run may resume it; None: a
    fresh run. Reads only small files, so a mismatch fails before anything is built.

    record: this run's ``checkpoint.run_record``. Raises ConfigError when there is a checkpoint
    but trainer.resume=false, or when ``checkpoint.check_resumable`` refuses it."""
    checkpoint_dir = os.path.join(cfg.output_dir, ckpt.CHECKPOINTS_SUBDIR)
    tag = ckpt.latest_complete(checkpoint_dir)
    if tag is None:
        return None
    where = os.path.join(checkpoint_dir, tag)
    if not cfg.trainer.resume:
        raise ConfigError(
            f"{checkpoint_dir} holds checkpoints (newest {tag}) but trainer.resume=false: a fresh "
            "run there would mix its checkpoints and steps.jsonl with the old run's; use another "
            "output_dir, or delete the old one"
        )
    saved = ckpt.read_run_record(checkpoint_dir, tag)
    main = os.environ.get("RANK", "0") == "0"  # before the process group: the launcher's rank
    if saved is None:
        if main:
            log.warning(
                "checkpoint %s has no %s (written before configs were kept with checkpoints): the config "
                "could not be compared with this run's; resuming it as it is",
                where,
                ckpt.RUN_CONFIG_FILE,
            )
        return tag
    forced = ckpt.check_resumable(saved, record, where, cfg.trainer.force_resume)
    if forced and main:
        log.warning(
            "trainer.force_resume=true: resuming %s although the config differs:\n  %s", where, "\n  ".join(forced)
        )
    return tag


def init_weights_path(init_from: str) -> str:
    """The model.safetensors that ``trainer.init_from`` names when it is in our own names without a
    config.json (the file, or a directory holding one); ConfigError when there is none, checked
    before anything is built. A directory with a config.json is a Hugging Face checkpoint instead
    (``training.hf_checkpoint``)."""
    path = os.path.join(init_from, "model.safetensors") if os.path.isdir(init_from) else init_from
    if not os.path.exists(init_from):
        raise ConfigError(f"trainer.init_from={init_from} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"trainer.init_from={init_from} holds no model.safetensors (give phase 1's output_dir/hf)")
    return path


def check_init_from(init_from: str, bert_cfg: BertConfig, manifest) -> None:
    """Before anything is built: ``trainer.init_from`` exists, and a Hugging Face directory (our
    export or a published BERT) has the shards' vocabulary and the configured architecture
    (``hf_checkpoint.check_fits``). manifest: the shards' ``ShardManifest``. Raises ConfigError."""
    from training import hf_checkpoint

    if hf_checkpoint.is_hf_directory(init_from):
        hf_checkpoint.check_fits(hf_checkpoint.HFCheckpoint.open(init_from, "trainer.init_from"), bert_cfg, manifest)
    else:
        init_weights_path(init_from)


def load_init_weights(model: BertForPreTraining, init_from: str) -> dict:
    """Copy ``trainer.init_from``'s weights into the freshly initialised ``model``; returns what
    was done, for the log and the run's record: ``hf_checkpoint.InitReport.to_dict()``.

    A Hugging Face directory may lack the heads (a bare BertModel such as MiniLM has no MLM or NSP
    head): those keep the fresh initialisation and are listed under "fresh". A bare safetensors
    file in our names must hold every tensor of this model."""
    from training import hf_checkpoint

    if hf_checkpoint.is_hf_directory(init_from):
        return hf_checkpoint.load_into(model, hf_checkpoint.HFCheckpoint.open(init_from, "trainer.init_from")).to_dict()
    from safetensors.torch import load_file

    path = init_weights_path(init_from)
    weights = load_file(path)
    expected, bert_cfg = model.state_dict(), model.config
    wrong = [
        f"{k} {tuple(v.shape)}, this model {tuple(expected[k].shape)}"
        for k, v in weights.items()
        if k in expected and v.shape != expected[k].shape
    ]
    loaded = None if wrong else model.load_state_dict(weights, strict=False)
    if wrong or loaded.missing_keys or loaded.unexpected_keys:
        missing, unexpected = (loaded.missing_keys, loaded.unexpected_keys) if loaded else ([], [])
        raise ConfigError(
            f"trainer.init_from={init_from} does not fit this model ({bert_cfg.num_hidden_layers} "
            f"layers of {bert_cfg.hidden_size}, vocabulary {bert_cfg.vocab_size:,}): "
            f"{len(wrong)} tensors of another shape {wrong[:2]}, {len(missing)} missing {missing[:2]}, "
            f"{len(unexpected)} unexpected {unexpected[:2]}; use the model preset and shards it was trained with"
        )
    model.tie_weights()
    return {"path": init_from, "weights_file": os.path.basename(path), "fresh": [], "unused": []}


def build_model(bert_cfg: BertConfig, cfg: TrainConfig, resuming: bool) -> tuple[BertForPreTraining, Optional[dict]]:
    """Same initial weights on every rank (seeded by cfg.seed), then ``trainer.init_from``'s where
    it has them (not when resuming). Returns the model and ``load_init_weights``' report (None
    without init_from)."""
    torch.manual_seed(cfg.seed)
    model = BertForPreTraining(bert_cfg, unpad=cfg.trainer.unpad)
    if cfg.trainer.init_from and not resuming:
        return model, load_init_weights(model, cfg.trainer.init_from)
    return model, None


def log_init_report(report: dict) -> None:
    """Rank 0: where the weights came from and which tensors start fresh or go unused."""
    log.warning("trainer.init_from=%s: weights from %s", report["path"], report["weights_file"])
    if report["fresh"]:
        log.warning(
            "%d tensors the checkpoint lacks start from a fresh initialisation (as without init_from): %s",
            len(report["fresh"]),
            ", ".join(report["fresh"]),
        )
    if report["unused"]:
        log.warning(
            "%d tensors of the checkpoint this model has no place for are not used: %s",
            len(report["unused"]),
            ", ".join(report["unused"]),
        )


def saved_init_report(output_dir: str, tag: str) -> Optional[dict]:
    """The "init_from" entry of a checkpoint's run record: a resumed run keeps saying where its
    first weights came from. None when that run started from a random init."""
    saved = ckpt.read_run_record(os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR), tag)
    return (saved or {}).get("init_from")


def check_precision_supported(precision: str) -> None:
    """A precision the accelerator lacks (fp16 on a CPU whose oneDNN has no fp16, as most): say so
    before DeepSpeed fails deep inside engine construction."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    supported = {"fp32": True, "bf16": accelerator.is_bf16_supported(), "fp16": accelerator.is_fp16_supported()}
    if not supported.get(precision, True):
        usable = ", ".join(p for p, ok in supported.items() if ok)
        raise ConfigError(
            f"deepspeed.precision={precision} is not supported on this machine's DeepSpeed "
            f"accelerator ({accelerator.device_name()}); use one of: {usable}"
        )


def sentence_label_counts(statistics: dict, split: str) -> Optional[dict[str, int]]:
    """{label: examples} of ``split`` from a manifest's statistics (``examples/<split>`` and
    ``sentence_pair_negatives/<split>``, nested as the job writes them: label 1 is the negative);
    None where the shards do not count them."""
    examples = (statistics.get("examples") or {}).get(split)
    negatives = statistics.get("sentence_pair_negatives")
    if not isinstance(examples, int) or not isinstance(negatives, dict):
        return None
    return {"0": examples - negatives.get(split, 0), "1": negatives.get(split, 0)}


def eval_split_warnings(data: PretrainingData, eval_every: int) -> list[str]:
    """Rank 0, at start: why the evaluations this run is configured for (``trainer.eval_every`` > 0)
    would measure nothing: an eval split without examples (no evaluation runs and no evals.jsonl is
    written), or sentence-pair labels all of one class in it (its nsp_accuracy is 0 or 1 by construction)."""
    if not eval_every:
        return []
    split = data.cfg.eval_split
    rows = sum(s.rows for s in data.manifest.shards_of(split))
    if not rows:
        return [
            f"trainer.eval_every={eval_every} but {data.data_dir} has no {split!r} examples (the data job held out "
            f"no documents): this run evaluates nothing and writes no {EVALS_FILE}. Give the data job more "
            f"documents or a larger instances.eval_fraction, or set trainer.eval_every=0 to say no evaluation is wanted"
        ]
    counts = sentence_label_counts(data.manifest.statistics, split) if data.has_sentence_label else None
    present = {label: n for label, n in (counts or {}).items() if n > 0}
    if len(present) == 1:
        (label, n), task = next(iter(present.items())), data.manifest.objective.upper()
        return [
            f"every one of the {n:,} {split!r} examples has {task} label {label} (manifest statistics): the "
            f"evaluations' nsp_accuracy measures nothing; give the data job more "
            f"documents to hold out (a random B needs another document)"
        ]
    return []


def seed_rank(seed: int, rank: int) -> None:
    """Per-rank streams for dropout (ranks must not draw the same masks)."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def build_engine(model: BertForPreTraining, cfg: TrainConfig, world_size: int):
    import deepspeed

    from training.deepspeed_config import build_deepspeed_config
    from training.optim import SkipNonFiniteStep, build_optimizer, make_scheduler

    optimizer = build_optimizer(model, cfg.optim, cfg.deepspeed.offload_optimizer)
    if cfg.deepspeed.zero_stage == 0 and cfg.deepspeed.precision != "fp16":
        optimizer = SkipNonFiniteStep(optimizer)  # stage 0 steps it as given: no overflow check of DeepSpeed's
    ds_config = build_deepspeed_config(
        cfg.deepspeed, cfg.trainer, cfg.data, cfg.optim, world_size, sum(p.numel() for p in model.parameters())
    )
    compile_model = cfg.trainer.compile and cfg.deepspeed.zero_stage < 3
    if compile_model:
        compile_before_deepspeed(model, cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=ds_config,
        lr_scheduler=lambda opt: make_scheduler(opt, cfg.optim, cfg.trainer.max_steps),
    )
    if cfg.trainer.compile and not compile_model:
        engine.compile()  # ZeRO-3 gathers parameters in module hooks: DeepSpeed compiles around them
    return engine, ds_config["gradient_accumulation_steps"]


def compile_before_deepspeed(model: BertForPreTraining, cfg: TrainConfig) -> None:
    """``torch.compile`` the model's forward before DeepSpeed wraps the model: the module, its
    parameter names, checkpoints and exports are unchanged, and DeepSpeed's module hooks (which read
    its micro-step counter, a recompile for every value if traced) stay outside the graph. The padded
    path has static shapes once batches are (``data.pad_to_max_length``; the masked slots are fixed
    always): one graph, no breaks (fullgraph). The unpadded path's token count N changes every batch:
    one graph with dynamic shapes."""
    if cfg.trainer.unpad:
        model.forward = torch.compile(model.forward, fullgraph=True, dynamic=True)
    else:
        dynamic = False if cfg.data.pad_to_max_length else None  # None: lengths become dynamic at the 2nd
        model.forward = torch.compile(model.forward, fullgraph=True, dynamic=dynamic)


# --- small pieces of the loop ----------------------------------------------------------------


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


def schedule_change(
    step: int,
    saved_max_steps: Optional[int],
    max_steps: int,
    last_lr: Optional[float],
    saved_next_lr: float,
    next_lr: float,
) -> Optional[str]:
    """The line a resume prints when its schedule is not the checkpoint's: ``trainer.max_steps``
    changed (``saved_max_steps``: the checkpoint's run_config.json), or the rate of the next step
    differs (optim.* changed under force_resume). last_lr: the rate step ``step`` trained at
    (steps.jsonl); saved_next_lr / next_lr: step + 1's under the checkpoint's schedule / this run's.
    None when nothing changed."""
    if saved_max_steps not in (None, max_steps):
        what = f"with max_steps {max_steps} (was {saved_max_steps}): the schedule is recomputed for {max_steps} steps"
    elif not np.isclose(saved_next_lr, next_lr, rtol=1e-6, atol=0.0):
        what = "with other optim settings: the schedule is recomputed with them"
    else:
        return None
    before = f"{last_lr:.1e} at step {step}" if last_lr is not None else f"{saved_next_lr:.1e}"
    return (
        f"resuming at step {step} {what} (as in a fresh run); learning rate "
        f"{before} -> {next_lr:.1e} at step {step + 1} (the checkpoint's schedule would give {saved_next_lr:.1e})"
    )


def has_padding(batch: dict[str, torch.Tensor]) -> bool:
    """Whether any row of a collated batch is padded, from its host-side counts (no device read:
    ``.numpy()`` works on host tensors only)."""
    return int(batch["num_tokens"].numpy()) < batch["input_ids"].numel()


def forward_inputs(batch: dict[str, torch.Tensor], device: torch.device, sparse_head: bool) -> dict:
    """The model's keyword arguments on ``device``. A batch without padding goes without its
    attention mask (and unpadding indices): no mask lets SDPA use its flash kernel."""
    inputs = {k: v.to(device, non_blocking=True) for k, v in model_inputs(batch).items()}
    if not has_padding(batch):
        for name in ("attention_mask", "unpad_index", "cu_seqlens"):
            inputs.pop(name, None)
    if not sparse_head:
        inputs["dense_mlm_labels"] = dense_mlm_labels(inputs)
        del inputs["masked_lm_positions"], inputs["masked_lm_labels"]
    return inputs


DEVICE_STATS = ("loss", "mlm_loss", "nsp_loss", "mlm_correct", "mlm_count", "nsp_correct", "nsp_count", "nonfinite")
"""Statistics of a micro batch computed on the device (from its PreTrainingOutput), summed there."""
HOST_STATS = ("micro_batches", "tokens", "samples")
"""Statistics of a micro batch known on the host from the collated batch itself."""
STATS = DEVICE_STATS + HOST_STATS
"""Layout of a step's statistics vector, summed over micro batches and ranks."""
_I = {name: i for i, name in enumerate(STATS)}


def output_stats(out) -> torch.Tensor:
    """(len(DEVICE_STATS),) float64 on the output's device, no host sync. A non-finite loss counts
    under "nonfinite" and contributes zeros elsewhere (so sums stay readable)."""
    finite = torch.isfinite(out.loss.detach())
    zero = torch.zeros((), device=out.loss.device)
    values = [getattr(out, name) for name in DEVICE_STATS[:-1]]
    values = [zero if v is None else torch.where(finite, v.detach().double(), 0.0) for v in values]
    return torch.stack([*values, (~finite).double()])


def host_stats(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(len(HOST_STATS),) float64 on the host: the counts known from the batch itself (padding
    rows of an evaluation batch, example id -1, are not samples)."""
    samples = int((batch["example_id"].numpy() >= 0).sum())
    return torch.tensor([1.0, float(batch["num_tokens"].numpy()), float(samples)], dtype=torch.float64)


def poisoned_loss(loss: torch.Tensor) -> torch.Tensor:
    """The loss to backpropagate: itself when finite, NaN otherwise, without reading it on the host.
    NaN times anything is NaN, so every gradient the micro batch touches is NaN and the optimizer
    skips the step (a finite-looking gradient of an infinite loss, e.g. -inf logit at the label,
    would otherwise be applied)."""
    nan_if_bad = torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
    return loss * nan_if_bad.to(loss.dtype)


def summarise(stats: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """Mean losses per micro batch and accuracies from summed statistics."""
    n = max(stats[_I["micro_batches"]].item(), 1.0)
    metrics = {f"{prefix}loss": stats[_I["loss"]].item() / n, f"{prefix}mlm_loss": stats[_I["mlm_loss"]].item() / n}
    if stats[_I["mlm_count"]] > 0:
        metrics[f"{prefix}mlm_accuracy"] = (stats[_I["mlm_correct"]] / stats[_I["mlm_count"]]).item()
    if stats[_I["nsp_count"]] > 0:
        metrics[f"{prefix}nsp_loss"] = stats[_I["nsp_loss"]].item() / n
        metrics[f"{prefix}nsp_accuracy"] = (stats[_I["nsp_correct"]] / stats[_I["nsp_count"]]).item()
    return metrics


def all_reduce_sum(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a small tensor over ranks (moved to the device for NCCL), back on the host: a host sync."""
    buf = t.to(device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


@dataclass
class PendingStep:
    """A step taken whose statistics are still on the device, until the next read (``flush_steps``)."""

    step: int
    device_stats: torch.Tensor
    """(len(DEVICE_STATS),) this rank's sums over the step's micro batches, on the device."""
    host_stats: torch.Tensor
    """(len(HOST_STATS),) this rank's, on the host."""
    lr: float
    samples_consumed: int
    example_ids: Optional[list[int]]
    """Every rank's, rank-major (trainer.record_example_ids), else None."""


def device_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak RSS (KiB on Linux)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class RunState:
    """The run's position beyond what DeepSpeed keeps (goes into the client state)."""

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
    bert_cfg: BertConfig
    data: PretrainingData
    engine: object
    accumulation: int
    record: dict
    """``checkpoint.run_record`` of this run, saved beside every checkpoint."""
    resume_tag: Optional[str] = None
    """The checkpoint to resume (``checkpoint_to_resume``), or None."""
    state: RunState = field(default_factory=RunState)

    def __post_init__(self):
        self.checkpoint_dir = os.path.join(self.cfg.output_dir, ckpt.CHECKPOINTS_SUBDIR)
        self.loader = self.data.train_loader(self.ctx.rank, self.ctx.world_size, self.cfg.data.micro_batch_size)
        self.cfg_hash = ckpt.config_hash(self.resolved)
        self.stop = StopRequest()
        self.tracker = None
        self.start_step = 0
        self.peak_tflops = resolve_peak_tflops(self.cfg.trainer.peak_tflops)
        self.step_lr = 0.0
        self.pending: list[PendingStep] = []
        self.interval = torch.zeros(len(STATS), dtype=torch.float64)
        """Summed statistics of the steps read since the last logging step (``flush_steps`` adds)."""
        self.interval_start = self.paused = 0.0
        self.steps_file = None  # rank 0: output_dir/steps.jsonl, open for the run (``open_steps_file``)

    @property
    def is_main(self) -> bool:
        return self.ctx.rank == 0

    # -- resume and save --

    def resume(self) -> Optional[str]:
        """Load the checkpoint chosen by ``checkpoint_to_resume``, if any; returns the tracker's run id."""
        tag = self.resume_tag
        if tag is None:
            if self.is_main:
                self._truncate_steps_file(0)  # lines of a run killed before its first checkpoint
            return None
        client = ckpt.load(self.engine, self.checkpoint_dir, tag, self.ctx.rank)
        self.loader.load_state_dict(client["loader"])
        self.state.step = self.state.last_saved_step = client["step"]
        self.state.samples_consumed = client["samples_consumed"]
        # DeepSpeed restored the saved run's lr (0.0 where its schedule ended): set this run's.
        saved_next_lr = self.engine.get_lr()[0]
        rates = restore_schedule_position(
            self.engine.lr_scheduler, self.cfg.optim, self.cfg.trainer.max_steps, self.state.step
        )
        if self.is_main:
            print(f"resumed from {os.path.join(self.checkpoint_dir, tag)} at step {self.state.step}", flush=True)
            last_lr = self._truncate_steps_file(self.state.step)
            saved = ckpt.read_run_record(self.checkpoint_dir, tag) or {}
            saved_max_steps = saved.get("config", {}).get("trainer", {}).get("max_steps")
            line = schedule_change(
                self.state.step, saved_max_steps, self.cfg.trainer.max_steps, last_lr, saved_next_lr, rates[0]
            )
            if line:
                print(line, flush=True)
        return client.get("tracker_run_id")

    def save(self) -> None:
        self.flush_steps()  # the checkpoint's steps are in steps.jsonl before it is complete
        finite = torch.tensor([1.0 if ckpt.local_weights_finite(self.engine) else 0.0])
        if all_reduce_sum(finite, self.ctx.device).item() < self.ctx.world_size:
            raise RuntimeError(
                f"non-finite weights at step {self.state.step}: refusing to save a checkpoint "
                f"(the last good one is step {self.state.last_saved_step})"
            )
        client = ckpt.client_state(
            self.state.step,
            self.state.samples_consumed,
            self.loader.state_dict(),
            self.tracker.run_id if self.tracker else None,
            self.cfg_hash,
        )
        tag = ckpt.save(
            self.engine,
            self.checkpoint_dir,
            self.state.step,
            client,
            self.ctx.rank,
            self.cfg.trainer.keep_last_k,
            self.record,
        )
        self.state.last_saved_step = self.state.step
        if self.is_main:
            print(f"saved checkpoint {os.path.join(self.checkpoint_dir, tag)}", flush=True)

    def _truncate_steps_file(self, step: int) -> Optional[float]:
        """Drop lines a killed run wrote after its last checkpoint (they will be trained again).
        Returns the learning rate recorded for ``step`` (None: no line for it)."""
        path = os.path.join(self.cfg.output_dir, STEPS_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            keep = [(line, json.loads(line)) for line in f if line.strip()]
        keep = [(line, record) for line, record in keep if record["step"] <= step]
        with open(path, "w") as f:
            f.writelines(line for line, _ in keep)
        return next((record.get("lr") for _, record in reversed(keep) if record["step"] == step), None)

    # -- data --

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

    # -- one step --

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> Optional[PendingStep]:
        """One optimizer step: ``accumulation`` micro batches, each forward, backward and
        ``engine.step`` (DeepSpeed steps the optimizer on the last). Nothing is read from the device
        here. Returns the step's record, or None when the optimizer skipped the step (a non-finite
        micro batch on some rank: see the module docstring)."""
        lr = self.engine.get_lr()[0]  # the rate this step's update uses (the scheduler moves after it)
        on_device = torch.zeros(len(DEVICE_STATS), dtype=torch.float64, device=self.ctx.device)
        on_host = torch.zeros(len(HOST_STATS), dtype=torch.float64)
        ids: list[np.ndarray] = []
        for _ in range(self.accumulation):
            batch = next(batches)
            self.state.samples_consumed += batch["input_ids"].shape[0] * self.ctx.world_size
            out = self.engine(**forward_inputs(batch, self.ctx.device, self.cfg.trainer.sparse_mlm_head))
            self.engine.backward(poisoned_loss(out.loss))
            self.engine.step()
            on_device += output_stats(out)
            on_host += host_stats(batch)
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
            print(
                f"non-finite loss or gradient in step {self.state.step + 1} on some rank: step skipped, its "
                f"{self.accumulation} micro batches per rank dropped ({self.state.nonfinite_in_a_row} in a row)",
                flush=True,
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
        )  # (S, len(STATS)) on the device
        summed = all_reduce_sum(rows, self.ctx.device)
        if self.is_main:
            for pending, stats in zip(self.pending, summed):
                self.write_step(pending, stats)
            self.steps_file.flush()
        self.pending.clear()
        self.interval += summed.sum(dim=0)

    # -- evaluation --

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses and accuracies over trainer.eval_steps batches per rank (null: the whole
        split). Every rank runs the same number of batches (the minimum over ranks): under
        ZeRO-3 each forward is collective."""
        loader = self.data.eval_loader(self.ctx.rank, self.ctx.world_size)
        count = torch.tensor([float(len(loader))], device=self.ctx.device)
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        batches = int(count.item())
        if self.cfg.trainer.eval_steps is not None:
            batches = min(batches, self.cfg.trainer.eval_steps)
        if batches == 0:
            return {}
        on_device = torch.zeros(len(DEVICE_STATS), dtype=torch.float64, device=self.ctx.device)
        on_host = torch.zeros(len(HOST_STATS), dtype=torch.float64)
        self.engine.eval()
        with torch.random.fork_rng(devices=[]):
            for i, batch in enumerate(loader):
                if i == batches:
                    break
                out = self.engine(**forward_inputs(batch, self.ctx.device, self.cfg.trainer.sparse_mlm_head))
                # Weight per-batch means by their counts, so the result is the mean over the split.
                s = output_stats(out)
                for loss, count_name in (("mlm_loss", "mlm_count"), ("nsp_loss", "nsp_count")):
                    s[_I[loss]] = s[_I[loss]] * s[_I[count_name]]
                on_device += s
                on_host += host_stats(batch)
        self.engine.train()
        stats = all_reduce_sum(torch.cat([on_device, on_host.to(self.ctx.device)]), self.ctx.device)
        metrics = {}
        if stats[_I["mlm_count"]] > 0:
            metrics["eval/mlm_loss"] = (stats[_I["mlm_loss"]] / stats[_I["mlm_count"]]).item()
            metrics["eval/mlm_accuracy"] = (stats[_I["mlm_correct"]] / stats[_I["mlm_count"]]).item()
        if stats[_I["nsp_count"]] > 0:
            metrics["eval/nsp_loss"] = (stats[_I["nsp_loss"]] / stats[_I["nsp_count"]]).item()
            metrics["eval/nsp_accuracy"] = (stats[_I["nsp_correct"]] / stats[_I["nsp_count"]]).item()
        metrics["eval/loss"] = metrics.get("eval/mlm_loss", 0.0) + metrics.get("eval/nsp_loss", 0.0)
        metrics["eval/batches_per_rank"] = batches
        return metrics

    # -- logging --

    def interval_metrics(self, stats: torch.Tensor, seconds: float) -> dict[str, float]:
        metrics = {f"train/{k}": v for k, v in summarise(stats).items()}
        tokens_per_s = stats[_I["tokens"]].item() / max(seconds, 1e-9)
        metrics["train/lr"] = self.step_lr
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics["train/grad_norm"] = float(grad_norm)
        if self.cfg.deepspeed.precision == "fp16":
            scale = getattr(self.engine.optimizer, "loss_scale", None)
            if scale is not None:
                metrics["train/loss_scale"] = float(scale)
        metrics["perf/samples_per_s"] = stats[_I["samples"]].item() / max(seconds, 1e-9)
        metrics["perf/tokens_per_s"] = tokens_per_s
        if self.peak_tflops and stats[_I["tokens"]] > 0:
            mean_length = stats[_I["tokens"]].item() / stats[_I["samples"]].item()  # non-padding tokens
            sparse = (stats[_I["mlm_count"]] / stats[_I["tokens"]]).item() if self.cfg.trainer.sparse_mlm_head else None
            flops = flops_per_token(self.bert_cfg, max(1, round(mean_length)), sparse)
            metrics["perf/mfu"] = mfu(tokens_per_s, flops, self.peak_tflops, self.ctx.world_size)
        metrics["perf/memory_gb"] = device_memory_gb(self.ctx.device)
        metrics["train/samples_consumed"] = self.state.samples_consumed
        metrics["train/nonfinite_skipped"] = self.state.nonfinite_total
        return metrics

    def open_steps_file(self) -> None:
        """Rank 0: open output_dir/steps.jsonl for appending, once for the run (after the resume
        cut it to the checkpoint's steps); lines are written and flushed at each ``flush_steps``."""
        if self.is_main:
            self.steps_file = open(os.path.join(self.cfg.output_dir, STEPS_FILE), "a")

    def write_step(self, pending: PendingStep, stats: torch.Tensor) -> None:
        record = {
            "step": pending.step,
            **summarise(stats),
            "lr": pending.lr,
            "samples_consumed": pending.samples_consumed,
        }
        if pending.example_ids is not None:
            record["example_ids"] = pending.example_ids
        if self.resume_tag is not None and pending.step == self.start_step + 1:
            record["resumed_from"] = self.start_step  # where this attempt took over: training.report marks it
        self.steps_file.write(json.dumps(record) + "\n")

    # -- the loop --

    def fit(self) -> int:
        """Resume if there is a checkpoint, train to trainer.max_steps (or a stop signal), evaluate,
        save, export. Returns the exit code (0); raises on divergence or a broken run."""
        run_id = self.resume()
        self.start_step = self.state.step
        self.open_steps_file()
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
            if self.steps_file is not None:
                self.steps_file.close()

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
                    print(
                        f"stopping at step {self.state.step} on request ({self.stop.signal_name or 'signal to another rank'}"
                        f"); resume by running the same command again",
                        flush=True,
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
            print(
                format_progress(
                    self.state.step,
                    self.cfg.trainer.max_steps,
                    metrics["train/loss"],
                    metrics["perf/tokens_per_s"],
                    now - started,
                    start_step=self.start_step,
                ),
                flush=True,
            )
        self.interval.zero_()
        self.interval_start, self.paused = time.perf_counter(), 0.0

    def _log_eval(self) -> dict[str, float]:
        metrics = self.evaluate()
        if metrics and self.is_main:
            self.tracker.log(metrics, self.state.step)
            with open(os.path.join(self.cfg.output_dir, EVALS_FILE), "a") as f:
                f.write(json.dumps({"step": self.state.step, **metrics}) + "\n")
            print(
                "eval " + " ".join(f"{k[5:]}={v:.4f}" for k, v in metrics.items() if k != "eval/batches_per_rank"),
                flush=True,
            )
        return metrics

    def export(self) -> None:
        """Hugging Face export of the final checkpoint (rank 0): ``training.export.
        consolidated_state_dict_from_checkpoint`` reads the fp32 masters of every ZeRO stage and
        world size from the checkpoint's files (DeepSpeed's zero_to_fp32 for its ZeRO optimizers, our
        reader for its BF16 optimizer at ZeRO-1, stage 0's fp32 weights), so no rank has to gather the
        model in memory, and a bf16 run exports its fp32 masters, not the bf16 working copy."""
        if self.is_main:
            from training.export import consolidated_state_dict_from_checkpoint, export_hf

            state_dict = consolidated_state_dict_from_checkpoint(self.checkpoint_dir, ckpt.tag_for(self.state.step))
            out_dir = os.path.join(self.cfg.output_dir, HF_SUBDIR)
            export_hf(state_dict, self.bert_cfg, self.cfg.data_dir, out_dir)
            print(f"exported Hugging Face model to {out_dir}", flush=True)


AGREEMENT_EXCLUDED = ("output_dir", "data_dir")
"""Config keys that may be spelt differently per node: output_dir is compared as a directory
(``distributed.check_ranks_agree``), data_dir by the shards' fingerprint (a node may read its own copy)."""


def agreement_record(record: dict, resume_tag: Optional[str]) -> dict:
    """What every rank must hold the same, as {dotted key: value}: the redacted resolved config
    (``record``: ``checkpoint.run_record``) without ``AGREEMENT_EXCLUDED``, the shards'
    fingerprint and the checkpoint this rank would resume."""
    from training.config import flat_config

    compared = {k: v for k, v in flat_config(record["config"]).items() if k not in AGREEMENT_EXCLUDED}
    compared["data_dir (shards' fingerprint)"] = record["data"]["fingerprint"]
    compared["checkpoint to resume"] = resume_tag
    return compared


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


def use_deterministic_kernels() -> None:
    """``trainer.deterministic``: torch picks deterministic kernels (the backward of index_select /
    index_copy and of SDPA's memory-efficient kernel otherwise add with atomics in a varying order),
    or stops naming an operation that has none; cuBLAS needs a fixed workspace for it."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def prepare_run(cfg: TrainConfig, resolved: dict) -> tuple[BertConfig, PretrainingData, dict, Optional[str]]:
    """This rank's checks before the process group: the shards (model config from their manifest),
    the run record, the checkpoint to resume (or None), init_from and the precision. Raises
    DataContractError / ConfigError with what to change."""
    bert_cfg, data = open_data(cfg)  # fails on a mismatch before any process group or model
    record = ckpt.run_record(resolved, bert_cfg, ckpt.data_identity(data.manifest))
    resume_tag = checkpoint_to_resume(cfg, record)  # fails on another run's checkpoint, as early
    if cfg.trainer.init_from and resume_tag is None:
        check_init_from(cfg.trainer.init_from, bert_cfg, data.manifest)
    check_precision_supported(cfg.deepspeed.precision)
    return bert_cfg, data, record, resume_tag


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
    try:
        bert_cfg, data, record, resume_tag = prepare_run(cfg, resolved)
        error, agreed = None, agreement_record(record, resume_tag)
    except (ConfigError, DataContractError) as e:
        if launcher_world_size() == 1:
            raise
        error, agreed = e, {}
    ctx = init_distributed(cfg.trainer.dist_backend, cfg.trainer.dist_timeout_minutes)  # once per process
    check_ranks_agree(ctx, cfg.output_dir, agreed, error)
    os.makedirs(cfg.output_dir, exist_ok=True)
    if ctx.is_main:
        drop_torn_steps_line(cfg.output_dir)
        for line in eval_split_warnings(data, cfg.trainer.eval_every):
            log.warning(line)
    model, init_report = build_model(bert_cfg, cfg, resuming=resume_tag is not None)
    if init_report is not None and ctx.is_main:
        log_init_report(init_report)
    if init_report is None and resume_tag is not None:
        init_report = saved_init_report(cfg.output_dir, resume_tag)
    if init_report is not None:
        record["init_from"] = init_report  # written beside every checkpoint (run_config.json)
    seed_rank(cfg.seed, ctx.rank)
    engine, accumulation = build_engine(model, cfg, ctx.world_size)
    trainer = Trainer(cfg, resolved, ctx, bert_cfg, data, engine, accumulation, record, resume_tag)
    code = trainer.fit()
    dist.barrier()  # leave together: no rank tears the group down while rank 0 still exports
    return code
