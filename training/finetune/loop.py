"""The fine-tuning loop, the same for every task kind, and the run around it.

``run`` reads the task's files through its kind (training/finetune/kinds.py), then either trains
once on task.train_file and evaluates every dev file after each epoch, or, with task.cv_folds=k,
trains k models, each evaluated on the fold it did not see. It writes ``output_dir/results.json``:

    task, kind, main_metric ("<dev>/<metric>"), score (main metric at the end; mean over folds)
    epochs        [{epoch, step, train_loss, lr, "<dev>/<metric>"..., "<dev>/loss", one_class}]   (no cv)
    final         the last epoch's dev metrics (cv: the mean over folds), final_std (cv)
    majority_class  the same metrics of predicting each dev file's most frequent class (cv: mean)
    one_class     {dev name (cv: "fold k heldout"): the class} where every last-epoch prediction is one class
    recipe        {key: value} of optim.lr, train.batch_size, train.epochs chosen (recipe.py) as left unset
    cv            {folds, seed, per_fold: [{fold, train_rows, heldout_rows, epochs, final}], mean, std}
    rows          rows read per file; skipped: per file {total, counts by reason, first}
    model_source  model_dir, its config's architectures, vocab sha256, and for our own export the
                  pre-training run's record (run_config.json of its last checkpoint) and shard manifest
    config        the resolved config (secrets redacted); overrides; seconds

The model is transformers' Auto class for the kind's head on model_dir (training/finetune/encoder.py:
BERT, ModernBERT, ELECTRA's discriminator, or a published encoder); each batch gives it the inputs
its forward takes. Optimizer and schedule are pre-training's (training/optim.py): AdamW, no weight
decay on biases and norm weights (by module type); linear warmup over optim.warmup_ratio of all
steps (step/warmup, so the first update runs at lr 0 when there is warmup), then linear decay to 0;
gradient norm clipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch

from training import optim
from training.config import ConfigError
from training.distributed import resolve_device
from training.finetune import recipe
from training.finetune.config import FinetuneConfig, OptimConfig, TaskConfig, TrainLoopConfig
from training.finetune.encoder import read_encoder_config
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
    """Pre-training's optimizer and schedule (training/optim.py) with fine-tuning's settings: AdamW over
    BERT's two weight-decay groups and a LambdaLR over ``lr_multiplier`` (warmup, linear decay to 0)."""
    shared = cfg.shared()
    optimizer = optim.build_optimizer(model, shared)
    return optimizer, optim.make_scheduler(optimizer, shared, total_steps)


# --- inputs the model takes --------------------------------------------------------------------

OPTIONAL_INPUTS = ("token_type_ids",)
"""Inputs a kind writes for every model that some models do not take (ModernBERT has no segments)."""


def accepted_inputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``inputs`` without the OPTIONAL_INPUTS that model.forward does not name. transformers' task
    models also take ``**kwargs``, which would accept such an input and pass it on to where it does
    not belong, so the named parameters decide."""
    named = inspect.signature(model.forward).parameters
    return {k: v for k, v in inputs.items() if k not in OPTIONAL_INPUTS or k in named}


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
    inputs = accepted_inputs(model, data.inputs)
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        out = model(**batch_at(inputs, rows, device))
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
) -> tuple[dict[str, float], dict[str, str]]:
    """{"<dev name>/<metric>": value, "<dev name>/loss": mean loss} over every dev set, and
    {dev name: class} for the dev sets whose every row is predicted as that one class (kinds
    with ``predicted_classes``)."""
    metrics, one_class = {}, {}
    for name, data in devs.items():
        outputs, loss = predict(model, data, batch_size, device)
        metrics.update({f"{name}/{k}": float(v) for k, v in kind.evaluate(task, data, outputs).items()})
        if loss is not None:
            metrics[f"{name}/loss"] = loss
        if hasattr(kind, "predicted_classes"):
            classes = np.unique(kind.predicted_classes(outputs))
            if len(classes) == 1:
                one_class[name] = data.label_names[int(classes[0])] if data.label_names else str(classes[0])
    return metrics, one_class


def majority_scores(kind, task: TaskConfig, devs: dict[str, TaskData]) -> dict[str, float]:
    """{"<dev name>/<metric>": score of predicting that dev set's most frequent class}; {} for kinds
    without ``majority_class`` (regression, spans)."""
    if not hasattr(kind, "majority_class"):
        return {}
    return {f"{name}/{k}": float(v) for name, data in devs.items() for k, v in kind.majority_class(task, data).items()}


def transformers_output(log_level: str) -> None:
    """transformers' warnings, LOAD REPORT tables and progress bars at log_level=DEBUG; its errors
    only otherwise (kinds.from_pretrained says in one line what the LOAD REPORT would)."""
    from transformers.utils import logging as transformers_logging

    if log_level == "DEBUG":
        transformers_logging.set_verbosity_warning()
        transformers_logging.enable_progress_bar()
    else:
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


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
    majority: Optional[dict[str, float]] = None,
) -> list[dict]:
    """Train ``model`` for loop.epochs on ``train``, evaluating ``devs`` after each epoch.

    Returns one record per epoch (its ``one_class``: {dev name: the class every row was predicted
    as}). Metrics go to the tracker as ``<prefix><key>`` at global step step_offset + the steps
    taken here (folds of a cross-validation follow each other). majority: ``majority_scores`` of
    devs, printed beside each dev score.
    """
    majority = majority or {}
    model.to(device)
    steps_per_epoch = math.ceil(train.num_rows / loop.batch_size)
    total = steps_per_epoch * loop.epochs
    optimizer, scheduler = make_optimizer(model, optim_cfg, total)
    inputs = accepted_inputs(model, train.inputs)
    order = torch.Generator().manual_seed(seed)
    records, step = [], 0
    for epoch in range(1, loop.epochs + 1):
        model.train()
        permutation = torch.randperm(train.num_rows, generator=order)
        epoch_loss, window = 0.0, []
        for start in range(0, train.num_rows, loop.batch_size):
            rows = permutation[start : start + loop.batch_size]
            loss = model(**batch_at(inputs, rows, device, trim=True)).loss
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
        scores, one_class = evaluate_dev_sets(model, kind, task, devs, loop.eval_batch_size, device)
        record.update(scores)
        tracker.log({f"{prefix}{k}": v for k, v in record.items() if k != "step"}, step_offset + step)
        record["one_class"] = one_class
        print(
            f"{label}epoch {epoch}/{loop.epochs} | step {step}/{total} | train loss {record['train_loss']:.4f} | "
            + " | ".join(
                f"{k} {v:.4f}" + (f" (majority class {majority[k]:.4f})" if k in majority else "")
                for k, v in scores.items()
            )
            + "".join(f" | every {name} prediction {cls!r}" for name, cls in one_class.items()),
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
    read_encoder_config(cfg.model_dir)
    if not os.path.isdir(cfg.data_dir):
        raise ConfigError(f"data_dir {cfg.data_dir} is not a directory")
    device = resolve_device(cfg.train.device, "train.device")
    transformers_output(cfg.log_level)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
    train = kind.load(task, os.path.join(cfg.data_dir, task.train_file), tokenizer, split="train")
    cfg, chosen = fill_in_recipe(cfg, resolved, train.num_rows)
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
        "recipe": chosen,
    }
    report_skipped(results["skipped"])

    os.makedirs(cfg.output_dir, exist_ok=True)
    tracker = make_tracker(cfg.logger, redact(resolved), cfg.output_dir, rank=0)
    try:
        if task.cv_folds:
            results.update(cross_validate(cfg, kind, train, tokenizer, device, tracker))
        else:
            torch.manual_seed(cfg.seed)  # the new head's initialisation and dropout
            model, loaded = kind.build_model(cfg.model_dir, task, train.label_names)
            print(loaded, flush=True)
            main = full_metric_name(task, list(devs))
            majority = majority_scores(kind, task, devs)
            epochs = fit(
                model, kind, task, train, devs, cfg.optim, cfg.train, cfg.seed, device, tracker, majority=majority
            )
            final = {k: v for k, v in epochs[-1].items() if "/" in k}
            results.update(
                {
                    "main_metric": main,
                    "score": final[main],
                    "epochs": epochs,
                    "final": final,
                    "majority_class": majority,
                    "one_class": epochs[-1]["one_class"],
                }
            )
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
    main = results["main_metric"]
    spread = f" ± {results['final_std'][main]:.4f}" if task.cv_folds else ""
    majority = results.get("majority_class", {})
    beside = f" (majority class {majority[main]:.4f})" if main in majority else ""
    print(
        f"{task.name}: {main} {results['score']:.4f}{spread}{beside} -> {os.path.join(cfg.output_dir, RESULTS_FILE)}",
        flush=True,
    )
    if results.get("one_class"):
        where = ", ".join(f"{name} all {cls!r}" for name, cls in results["one_class"].items())
        print(
            f"warning: the model predicts one class for every row ({where}): it has learnt nothing it can use. "
            "A small model or a small training set needs a higher lr and more steps than the paper's recipe: "
            "leave optim.lr, train.batch_size and train.epochs unset (chosen by model and data size) or raise "
            "optim.lr and train.epochs (docs/finetuning.md)",
            flush=True,
        )
    return results


def fill_in_recipe(cfg: FinetuneConfig, resolved: dict, train_rows: int) -> tuple[FinetuneConfig, dict]:
    """cfg with the lr, batch size and epochs it leaves null chosen for model_dir's hidden size and
    the rows each model trains on (training/finetune/recipe.py), written into ``resolved`` too (the
    run's record); and {key: value} of what was chosen, also printed."""
    with open(os.path.join(cfg.model_dir, "config.json"), encoding="utf-8") as f:
        hidden_size = json.load(f)["hidden_size"]
    if cfg.task.cv_folds:
        train_rows -= math.ceil(train_rows / cfg.task.cv_folds)  # the largest held-out fold
    optim, loop, chosen = recipe.fill_in(cfg.optim, cfg.train, hidden_size, train_rows)
    for key, value in chosen.items():
        group, name = key.split(".")
        resolved[group][name] = value
    if chosen:
        print(
            "recipe: "
            + ", ".join(f"{key}={value:g}" for key, value in chosen.items())
            + f" for hidden size {hidden_size} and {train_rows} training rows (training/finetune/recipe.py; "
            "set them to choose, or recipe=paper)",
            flush=True,
        )
    return dataclasses.replace(cfg, optim=optim, train=loop), chosen


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
        model, loaded = kind.build_model(cfg.model_dir, task, data.label_names)
        if fold == 0:
            print(loaded, flush=True)  # the same for every fold
        devs = {HELDOUT: data.select(heldout)}
        majority = majority_scores(kind, task, devs)
        epochs = fit(
            model,
            kind,
            task,
            data.select(train_rows),
            devs,
            cfg.optim,
            cfg.train,
            cfg.seed + fold,
            device,
            tracker,
            step_offset=step,
            prefix=f"fold{fold}/",
            label=f"fold {fold + 1}/{k} ",
            majority=majority,
        )
        step += epochs[-1]["step"]
        per_fold.append(
            {
                "fold": fold,
                "train_rows": len(train_rows),
                "heldout_rows": len(heldout),
                "epochs": epochs,
                "final": {key: v for key, v in epochs[-1].items() if "/" in key},
                "majority_class": majority,
            }
        )
        del model
    keys = per_fold[0]["final"].keys()
    mean = {key: float(np.mean([f["final"][key] for f in per_fold])) for key in keys}
    std = {key: float(np.std([f["final"][key] for f in per_fold], ddof=1)) for key in keys}
    majority = {
        key: float(np.mean([f["majority_class"][key] for f in per_fold])) for key in per_fold[0]["majority_class"]
    }
    return {
        "main_metric": main,
        "score": mean[main],
        "final": mean,
        "final_std": std,
        "majority_class": majority,  # the mean over folds
        "one_class": {
            f"fold {f['fold'] + 1} {HELDOUT}": f["epochs"][-1]["one_class"][HELDOUT]
            for f in per_fold
            if f["epochs"][-1]["one_class"]
        },
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
    from training.export import HF_SUBDIR
    from training.run_log import STEPS_FILE

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
