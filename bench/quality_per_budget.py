"""Held-out MLM quality per wall-clock budget: this trainer against transformers' `Trainer`, in one run.

    python bench/quality_per_budget.py [--budget-s 600] [--shards DIR] [--out bench/results]
                                       [--eval-points 10] [--polarity-data DIR] [--work DIR]

Both sides pre-train the mini BERT (training.models.preset_fields("mini"), the YAML preset) on the same shards, from the
same initial weights, with the same batch (32), peak learning rate, warmup and AdamW settings
(BERT's: betas 0.9/0.999, eps 1e-6, weight decay 0.01 off LayerNorm and biases, clipping at 1.0),
each for the same wall-clock budget on this machine, one after the other:

  ours:          `python -m training experiment=cpu_smoke ...` (ZeRO-2, fp32, static masks as stored,
                 the sparse MLM head), stopped by SIGTERM at the deadline: the trainer finishes the
                 step, checkpoints and exits; it saves a checkpoint every k steps on the way, k from a
                 short calibration so that there are about two per evaluation point.
  transformers:  `transformers.Trainer` + `BertForPreTraining` + `DataCollatorForLanguageModeling
                 (mlm_probability=0.15)` (the ecosystem's default recipe: dense MLM head, masks drawn
                 per batch), on the train split's token sequences (the stored masks undone), with the
                 shards' NSP labels; a `TrainerCallback` saves the weights every budget/eval-points
                 seconds and stops training at the deadline. It runs in its own process (this script
                 with --transformers-side), so both sides' clocks start at a process launch.

What a budget counts, the same for both: wall time from launching the training process
(interpreter start, imports, reading the shards, building model and optimizer, every training
step, the snapshots saved on the way) until the end of the first step that finishes after the
deadline. Neither side evaluates while its clock runs (our trainer's in-run evaluation is off):
every snapshot is evaluated afterwards by one function (`evaluate_export`: transformers'
`BertForPreTraining` modules on the masked positions) on the same held-out examples, the eval
split with its stored static masks. The one difference: our snapshots are full DeepSpeed
checkpoints (weights and optimizer states, ~150 MB at mini) written by the trainer, the other
side's are weight-only `save_pretrained` (~45 MB); the time each side spent saving is reported.

Then the two final models are fine-tuned on the polarity task (`python -m training.finetune
task=polarity ... task.cv_folds=5`) when that CLI is there.

Writes <out>/quality_per_budget.png (held-out MLM loss and accuracy against wall time, both
sides) and <out>/quality_per_budget.json (every figure), and prints a table. Goal (issue 11): ours
reaches transformers' final held-out MLM loss in at most half of transformers' budget; the ratio
printed is (time ours needs to reach it) / (transformers' budget), and the same with both sides'
start-up (launch to the end of the first step) left out.

Shards: --shards DIR, or built here with the data job on the embedded Wikipedia sample
(`python -m pipeline ... instances.eval_fraction=0.05`: 3 held-out documents, ~1,500 eval examples,
instead of the default 1% that holds out one).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from pipeline import contract  # noqa: E402
from sample_shards import build_sample_shards  # noqa: E402
from training.config import DataConfig, OptimConfig  # noqa: E402
from training.data import RunExpectations, model_inputs, open_pretraining_data  # noqa: E402
from training.labels import IGNORE_INDEX  # noqa: E402
from training.model import BertConfig, BertForPreTraining  # noqa: E402
from training.models import preset_fields  # noqa: E402

MODEL = "mini"
SIDES = ("ours", "transformers")
PLOT_FILE = "quality_per_budget.png"
JSON_FILE = "quality_per_budget.json"
HUGE_MAX_STEPS = 1_000_000
"""Both sides' max_steps: never reached, the budget stops them. The linear decay over it leaves the
learning rate within 0.1% of its peak after warmup: a constant-rate "anytime" recipe, so a point
of either curve is what that side has at that time, whatever the budget."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=float, default=600.0, help="wall-clock seconds per side (default 600)")
    p.add_argument("--shards", default=None, help="existing shard directory (default: build one under --work)")
    p.add_argument(
        "--out",
        default=os.path.join(REPO, "bench", "results"),
        help=f"where {PLOT_FILE} and {JSON_FILE} go (default bench/results)",
    )
    p.add_argument(
        "--eval-points",
        type=int,
        default=10,
        help="evaluated snapshots per side, evenly spaced in time, the last at the deadline (default 10)",
    )
    p.add_argument(
        "--work",
        default=None,
        help="checkpoints, snapshots and logs (default: a temporary directory, removed at the end)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep --work's temporary directory")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per optimizer step, both sides (default 32)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate, both sides (default 5e-4)")
    p.add_argument("--warmup-steps", type=int, default=30, help="linear warmup steps, both sides (default 30)")
    p.add_argument("--eval-batch-size", type=int, default=64, help="sequences per evaluation forward (default 64)")
    p.add_argument(
        "--eval-examples",
        type=int,
        default=None,
        help="evaluate on the first N held-out examples only (default: the whole eval split)",
    )
    p.add_argument(
        "--polarity-data",
        default=None,
        help="data_dir of `python -m training.finetune task=polarity` (default: gensim's test data, "
        "as conf/finetune/task/polarity.yaml says)",
    )
    p.add_argument("--skip-polarity", action="store_true", help="leave out the downstream fine-tuning")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--transformers-side", default=None, metavar="SPEC_JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error("--budget-s must be positive")
    if args.eval_examples is not None and args.eval_examples < 1:
        p.error("--eval-examples must be >= 1")
    for name in ("eval_points", "batch_size", "eval_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup_steps < 0:
        p.error("--warmup-steps must be >= 0")
    return args


# --- shards, model, initial weights ------------------------------------------------------------


def build_shards(work: str) -> str:
    """The data job on the embedded Wikipedia sample (static masks, length 128) into work/shards."""
    return build_sample_shards(os.path.join(work, "shards"), "instances.eval_fraction=0.05", reuse=False)


def model_config(manifest: contract.ShardManifest) -> BertConfig:
    """The mini BERT the trainer builds for these shards (model=mini: its vocabulary, [PAD] and head)."""
    return BertConfig(
        vocab_size=manifest.vocab_size,
        pad_token_id=manifest.special_tokens["pad"],
        with_nsp_head=manifest.objective != "none",
        **preset_fields(MODEL),
    )


def write_initial_weights(bert_cfg: BertConfig, shards: str, out_dir: str, seed: int) -> str:
    """One seeded initialisation, exported as a Hugging Face directory: our trainer starts from it
    (trainer.init_from) and transformers' side loads it (from_pretrained), so both start equal."""
    from training.export import export_hf

    torch.manual_seed(seed)
    return export_hf(BertForPreTraining(bert_cfg).state_dict(), bert_cfg, shards, out_dir)


def seconds_per_step(bert_cfg: BertConfig, shards: str, batch_size: int, seed: int, steps: int = 3) -> float:
    """Our model's training step time on real batches (1 untimed + `steps` timed), in this process:
    only to space the trainer's checkpoints (checkpoint_every), not a measured figure."""
    from training.optim import build_optimizer

    cfg = DataConfig(micro_batch_size=batch_size, num_workers=0, pin_memory=False)
    data = open_pretraining_data(shards, cfg, seed, RunExpectations.of_model(bert_cfg))
    torch.manual_seed(seed)
    model = BertForPreTraining(bert_cfg).train()
    optimizer = build_optimizer(model, OptimConfig())
    times = []
    for i, batch in zip(range(steps + 1), data.train_loader()):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**model_inputs(batch)).loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def snapshot_targets(budget_s: float, points: int) -> list[float]:
    """Seconds at which a snapshot is taken, the deadline excluded (the final one is taken there)."""
    return [budget_s * i / points for i in range(1, points)]


# --- our trainer --------------------------------------------------------------------------------


def run_ours(
    args,
    shards: str,
    init_dir: Optional[str],
    work: str,
    checkpoint_every: int,
    name: str = "ours",
    overrides: tuple[str, ...] = (),
) -> dict:
    """`python -m training` until the deadline, then SIGTERM. Returns the step timeline observed in
    steps.jsonl ({step: seconds since launch}, polled every 0.1 s), the exit code and the log.
    init_dir: the initial weights (trainer.init_from), None: the trainer's own seeded initialisation;
    name: the run's directory and log under work; overrides: more key=value / group=option settings,
    after this benchmark's own (bench/recipes_per_budget.py: the recipes)."""
    out = os.path.join(work, name)
    log_path = os.path.join(work, f"{name}.log")
    cmd = [
        sys.executable,
        "-m",
        "training",
        "experiment=cpu_smoke",
        f"data_dir={shards}",
        f"output_dir={out}",
        f"seed={args.seed}",
        *([f"trainer.init_from={init_dir}"] if init_dir else []),
        f"trainer.max_steps={HUGE_MAX_STEPS}",
        f"trainer.global_batch_size={args.batch_size}",
        f"data.micro_batch_size={args.batch_size}",
        "trainer.eval_every=0",
        f"trainer.checkpoint_every={checkpoint_every}",
        "trainer.keep_last_k=1000000",
        "trainer.log_every=10",
        "trainer.record_example_ids=false",
        "trainer.export_hf=false",
        f"optim.lr={args.lr}",
        f"optim.warmup_steps={args.warmup_steps}",
        *overrides,
    ]
    print(f"{name}: python", " ".join(cmd[1:]), flush=True)
    steps_path = os.path.join(out, "steps.jsonl")
    stamps: dict[int, float] = {}
    records: dict[int, dict] = {}
    offset, pending = 0, ""
    term_at = None

    def poll(now: float) -> None:
        nonlocal offset, pending
        if not os.path.exists(steps_path):
            return
        with open(steps_path) as f:
            f.seek(offset)
            chunk = f.read()
            offset = f.tell()
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            if line.strip():
                record = json.loads(line)
                stamps[record["step"]] = now
                records[record["step"]] = record

    with open(log_path, "w") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        while proc.poll() is None:
            now = time.monotonic() - t0
            poll(now)
            if term_at is None and now >= args.budget_s:
                proc.send_signal(signal.SIGTERM)  # the trainer ends the step, checkpoints, exits 0
                term_at = now
            if term_at is not None and now > term_at + 600:
                proc.kill()
                raise SystemExit(f"{name}: the trainer did not stop within 600 s of SIGTERM: see {log_path}")
            time.sleep(0.1)
        poll(time.monotonic() - t0)
    if proc.returncode:
        with open(log_path) as f:
            sys.stderr.write(f.read()[-4000:])
        raise SystemExit(f"{name}: the trainer failed (exit {proc.returncode}): see {log_path}")
    return {
        "output_dir": out,
        "log": log_path,
        "stamps": stamps,
        "records": records,
        "sigterm_s": term_at,
        "overrides": cmd[3:],
    }


def our_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, tag) of every complete checkpoint, by step."""
    from training import checkpoint as ckpt

    checkpoint_dir = os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR)
    return sorted((ckpt.step_of(tag), tag) for tag in ckpt.complete_tags(checkpoint_dir))


def pick_nearest(candidates: list[tuple[float, int]], targets: list[float]) -> list[int]:
    """For each target time, the candidate (seconds, step) nearest to it; distinct steps, in order."""
    chosen = []
    for target in targets:
        seconds, step = min(candidates, key=lambda c: abs(c[0] - target))
        if step not in chosen:
            chosen.append(step)
    return sorted(chosen)


def export_our_checkpoint(output_dir: str, tag: str, bert_cfg: BertConfig, shards: str, dest: str) -> str:
    """A Hugging Face directory of one of our checkpoints (the trainer's own export code)."""
    from training import checkpoint as ckpt
    from training.export import consolidated_state_dict_from_checkpoint, export_hf

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # DeepSpeed's reader's chatter
        state = consolidated_state_dict_from_checkpoint(os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR), tag)
    return export_hf(state, bert_cfg, shards, dest)


def ours_timeline(run: dict, checkpoint_every: int) -> dict:
    """Snapshot times and what the trainer's checkpoint saves cost: the extra time of the step
    after each checkpoint over the median step (an estimate; the trainer does not time its saves)."""
    stamps = run["stamps"]
    steps = sorted(stamps)
    gaps = {s: stamps[s] - stamps[s - 1] for s in steps if s - 1 in stamps}
    plain = sorted(g for s, g in gaps.items() if (s - 1) % checkpoint_every) or sorted(gaps.values())
    median = plain[len(plain) // 2] if plain else 0.0
    save_s = sum(max(0.0, g - median) for s, g in gaps.items() if (s - 1) % checkpoint_every == 0)
    return {
        "first_step_s": stamps[steps[0]] if steps else None,
        "steps": steps[-1] if steps else 0,
        "median_step_s": median,
        "checkpoint_save_s_estimate": save_s,
    }


# --- transformers' Trainer ------------------------------------------------------------------------


class UnmaskedTrainSplit(torch.utils.data.Dataset):
    """The train split's token sequences with the stored static masks undone (the original ids put
    back at the masked positions), as features for DataCollatorForLanguageModeling: input_ids,
    token_type_ids, special_tokens_mask (the vocabulary's special tokens, as transformers' own
    get_special_tokens_mask) and next_sentence_label. Shards of dynamic masking are stored unmasked."""

    def __init__(self, shards: str, special_ids: list[int], with_sentence_label: bool):
        import numpy as np

        manifest = contract.read_manifest(shards)
        self.special = np.array(sorted(special_ids))
        self.ids: list = []  # (T,) int64 per row
        b_starts, labels = [], []
        for shard in manifest.shards_of("train"):
            table = contract.open_shard(os.path.join(shards, shard.file))
            ids_col = table.column(contract.INPUT_IDS).combine_chunks()
            ids_off, ids_val = ids_col.offsets.to_numpy(), ids_col.values.to_numpy()  # absolute offsets
            if contract.MASKED_LM_POSITIONS in table.column_names:
                pos_col = table.column(contract.MASKED_LM_POSITIONS).combine_chunks()
                pos_off, pos_val = pos_col.offsets.to_numpy(), pos_col.values.to_numpy()
                lab_val = table.column(contract.MASKED_LM_IDS).combine_chunks().values.to_numpy()
            else:
                pos_off = None
            for r in range(table.num_rows):
                ids = ids_val[ids_off[r] : ids_off[r + 1]].astype(np.int64)  # (T,) a private copy
                if pos_off is not None:
                    a, b = pos_off[r], pos_off[r + 1]
                    ids[pos_val[a:b]] = lab_val[a:b]  # the original tokens back at the masked positions
                self.ids.append(ids)
            b_starts.append(table.column(contract.SEGMENT_B_START).to_numpy())
            if with_sentence_label:
                labels.append(table.column(contract.NEXT_SENTENCE_LABEL).to_numpy())
        self.b_start = np.concatenate(b_starts)  # (R,)
        self.sentence_label = np.concatenate(labels) if with_sentence_label else None  # (R,)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        ids = self.ids[i]
        feature = {
            "input_ids": ids.tolist(),
            "token_type_ids": (np.arange(len(ids)) >= self.b_start[i]).astype(np.int64).tolist(),
            "special_tokens_mask": np.isin(ids, self.special).astype(np.int64).tolist(),
        }
        if self.sentence_label is not None:
            feature["next_sentence_label"] = int(self.sentence_label[i])
        return feature


def transformers_side(spec_path: str) -> None:
    """The transformers run (a process of its own): Trainer + BertForPreTraining +
    DataCollatorForLanguageModeling, snapshots on a wall clock that started at spec["t0"]."""
    with open(spec_path) as f:
        spec = json.load(f)
    t0, budget = spec["t0"], spec["budget_s"]
    import transformers
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(spec["init_dir"])
    model = transformers.BertForPreTraining.from_pretrained(spec["init_dir"], attn_implementation="sdpa")
    manifest = contract.read_manifest(spec["shards"])
    train = UnmaskedTrainSplit(spec["shards"], list(manifest.special_tokens.values()), manifest.objective != "none")
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    snapshots = os.path.join(spec["work"], "snapshots")
    timeline: list[dict] = []

    class WallClockBudget(TrainerCallback):
        """Saves the weights at each target time and stops training at the deadline."""

        def __init__(self):
            self.targets = list(spec["targets"])
            self.first_step_s = None
            self.save_s = 0.0

        def save(self, step: int, seconds: float, final: bool) -> None:
            start = time.monotonic()
            path = os.path.join(snapshots, f"step{step:08d}")
            model.save_pretrained(path, safe_serialization=True)
            self.save_s += time.monotonic() - start
            timeline.append({"step": step, "t_s": seconds, "snapshot": path, "final": final})

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic() - t0
            if self.first_step_s is None:
                self.first_step_s = now
            if now >= budget:
                self.save(state.global_step, now, final=True)
                control.should_training_stop = True
            elif self.targets and now >= self.targets[0]:
                while self.targets and now >= self.targets[0]:
                    self.targets.pop(0)
                self.save(state.global_step, now, final=False)
            return control

    budget_cb = WallClockBudget()
    targs = TrainingArguments(
        output_dir=os.path.join(spec["work"], "trainer"),
        per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"],
        warmup_steps=spec["warmup_steps"],
        max_steps=HUGE_MAX_STEPS,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-6,
        max_grad_norm=1.0,
        logging_steps=50,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=True,
        seed=spec["seed"],
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator, callbacks=[budget_cb])
    trainer.train()
    tokenizer.save_pretrained(timeline[-1]["snapshot"])  # after the clock: the final model fine-tunes
    with open(os.path.join(spec["work"], "timeline.json"), "w") as f:
        json.dump(
            {
                "points": timeline,
                "first_step_s": budget_cb.first_step_s,
                "snapshot_save_s": budget_cb.save_s,
                "steps": timeline[-1]["step"],
                "train_rows": len(train),
            },
            f,
            indent=1,
        )


def run_transformers(args, shards: str, init_dir: str, work: str) -> dict:
    """This script with --transformers-side, its clock started just before the launch."""
    out = os.path.join(work, "transformers")
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(work, "transformers.log")
    spec_path = os.path.join(out, "spec.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--transformers-side", spec_path]
    print(f"transformers: Trainer + BertForPreTraining + DataCollatorForLanguageModeling (log {log_path})", flush=True)
    with open(log_path, "w") as log:
        t0 = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child on Linux
        with open(spec_path, "w") as f:
            json.dump(
                {
                    "t0": t0,
                    "budget_s": args.budget_s,
                    "targets": snapshot_targets(args.budget_s, args.eval_points),
                    "shards": shards,
                    "init_dir": init_dir,
                    "work": out,
                    "batch_size": args.batch_size,
                    "lr": args.lr,
                    "warmup_steps": args.warmup_steps,
                    "seed": args.seed,
                },
                f,
            )
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            code = proc.wait(timeout=args.budget_s + 600)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            raise SystemExit(f"transformers' side ran 600 s past its budget: see {log_path}") from e
    if code:
        with open(log_path) as f:
            sys.stderr.write(f.read()[-4000:])
        raise SystemExit(f"transformers' side failed (exit {code}): see {log_path}")
    with open(os.path.join(out, "timeline.json")) as f:
        return {**json.load(f), "log": log_path}


# --- the one evaluation -----------------------------------------------------------------------------


def eval_batches(
    shards: str, bert_cfg: BertConfig, batch_size: int, seed: int, limit: Optional[int] = None
) -> list[dict]:
    """The eval split in storage order (its first `limit` rows if set) with its stored static masks
    (dynamic shards: the trainer's own fixed eval masking, epoch 0), collated once and reused for
    every snapshot of both sides."""
    cfg = DataConfig(micro_batch_size=batch_size, num_workers=0, pin_memory=False)
    data = open_pretraining_data(shards, cfg, seed, RunExpectations.of_model(bert_cfg))
    batches, rows = [], 0
    for batch in data.eval_loader():
        if limit is not None and rows + len(batch["input_ids"]) > limit:
            keep = limit - rows
            batch = {k: v[:keep] if v.dim() else v for k, v in batch.items()}  # num_tokens is 0-d: unused here
        batches.append(batch)
        rows += len(batch["input_ids"])
        if limit is not None and rows >= limit:
            break
    if not batches:
        raise SystemExit(f"{shards} has no eval examples: build the shards with instances.eval_fraction > 0")
    return batches


@torch.no_grad()
def evaluate_export(model_dir: str, batches: list[dict]) -> dict:
    """Held-out MLM loss and accuracy (over every masked position) and NSP loss and accuracy of a
    Hugging Face directory, with transformers' BertForPreTraining modules, no dropout. The MLM head
    runs on the masked positions only: the same numbers as the dense head, at a fraction of its cost."""
    import torch.nn.functional as F
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model = transformers.BertForPreTraining.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    sums = {"mlm_loss": 0.0, "mlm_correct": 0, "mlm_count": 0, "nsp_loss": 0.0, "nsp_correct": 0, "nsp_count": 0}
    for b in batches:
        out = model.bert(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]
        )
        positions, labels = b["masked_lm_positions"], b["masked_lm_labels"]  # (B, P)
        real = labels != IGNORE_INDEX  # (B, P)
        rows = torch.arange(positions.shape[0])[:, None].expand_as(positions)  # (B, P)
        hidden = out.last_hidden_state[rows[real], positions[real]]  # (N, H)
        logits = model.cls.predictions(hidden)  # (N, V)
        target = labels[real]  # (N,)
        sums["mlm_loss"] += float(F.cross_entropy(logits, target, reduction="sum"))
        sums["mlm_correct"] += int((logits.argmax(-1) == target).sum())
        sums["mlm_count"] += int(target.numel())
        if "next_sentence_label" in b:
            nsp_logits = model.cls.seq_relationship(out.pooler_output)  # (B, 2)
            sums["nsp_loss"] += float(F.cross_entropy(nsp_logits, b["next_sentence_label"], reduction="sum"))
            sums["nsp_correct"] += int((nsp_logits.argmax(-1) == b["next_sentence_label"]).sum())
            sums["nsp_count"] += int(b["next_sentence_label"].numel())
    metrics = {
        "mlm_loss": sums["mlm_loss"] / sums["mlm_count"],
        "mlm_accuracy": sums["mlm_correct"] / sums["mlm_count"],
        "mlm_predictions": sums["mlm_count"],
    }
    if sums["nsp_count"]:
        metrics.update(
            nsp_loss=sums["nsp_loss"] / sums["nsp_count"], nsp_accuracy=sums["nsp_correct"] / sums["nsp_count"]
        )
    return metrics


# --- comparison -----------------------------------------------------------------------------------


def time_to_reach(points: list[dict], target: float) -> dict:
    """When a curve of evaluated points (by time) first gets to a held-out MLM loss <= target:
    `measured_s`, the first evaluated point at or below it (what the goal is judged on), and
    `interpolated_s`, linear between it and the point before (None when the first point is already
    below); both None if the curve never gets there."""
    previous = None
    for p in points:
        if p["mlm_loss"] <= target:
            interpolated = None
            if previous is not None:
                frac = (previous["mlm_loss"] - target) / (previous["mlm_loss"] - p["mlm_loss"])
                interpolated = previous["t_s"] + frac * (p["t_s"] - previous["t_s"])
            return {"measured_s": p["t_s"], "interpolated_s": interpolated, "step": p["step"]}
        previous = p
    return {"measured_s": None, "interpolated_s": None, "step": None}


def bracket(points: list[dict], target: float) -> Optional[tuple[float, float]]:
    """(t of the last point above target, t of the first at or below) when there is such a pair."""
    for a, b in zip(points, points[1:]):
        if a["mlm_loss"] > target >= b["mlm_loss"]:
            return a["t_s"], b["t_s"]
    return None


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"ours": "tab:blue", "transformers": "tab:orange"}
    for side in SIDES:
        pts = result[side]["points"]
        t = [p["t_s"] for p in pts]
        ax_loss.plot(t, [p["mlm_loss"] for p in pts], "o-", color=colors[side], label=result[side]["label"])
        ax_acc.plot(t, [100 * p["mlm_accuracy"] for p in pts], "o-", color=colors[side], label=result[side]["label"])
    target = result["comparison"]["transformers_final_mlm_loss"]
    ax_loss.axhline(target, color=colors["transformers"], ls=":", lw=1, label=f"transformers' final loss {target:.3f}")
    reach = result["comparison"]["ours_reaches_it"]["measured_s"]
    if reach is not None:
        ax_loss.axvline(
            reach,
            color=colors["ours"],
            ls=":",
            lw=1,
            label=f"ours reaches it: {reach:.0f} s = {result['comparison']['ratio']:.2f} x budget",
        )
    for ax, name in ((ax_loss, "held-out MLM loss"), (ax_acc, "held-out MLM accuracy (%)")):
        ax.axvline(result["setup"]["budget_s"], color="grey", ls="--", lw=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("wall time since the training process started (s)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"mini BERT, batch {result['setup']['batch_size']}, {result['setup']['budget_s']:.0f} s each, "
        f"{result['setup']['machine']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- downstream -----------------------------------------------------------------------------------


def polarity_data_dir(given: Optional[str]) -> Optional[str]:
    """--polarity-data, else gensim's test data (conf/finetune/task/polarity.yaml: the 200 Pang & Lee
    sentences that gensim's wheel ships, the sample corpus's package)."""
    if given:
        return given
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "test", "test_data")


def polarity_unavailable(data_dir: Optional[str]) -> Optional[str]:
    """None when `python -m training.finetune task=polarity` can run here, else why not."""
    missing = [
        p
        for p in ("training/finetune/__main__.py", "conf/finetune/task/polarity.yaml")
        if not os.path.exists(os.path.join(REPO, p))
    ]
    if missing:
        return f"not in this checkout: {', '.join(missing)}"
    if data_dir is None:
        return "no polarity data: install gensim (pip install -e '.[sample]') or pass --polarity-data"
    if not os.path.isdir(data_dir):
        return f"--polarity-data {data_dir} is not a directory"
    return None


def run_polarity(model_dir: str, out_dir: str, data_dir: str, seed: int) -> dict:
    """5-fold cross-validated polarity accuracy of one export, by the fine-tuning CLI (its
    results.json: `score` is the mean over folds of the main metric, accuracy)."""
    cmd = [
        sys.executable,
        "-m",
        "training.finetune",
        "task=polarity",
        f"data_dir={data_dir}",
        f"model_dir={model_dir}",
        f"output_dir={out_dir}",
        "task.cv_folds=5",
        f"seed={seed}",
        "logger=disabled",
    ]
    print("  python", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        return {"error": (done.stdout[-1500:] + done.stderr[-1500:]).strip(), "seconds": seconds}
    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    main = results["main_metric"]
    return {
        "accuracy": results["score"],
        "std_over_folds": results.get("final_std", {}).get(main),
        "main_metric": main,
        "per_fold": [f["final"].get(main) for f in results.get("cv", {}).get("per_fold", [])],
        "seconds": seconds,
        "results_json": os.path.join(out_dir, "results.json"),
    }


# --- main -----------------------------------------------------------------------------------------


def machine() -> str:
    return f"CPU, {torch.get_num_threads()} threads ({os.cpu_count()} cores), torch {torch.__version__}"


def main() -> None:
    args = parse_args()
    if args.transformers_side:
        transformers_side(args.transformers_side)
        return
    if importlib.util.find_spec("accelerate") is None:  # transformers' Trainer needs it
        raise SystemExit("transformers' Trainer needs accelerate: pip install 'accelerate>=1.1.0'")
    import transformers

    started = time.perf_counter()
    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.mkdtemp(prefix="quality_per_budget_")
        work = tmp
    os.makedirs(work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    shards = args.shards or build_shards(work)
    manifest = contract.read_manifest(shards)
    bert_cfg = model_config(manifest)
    init_dir = write_initial_weights(bert_cfg, shards, os.path.join(work, "init"), args.seed)
    evals = eval_batches(shards, bert_cfg, args.eval_batch_size, args.seed, args.eval_examples)
    n_eval = sum(int(b["input_ids"].shape[0]) for b in evals)

    step_s = seconds_per_step(bert_cfg, shards, args.batch_size, args.seed)
    checkpoint_every = max(1, int(args.budget_s / step_s / (2 * args.eval_points)))
    print(f"calibration: {step_s:.2f} s per step of ours -> a checkpoint every {checkpoint_every} steps", flush=True)

    # ours, then transformers: one at a time on the machine
    clock = time.perf_counter()
    ours_run = run_ours(args, shards, init_dir, work, checkpoint_every)
    ours_wall = time.perf_counter() - clock
    clock = time.perf_counter()
    hf_run = run_transformers(args, shards, init_dir, work)
    hf_wall = time.perf_counter() - clock

    # evaluation: both sides' snapshots, one function, the same examples
    eval_start = time.perf_counter()
    checkpoints = [(step, tag) for step, tag in our_checkpoints(ours_run["output_dir"]) if step in ours_run["stamps"]]
    if not checkpoints:
        raise SystemExit(f"our trainer left no checkpoint with a recorded step: see {ours_run['log']}")
    by_step = dict(checkpoints)
    final_step = checkpoints[-1][0]
    candidates = [(ours_run["stamps"][s], s) for s, _ in checkpoints[:-1]]
    targets = snapshot_targets(args.budget_s, args.eval_points)
    chosen = (pick_nearest(candidates, targets) if candidates else []) + [final_step]
    snap_dir = os.path.join(work, "ours_snapshots")

    def our_point(step: int) -> dict:
        path = export_our_checkpoint(
            ours_run["output_dir"], by_step[step], bert_cfg, shards, os.path.join(snap_dir, by_step[step])
        )
        point = {"step": step, "t_s": ours_run["stamps"][step], "snapshot": path, "final": step == final_step}
        point.update(evaluate_export(path, evals))
        print(
            f"  ours         {point['t_s']:7.1f} s  step {step:6d}  mlm loss {point['mlm_loss']:.4f}  "
            f"acc {point['mlm_accuracy']:.2%}",
            flush=True,
        )
        return point

    n_masked = sum(int((b["masked_lm_labels"] != IGNORE_INDEX).sum()) for b in evals)
    print(f"evaluating on {n_eval} held-out examples ({n_masked} masked tokens)", flush=True)
    ours_points = [our_point(s) for s in chosen]
    hf_points = []
    for p in hf_run["points"]:
        point = {**p, **evaluate_export(p["snapshot"], evals)}
        hf_points.append(point)
        print(
            f"  transformers {point['t_s']:7.1f} s  step {point['step']:6d}  mlm loss {point['mlm_loss']:.4f}  "
            f"acc {point['mlm_accuracy']:.2%}",
            flush=True,
        )

    target = hf_points[-1]["mlm_loss"]
    # refine where ours crosses transformers' final loss with the checkpoints between the two points
    span = bracket(ours_points, target)
    if span:
        extra = [s for t, s in candidates if span[0] < t < span[1] and s not in chosen]
        if extra:
            print(f"  refining the crossing with {len(extra)} more checkpoint(s) of ours", flush=True)
            ours_points = sorted(ours_points + [our_point(s) for s in extra], key=lambda p: p["t_s"])
    eval_s = time.perf_counter() - eval_start

    reach = time_to_reach(ours_points, target)
    ratio = reach["measured_s"] / args.budget_s if reach["measured_s"] is not None else None
    ratio_interp = reach["interpolated_s"] / args.budget_s if reach["interpolated_s"] is not None else None

    # downstream
    polarity: dict = {}
    polarity_dir = polarity_data_dir(args.polarity_data)
    why_not = "--skip-polarity" if args.skip_polarity else polarity_unavailable(polarity_dir)
    pol_start = time.perf_counter()
    if why_not:
        print(f"polarity: skipped ({why_not})", flush=True)
        polarity = {"skipped": why_not}
    else:
        print("polarity (5-fold cross-validation) of both final models:", flush=True)
        finals = {"ours": ours_points[-1]["snapshot"], "transformers": hf_points[-1]["snapshot"]}
        for side in SIDES:
            entry = run_polarity(finals[side], os.path.join(work, "polarity", side), polarity_dir, args.seed)
            polarity[side] = entry
            if "error" in entry:
                print(f"  {side}: failed: {entry['error'][-600:]}", flush=True)
    pol_s = time.perf_counter() - pol_start

    ours_info = ours_timeline(ours_run, checkpoint_every)
    # the same ratio with each side's start-up (launch to the end of its first step) left out
    ratio_steps = None
    if reach["measured_s"] is not None:
        ratio_steps = (reach["measured_s"] - ours_info["first_step_s"]) / (args.budget_s - hf_run["first_step_s"])
    result = {
        "setup": {
            "budget_s": args.budget_s,
            "eval_points": args.eval_points,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "schedule": f"linear warmup, then linear decay over {HUGE_MAX_STEPS:,} steps (constant within 0.1%)",
            "seed": args.seed,
            "model": MODEL,
            "model_config": bert_cfg.to_hf_config_dict(),
            "shards": shards,
            "shards_masking": manifest.masking.mode,
            "train_rows": hf_run["train_rows"],
            "eval_examples": n_eval,
            "machine": machine(),
            "transformers": transformers.__version__,
            "calibrated_step_s": step_s,
            "checkpoint_every": checkpoint_every,
            "budget_counts": "wall time from the training process's launch to the end of the first step "
            "finishing after the deadline: start-up, every step, snapshot saves; no evaluation",
        },
        "ours": {
            "label": "ours (python -m training, ZeRO-2 fp32, sparse MLM head)",
            "points": ours_points,
            "steps": ours_info["steps"],
            "first_step_s": ours_info["first_step_s"],
            "median_step_s": ours_info["median_step_s"],
            "sigterm_s": ours_run["sigterm_s"],
            "checkpoints_saved": len(checkpoints),
            "checkpoint_save_s_estimate": ours_info["checkpoint_save_s_estimate"],
            "process_wall_s": ours_wall,
        },
        "transformers": {
            "label": "transformers Trainer + BertForPreTraining + DataCollatorForLanguageModeling",
            "points": hf_points,
            "steps": hf_run["steps"],
            "first_step_s": hf_run["first_step_s"],
            "snapshot_save_s": hf_run["snapshot_save_s"],
            "process_wall_s": hf_wall,
        },
        "comparison": {
            "transformers_final_mlm_loss": target,
            "ours_final_mlm_loss": ours_points[-1]["mlm_loss"],
            "ours_reaches_it": reach,
            "ratio": ratio,
            "ratio_interpolated": ratio_interp,
            "ratio_without_startup": ratio_steps,
            "goal": "ratio <= 0.5",
            "goal_met": ratio is not None and ratio <= 0.5,
        },
        "polarity": polarity,
        "seconds": {"total": None, "evaluation": eval_s, "polarity": pol_s},
    }
    result["seconds"]["total"] = time.perf_counter() - started
    for p in ours_points + hf_points:
        p["snapshot"] = os.path.relpath(p["snapshot"], work)
    with open(os.path.join(args.out, JSON_FILE), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(args.out, PLOT_FILE))
    print_report(result, args.out)
    if tmp is not None and not args.keep_work:
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp is not None:
        print(f"work directory kept: {tmp}")


def print_report(r: dict, out: str) -> None:
    s = r["setup"]
    print()
    print(f"device        {s['machine']}; transformers {s['transformers']}")
    print(
        f"setup         mini BERT, batch {s['batch_size']}, lr {s['lr']:g} after {s['warmup_steps']} warmup steps, "
        f"{s['budget_s']:.0f} s per side; {s['eval_examples']} held-out examples ({s['shards_masking']} masks)"
    )
    print()
    print(f"{'':<14}{'time s':>8}{'step':>8}{'MLM loss':>10}{'MLM acc':>9}{'NSP acc':>9}")
    for side in SIDES:
        for p in r[side]["points"]:
            nsp = f"{p['nsp_accuracy']:.1%}" if "nsp_accuracy" in p else "-"
            print(f"{side:<14}{p['t_s']:8.1f}{p['step']:8d}{p['mlm_loss']:10.4f}{p['mlm_accuracy']:9.2%}{nsp:>9}")
    print()
    o, t = r["ours"], r["transformers"]
    print(
        f"steps         ours {o['steps']} ({o['median_step_s']:.2f} s median, first step at {o['first_step_s']:.1f} s, "
        f"{o['checkpoints_saved']} checkpoints ~{o['checkpoint_save_s_estimate']:.1f} s); transformers {t['steps']} "
        f"(first step at {t['first_step_s']:.1f} s, snapshots {t['snapshot_save_s']:.1f} s)"
    )
    c = r["comparison"]
    reach = c["ours_reaches_it"]
    if reach["measured_s"] is None:
        print(
            f"ours does not reach transformers' final held-out MLM loss {c['transformers_final_mlm_loss']:.4f} "
            f"within its budget (ours' final {c['ours_final_mlm_loss']:.4f})"
        )
    else:
        interp = (
            f"; interpolated {reach['interpolated_s']:.0f} s = {c['ratio_interpolated']:.2f}"
            if reach["interpolated_s"] is not None
            else ""
        )
        print(
            f"ours reaches transformers' final held-out MLM loss {c['transformers_final_mlm_loss']:.4f} at "
            f"{reach['measured_s']:.0f} s (first evaluated point at or below it{interp})"
        )
        print(
            f"ratio time for ours to reach it / transformers' budget: {c['ratio']:.2f}  (goal <= 0.5: "
            f"{'met' if c['goal_met'] else 'NOT met'}); {c['ratio_without_startup']:.2f} with both sides' "
            f"start-up (launch to first step) left out"
        )
    pol = r["polarity"]
    if "skipped" in pol:
        print(f"polarity      skipped: {pol['skipped']}")
    else:
        for side in SIDES:
            e = pol[side]
            if "error" in e:
                print(f"polarity      {side:<13} failed ({e['seconds']:.0f} s)")
            else:
                print(
                    f"polarity      {side:<13} accuracy {e['accuracy']:.2%} ± {e['std_over_folds']:.2%} "
                    f"(5-fold CV, {e['seconds']:.0f} s)"
                )
    sec = r["seconds"]
    print(
        f"took          {sec['total']:.0f} s in all (evaluation {sec['evaluation']:.0f} s, polarity {sec['polarity']:.0f} s)"
    )
    print(f"wrote         {os.path.join(out, PLOT_FILE)}, {os.path.join(out, JSON_FILE)}")


if __name__ == "__main__":
    main()
