"""The fine-tuning loop, the same for every task kind, and the run around it.

``run`` reads the task's files through its kind (training/finetune/kinds.py), then either trains
once on task.train_file and evaluates every dev file after each epoch, or, with task.cv_folds=k,
trains k models, each evaluated on the fold it did not see. It writes ``output_dir/results.json``:

    task, kind, main_metric ("<dev>/<metric>"), score (main metric at the end; mean over folds)
    epochs        [{epoch, step, train_loss, lr, "<dev>/<metric>"..., "<dev>/loss"}]   (no cv)
    final         the last epoch's dev metrics (cv: the mean over folds), final_std (cv)
    cv            {folds, seed, per_fold: [{fold, train_rows, heldout_rows, epochs, final}], mean, std}
    rows          rows read per file; skipped: per file {total, counts by reason, first}
    model_source  model_dir, its config's architectures, vocab sha256, and for our own export the
                  pre-training run's record (run_config.json of its last checkpoint) and shard manifest
    config        the resolved config (secrets redacted); overrides; seconds

Optimizer: AdamW, no weight decay on 1-D parameters (biases, LayerNorm weights); linear warmup
over optim.warmup_ratio of all steps, then linear decay to 0; gradient norm clipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch

from training.config import ConfigError
from training.distributed import resolve_device
from training.finetune.config import FinetuneConfig, OptimConfig, TaskConfig, TrainLoopConfig
from training.finetune.kinds import TaskData, load_kind
from training.tracking import Tracker, check_wandb_login, make_tracker, redact

RESULTS_FILE = "results.json"
MODEL_SUBDIR = "model"
HELDOUT = "heldout"
"""The dev name of a cross-validation fold's held-out rows."""
NOT_COLLECTED = ("loss", "hidden_states", "attentions")
"""Output fields the loop does not hand to a kind's evaluate."""


# --- optimizer and schedule ------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int):
    """AdamW over two groups (1-D parameters without weight decay) and its LambdaLR schedule."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)  # biases, LayerNorm gains: 1-D
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
    )
    warmup = int(round(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_warmup_decay(step, warmup, total_steps)
    )
    return optimizer, scheduler


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak lr for the update after ``step`` updates: step/warmup rising, then
    (total - step)/(total - warmup) falling to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)  # never 0, so the first update moves the weights
    return max(0.0, (total - step) / max(1, total - warmup))


# --- batches, prediction, evaluation ---------------------------------------------------------


def batch_at(
    inputs: dict[str, torch.Tensor], rows: torch.Tensor, device: torch.device, trim: bool = False
) -> dict[str, torch.Tensor]:
    """The rows of every input tensor, on ``device``. trim: cut every (B, T) tensor to the batch's
    longest row by attention_mask (the padding beyond changes no real position's output; a
    training batch of short sentences then costs its own length, not task.max_seq_length)."""
    batch = {k: v[rows] for k, v in inputs.items()}
    mask = batch.get("attention_mask")
    if trim and mask is not None and mask.ndim == 2:
        width, longest = mask.shape[1], max(int(mask.sum(dim=1).max()), 1)
        # contiguous: a column slice is a strided view, and heads call labels.view(-1) on it
        batch = {k: v[:, :longest].contiguous() if v.ndim >= 2 and v.shape[1] == width else v for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(
    model: torch.nn.Module, data: TaskData, batch_size: int, device: torch.device
) -> tuple[dict[str, np.ndarray], Optional[float]]:
    """The model's outputs over ``data`` in row order (float arrays, first dimension N) and the
    mean loss per row (None when the rows have no labels)."""
    model.eval()
    collected: dict[str, list[np.ndarray]] = {}
    loss_sum, n = 0.0, data.num_rows
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        out = model(**batch_at(data.inputs, rows, device))
        for key, value in out.items():
            if key not in NOT_COLLECTED and isinstance(value, torch.Tensor):
                collected.setdefault(key, []).append(value.float().cpu().numpy())
        if out.get("loss") is not None:
            loss_sum += float(out["loss"]) * len(rows)
        else:
            loss_sum = math.nan
    return {k: np.concatenate(v) for k, v in collected.items()}, (None if math.isnan(loss_sum) else loss_sum / n)


def evaluate_dev_sets(
    model, kind, task: TaskConfig, devs: dict[str, TaskData], batch_size: int, device: torch.device
) -> dict[str, float]:
    """{"<dev name>/<metric>": value, "<dev name>/loss": mean loss} over every dev set."""
    metrics = {}
    for name, data in devs.items():
        outputs, loss = predict(model, data, batch_size, device)
        metrics.update({f"{name}/{k}": float(v) for k, v in kind.evaluate(task, data, outputs).items()})
        if loss is not None:
            metrics[f"{name}/loss"] = loss
    return metrics


# --- training ---------------------------------------------------------------------------------


def fit(
    model,
    kind,
    task: TaskConfig,
    train: TaskData,
    devs: dict[str, TaskData],
    optim_cfg: OptimConfig,
    loop: TrainLoopConfig,
    seed: int,
    device: torch.device,
    tracker: Tracker,
    step_offset: int = 0,
    prefix: str = "",
    label: str = "",
) -> list[dict]:
    """Train ``model`` for loop.epochs on ``train``, evaluating ``devs`` after each epoch.

    Returns one record per epoch. Metrics go to the tracker as ``<prefix><key>`` at global step
    step_offset + the steps taken here (folds of a cross-validation follow each other).
    """
    model.to(device)
    steps_per_epoch = math.ceil(train.num_rows / loop.batch_size)
    total = steps_per_epoch * loop.epochs
    optimizer, scheduler = make_optimizer(model, optim_cfg, total)
    order = torch.Generator().manual_seed(seed)
    records, step = [], 0
    for epoch in range(1, loop.epochs + 1):
        model.train()
        permutation = torch.randperm(train.num_rows, generator=order)
        epoch_loss, window = 0.0, []
        for start in range(0, train.num_rows, loop.batch_size):
            rows = permutation[start : start + loop.batch_size]
            loss = model(**batch_at(train.inputs, rows, device, trim=True)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim_cfg.grad_clip)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            step += 1
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"{label}step {step}: the training loss is {value}; lower optim.lr")
            epoch_loss += value * len(rows)
            window.append(value)
            if step % loop.log_every == 0:
                tracker.log(
                    {f"{prefix}train/loss": float(np.mean(window)), f"{prefix}train/lr": lr}, step_offset + step
                )
                window = []
        record = {"epoch": epoch, "step": step, "train_loss": epoch_loss / train.num_rows, "lr": lr}
        record.update(evaluate_dev_sets(model, kind, task, devs, loop.eval_batch_size, device))
        tracker.log({f"{prefix}{k}": v for k, v in record.items() if k != "step"}, step_offset + step)
        print(
            f"{label}epoch {epoch}/{loop.epochs} | step {step}/{total} | train loss {record['train_loss']:.4f} | "
            + " | ".join(f"{k} {v:.4f}" for k, v in record.items() if "/" in k),
            flush=True,
        )
        records.append(record)
    return records


def fold_rows(num_rows: int, folds: int, seed: int, strata: Optional[Sequence] = None) -> list[list[int]]:
    """The held-out rows of each of ``folds`` folds: a seeded permutation dealt round-robin, within
    each stratum (class) when ``strata`` is given, so every fold keeps the class balance. Sorted."""
    if num_rows < folds:
        raise ConfigError(f"task.cv_folds={folds} needs at least {folds} rows, the training file has {num_rows}")
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(num_rows)]
        if strata is None
        else [np.flatnonzero(np.asarray(strata) == s) for s in sorted(set(strata))]
    )
    out: list[list[int]] = [[] for _ in range(folds)]
    dealt = 0
    for rows in groups:
        for i, row in enumerate(rng.permutation(rows)):
            out[(dealt + i) % folds].append(int(row))  # continue the deal across strata: even sizes
        dealt += len(rows)
    return [sorted(f) for f in out]


# --- the run ----------------------------------------------------------------------------------


def full_metric_name(task: TaskConfig, dev_names: Sequence[str]) -> str:
    """task.main_metric as "<dev name>/<metric>" (a bare metric is on the first dev file)."""
    return task.main_metric if "/" in task.main_metric else f"{dev_names[0]}/{task.main_metric}"


def run(cfg: FinetuneConfig, resolved: dict, overrides: Sequence[str] = ()) -> dict:
    """Fine-tune and evaluate as configured; writes and returns results.json's content."""
    started = time.time()
    task = cfg.task
    kind = load_kind(task.kind)
    kind.check(task)
    check_wandb_login(cfg.logger)
    if not os.path.isfile(os.path.join(cfg.model_dir, "config.json")):
        raise ConfigError(f"model_dir {cfg.model_dir} is not a Hugging Face model directory (no config.json)")
    if not os.path.isdir(cfg.data_dir):
        raise ConfigError(f"data_dir {cfg.data_dir} is not a directory")
    device = resolve_device(cfg.train.device, "train.device")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
    train = kind.load(task, os.path.join(cfg.data_dir, task.train_file), tokenizer, split="train")
    devs = {
        name: kind.load(task, os.path.join(cfg.data_dir, file), tokenizer, split=name)
        for name, file in task.dev_files.items()
    }
    files = {"train": task.train_file, **task.dev_files}
    datasets = {"train": train, **devs}
    results: dict = {
        "task": task.name,
        "kind": task.kind,
        "rows": {name: data.num_rows for name, data in datasets.items()},
        "skipped": {files[name]: data.skipped.to_dict() for name, data in datasets.items()},
        "model_source": model_source(cfg.model_dir),
    }
    report_skipped(results["skipped"])

    os.makedirs(cfg.output_dir, exist_ok=True)
    tracker = make_tracker(cfg.logger, redact(resolved), cfg.output_dir, rank=0)
    try:
        if task.cv_folds:
            results.update(cross_validate(cfg, kind, train, tokenizer, device, tracker))
        else:
            torch.manual_seed(cfg.seed)  # the new head's initialisation and dropout
            model = kind.build_model(cfg.model_dir, task, train.label_names)
            main = full_metric_name(task, list(devs))
            epochs = fit(model, kind, task, train, devs, cfg.optim, cfg.train, cfg.seed, device, tracker)
            final = {k: v for k, v in epochs[-1].items() if "/" in k}
            results.update({"main_metric": main, "score": final[main], "epochs": epochs, "final": final})
            if cfg.save_model:
                model.save_pretrained(os.path.join(cfg.output_dir, MODEL_SUBDIR))
                tokenizer.save_pretrained(os.path.join(cfg.output_dir, MODEL_SUBDIR))
        tracker.summary({**{f"final/{k}": v for k, v in results["final"].items()}, "score": results["score"]})
    finally:
        tracker.finish()
    results.update({"config": redact(resolved), "overrides": list(overrides), "seconds": time.time() - started})
    with open(os.path.join(cfg.output_dir, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, default=str)
        f.write("\n")
    spread = f" ± {results['final_std'][results['main_metric']]:.4f}" if task.cv_folds else ""
    print(
        f"{task.name}: {results['main_metric']} {results['score']:.4f}{spread} -> "
        f"{os.path.join(cfg.output_dir, RESULTS_FILE)}",
        flush=True,
    )
    return results


def cross_validate(
    cfg: FinetuneConfig, kind, data: TaskData, tokenizer, device: torch.device, tracker: Tracker
) -> dict:
    """k models, model i trained on every fold but i and evaluated on fold i after each epoch."""
    task, k = cfg.task, cfg.task.cv_folds
    main = full_metric_name(task, [HELDOUT])
    per_fold, step = [], 0
    for fold, heldout in enumerate(fold_rows(data.num_rows, k, cfg.seed, data.strata)):
        held = set(heldout)
        train_rows = [i for i in range(data.num_rows) if i not in held]
        torch.manual_seed(cfg.seed + fold)
        model = kind.build_model(cfg.model_dir, task, data.label_names)
        epochs = fit(
            model,
            kind,
            task,
            data.select(train_rows),
            {HELDOUT: data.select(heldout)},
            cfg.optim,
            cfg.train,
            cfg.seed + fold,
            device,
            tracker,
            step_offset=step,
            prefix=f"fold{fold}/",
            label=f"fold {fold + 1}/{k} ",
        )
        step += epochs[-1]["step"]
        per_fold.append(
            {
                "fold": fold,
                "train_rows": len(train_rows),
                "heldout_rows": len(heldout),
                "epochs": epochs,
                "final": {key: v for key, v in epochs[-1].items() if "/" in key},
            }
        )
        del model
    keys = per_fold[0]["final"].keys()
    mean = {key: float(np.mean([f["final"][key] for f in per_fold])) for key in keys}
    std = {key: float(np.std([f["final"][key] for f in per_fold], ddof=1)) for key in keys}
    return {
        "main_metric": main,
        "score": mean[main],
        "final": mean,
        "final_std": std,
        "cv": {"folds": k, "seed": cfg.seed, "per_fold": per_fold, "mean": mean, "std": std},
    }


def report_skipped(skipped: dict) -> None:
    for file, report in skipped.items():
        if report["total"]:
            counts = ", ".join(f"{reason}: {n}" for reason, n in report["counts"].items())
            print(f"skipped {report['total']} rows of {file} ({counts}); first: {report['first'][0]}", flush=True)


# --- where the model came from ----------------------------------------------------------------


def model_source(model_dir: str) -> dict:
    """What results.json records of model_dir: its path, config architectures and vocabulary hash;
    for this project's export (``<pre-training output_dir>/hf``) also the pre-training run's
    record (config, architecture, shard identity) and the shards' manifest, when they are there."""
    from pipeline import contract
    from training import checkpoint as ckpt
    from training.trainer import HF_SUBDIR, STEPS_FILE

    path = os.path.abspath(model_dir)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    source: dict = {
        "model_dir": path,
        "architectures": config.get("architectures"),
        "model_type": config.get("model_type"),
    }
    vocab = os.path.join(path, "vocab.txt")
    if os.path.isfile(vocab):
        with open(vocab, "rb") as f:
            source["vocab_file_sha256"] = hashlib.sha256(f.read()).hexdigest()
    run_dir = os.path.dirname(path)
    checkpoints = os.path.join(run_dir, ckpt.CHECKPOINTS_SUBDIR)
    latest = os.path.join(checkpoints, ckpt.LATEST_FILE)
    if os.path.basename(path) != HF_SUBDIR or not os.path.isfile(latest):
        return source
    with open(latest, encoding="utf-8") as f:
        tag = f.read().strip()
    pretraining: dict = {"output_dir": run_dir, "checkpoint": tag, "run": ckpt.read_run_record(checkpoints, tag)}
    steps = os.path.join(run_dir, STEPS_FILE)
    if os.path.isfile(steps):
        with open(steps, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        if lines:
            last = json.loads(lines[-1])
            pretraining["last_step"] = {k: v for k, v in last.items() if not isinstance(v, (list, dict))}
    data_dir = ((pretraining["run"] or {}).get("config") or {}).get("data_dir")
    manifest = os.path.join(data_dir, contract.MANIFEST_FILE) if isinstance(data_dir, str) else None
    if manifest and os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            pretraining["manifest"] = json.load(f)
    source["pretraining"] = pretraining
    return source
