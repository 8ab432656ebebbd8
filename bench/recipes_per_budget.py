"""Quality per unit of compute of the pre-training recipes: same corpus, same wall-clock budget, same seed.

    python bench/recipes_per_budget.py [--budget-s 600] [--recipes bert2018 modern30 electra transformers]
                                       [--inputs PATH ...] [--eval-fraction 0.05] [--eval-points 8]
                                       [--out bench/results] [--work DIR] [--skip-downstream]

Each recipe trains for the same --budget-s of wall clock on this machine, one after the other, and
is stopped as bench/quality_per_budget.py stops it (SIGTERM at the deadline; the budget counts from
the launch of the training process: start-up, every step, the checkpoints saved on the way):

  bert2018      the 2018 recipe: mini BERT, MLM + NSP on the data job's defaults (static 15% masks,
                80/10/10), `python -m training experiment=cpu_smoke`
  modern30      the ModernBERT-style encoder at the mini size (model=modern_small), no NSP, 30% of
                the tokens masked, drawn afresh every step (data.masking.masked_lm_prob=0.3 on
                instances=none masking=dynamic shards), unpadded
  electra       ELECTRA replaced-token detection (objective=electra): the mini BERT as discriminator,
                a generator at 1/4 of its width, 15% masks of which 85% [MASK] and 15% kept (the
                paper's), on the same no-NSP shards
  transformers  transformers' Trainer + BertForPreTraining + DataCollatorForLanguageModeling(0.15) on
                the NSP shards, from bert2018's initial weights (quality_per_budget.py's baseline)

Every recipe uses the same batch (32 sequences of up to 128 tokens), peak learning rate, warmup,
AdamW settings and seed; bert2018 and transformers start from the same weights.

Two held-out evaluations for all, on the same held-out documents (the data job holds the same
documents out whatever the instances), both with 15% masks, 80/10/10:

  single   the no-NSP shards' eval split: one segment per example, masks drawn once by the
           trainer's fixed evaluation masking. What modern30 and electra trained on.
  pairs    the NSP shards' eval split: two segments per example ([CLS] A [SEP] B [SEP], token types
           0 and 1), the data job's static masks. What bert2018 and transformers trained on.

The goals are judged on both. MLM loss and accuracy over the masked positions come from
transformers' masked-LM class of each export (BertForMaskedLM, ModernBertForMaskedLM; for ELECTRA
the generator's ElectraForMaskedLM, labelled as such: a network a quarter of the others' width, so
its loss says how good the replacements are, not how good the discriminator is). Downstream, each final encoder (for
ELECTRA the discriminator): the Lee document-similarity correlation (`python -m training.evaluate`)
and polarity accuracy by 5-fold cross-validation (`python -m training.finetune task=polarity`).

Goal (issue 19): modern30 reaches bert2018's final held-out MLM loss in at most half the budget, and
transformers' in at most a quarter. The figures are reported whatever they are.

A corpus of one document per line (gensim's lee_background.cor) goes in as JSON lines, one object
per line: the data job reads plain text as books (a file is a document). bench/README.md gives the
command.

Writes <out>/recipes_per_budget.png (held-out MLM loss and accuracy against wall time, every recipe,
both evaluations) and <out>/recipes_per_budget.json (every figure), and prints a table; --tag NAME
writes recipes_per_budget_NAME.{png,json} instead, for a second corpus beside the first.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

import quality_per_budget as qpb  # noqa: E402  (bench/ is this script's directory on sys.path)
from pipeline import contract  # noqa: E402
from sample_shards import build_sample_shards  # noqa: E402
from training.labels import IGNORE_INDEX  # noqa: E402

STEM = "recipes_per_budget"
EVALUATIONS = {
    "single": "held-out single segments (no-NSP shards)",
    "pairs": "held-out sentence pairs (NSP shards)",
}
"""The two held-out evaluations, by the shard set whose eval split each reads."""


@dataclass(frozen=True)
class Recipe:
    """One way to pre-train, as the trainer's settings on top of quality_per_budget's common ones."""

    label: str
    shards: str
    """"pairs" (the data job's defaults: NSP, static masks) or "single" (instances=none masking=dynamic)."""
    overrides: tuple[str, ...] = ()
    mlm_dir: str = ""
    """The export's sub-directory whose masked-LM head is evaluated (ELECTRA: generator)."""
    encoder_dir: str = ""
    """The export's sub-directory evaluated downstream (ELECTRA: discriminator)."""
    mlm_label: str = ""


RECIPES = {
    "bert2018": Recipe("2018: mini BERT, MLM + NSP, static 15%", "pairs"),
    "modern30": Recipe(
        "ModernBERT-style mini, MLM 30% dynamic, no NSP",
        "single",
        ("model=modern_small", "data.masking.masked_lm_prob=0.3", "trainer.unpad=true"),
    ),
    "electra": Recipe(
        "ELECTRA: mini discriminator + 1/4-width generator",
        "single",
        ("objective=electra", "data.masking.mask_prob=0.85", "data.masking.random_prob=0.0"),
        mlm_dir="generator",
        encoder_dir="discriminator",
        mlm_label="generator's MLM",
    ),
}
TRANSFORMERS = "transformers"
ALL = (*RECIPES, TRANSFORMERS)
MAIN, REFERENCE = "modern30", "bert2018"
"""The goal: MAIN reaches REFERENCE's (and transformers') final held-out MLM loss early."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=float, default=600.0, help="wall-clock seconds per recipe (default 600)")
    p.add_argument("--recipes", nargs="+", default=list(ALL), choices=ALL, help="which recipes (default all)")
    p.add_argument(
        "--inputs",
        nargs="+",
        default=None,
        help="the data job's inputs (default its embedded Wikipedia sample); e.g. gensim's lee_background.cor",
    )
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.05,
        help="the data job's instances.eval_fraction (default 0.05: 3 held-out documents of the sample, not 1%%'s one)",
    )
    p.add_argument("--eval-points", type=int, default=8, help="evaluated snapshots per recipe (default 8)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    p.add_argument("--tag", default="", help="suffix of the output files: recipes_per_budget_TAG.{json,png}")
    p.add_argument("--work", default=None, help="shards, checkpoints, snapshots (default: a temporary directory)")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--eval-examples", type=int, default=None, help="the first N held-out examples only")
    p.add_argument("--skip-downstream", action="store_true", help="leave out Lee and polarity")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    if args.budget_s <= 0 or args.eval_points < 1 or args.batch_size < 1:
        p.error("--budget-s, --eval-points and --batch-size must be positive")
    if not 0 < args.eval_fraction < 1:
        p.error("--eval-fraction must be between 0 and 1")
    return args


# --- shards and the two evaluations ----------------------------------------------------------------


def corpus_name(inputs: Optional[list[str]]) -> str:
    return ", ".join(os.path.basename(i) for i in inputs) if inputs else "the embedded Wikipedia sample"


def output_path(out: str, tag: str, suffix: str) -> str:
    return os.path.join(out, f"{STEM}_{tag}{suffix}" if tag else f"{STEM}{suffix}")


def build_shards(work: str, inputs: Optional[list[str]], eval_fraction: float) -> dict[str, str]:
    """{"pairs": NSP shards with static masks, "single": no-NSP shards with dynamic masks}, same corpus,
    same vocabulary (checked: one model reads both evaluations)."""
    given = [f"inputs=[{','.join(inputs)}]"] if inputs else []
    held_out = f"instances.eval_fraction={eval_fraction}"
    shards = {
        "pairs": build_sample_shards(os.path.join(work, "shards_pairs"), held_out, *given),
        "single": build_sample_shards(
            os.path.join(work, "shards_single"), held_out, "instances=none", "masking=dynamic", *given
        ),
    }
    vocabularies = [pathlib.Path(path, contract.VOCAB_FILE).read_bytes() for path in shards.values()]
    if vocabularies[0] != vocabularies[1]:
        raise SystemExit(f"the two shard sets have different vocabularies ({shards}): not one evaluation")
    return shards


def held_out_documents(shards: str) -> Optional[int]:
    """The eval split's document count (the manifest's ``documents_kept``), where it is recorded."""
    kept = contract.read_manifest(shards).statistics.get("documents_kept")
    return kept.get("eval") if isinstance(kept, dict) else None


def masked_lm_head(model):
    """(encoder forward taking a batch -> (B, T, H), head (N, H) -> (N, V)) of a transformers masked LM,
    so that only the masked positions go through the vocabulary projection."""
    kind = type(model).__name__
    if kind in ("BertForMaskedLM", "BertForPreTraining"):
        return (
            lambda b: (
                model.bert(
                    input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]
                ).last_hidden_state
            ),
            model.cls if kind == "BertForMaskedLM" else model.cls.predictions,
        )
    if kind == "ModernBertForMaskedLM":
        return (
            lambda b: model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state,
            lambda h: model.decoder(model.head(h)),
        )
    if kind == "ElectraForMaskedLM":
        return (
            lambda b: (
                model.electra(
                    input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]
                ).last_hidden_state
            ),
            lambda h: model.generator_lm_head(model.generator_predictions(h)),
        )
    raise SystemExit(f"no masked-LM evaluation for {kind}: add it to masked_lm_head")


@torch.no_grad()
def evaluate_masked_lm(model_dir: str, evals: dict[str, list[dict]]) -> dict[str, dict]:
    """{evaluation: held-out MLM loss and accuracy over every masked position of its batches}, no
    dropout, one load of the model for all evaluations."""
    import torch.nn.functional as F
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()  # a BertForPreTraining export's NSP head is unused here
    model = transformers.AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    encode, head = masked_lm_head(model)
    scores = {}
    for evaluation, batches in evals.items():
        loss, correct, count = 0.0, 0, 0
        for b in batches:
            positions, labels = b["masked_lm_positions"], b["masked_lm_labels"]  # (B, P)
            real = labels != IGNORE_INDEX  # (B, P)
            rows = torch.arange(positions.shape[0])[:, None].expand_as(positions)  # (B, P)
            logits = head(encode(b)[rows[real], positions[real]])  # (N, V)
            target = labels[real]  # (N,)
            loss += float(F.cross_entropy(logits.float(), target, reduction="sum"))
            correct += int((logits.argmax(-1) == target).sum())
            count += int(target.numel())
        scores[evaluation] = {"mlm_loss": loss / count, "mlm_accuracy": correct / count, "mlm_predictions": count}
    return scores


def on(points: list[dict], evaluation: str) -> list[dict]:
    """The curve of one evaluation: points with that evaluation's ``mlm_loss`` and ``mlm_accuracy``
    at the top level, which is where quality_per_budget's time_to_reach and bracket read them."""
    return [{**p, **p[evaluation]} for p in points]


def count_masked(batches: list[dict]) -> dict:
    return {
        "examples": sum(int(b["input_ids"].shape[0]) for b in batches),
        "masked": sum(int((b["masked_lm_labels"] != IGNORE_INDEX).sum()) for b in batches),
    }


# --- our trainer's runs -----------------------------------------------------------------------------


class RunExporter:
    """Hugging Face directories of a run's checkpoints, as ``python -m training.export`` writes them
    (``training.export.export_run``: the run's objective and architecture from each checkpoint's record)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def export(self, tag: str, dest: str) -> str:
        from training.export import export_run

        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # DeepSpeed's reader's chatter
            return export_run(self.output_dir, tag, dest)


def trained_points(
    name: str, recipe: Recipe, run: dict, targets: list[float], work: str, evals: list[dict]
) -> tuple[list[dict], dict]:
    """The evaluated snapshots of one of our runs: the checkpoints nearest the target times and the
    last one. Returns (points by time, {step: (seconds, tag)} of every checkpoint, for refining)."""
    checkpoints = [(s, tag) for s, tag in qpb.our_checkpoints(run["output_dir"]) if s in run["stamps"]]
    if not checkpoints:
        raise SystemExit(f"{name}: the trainer left no checkpoint with a recorded step: see {run['log']}")
    every = {s: (run["stamps"][s], tag) for s, tag in checkpoints}
    final = checkpoints[-1][0]
    candidates = [(run["stamps"][s], s) for s, _ in checkpoints[:-1]]
    chosen = (qpb.pick_nearest(candidates, targets) if candidates else []) + [final]
    exporter = RunExporter(run["output_dir"])
    points = [snapshot_point(name, recipe, exporter, s, every[s], s == final, work, evals) for s in chosen]
    return points, {"every": every, "exporter": exporter}


def snapshot_point(
    name: str, recipe: Recipe, exporter: RunExporter, step: int, at: tuple, final: bool, work: str, evals: list
) -> dict:
    seconds, tag = at
    path = exporter.export(tag, os.path.join(work, f"{name}_snapshots", tag))
    point = {"step": step, "t_s": seconds, "snapshot": path, "final": final}
    point.update(evaluate_masked_lm(os.path.join(path, recipe.mlm_dir), evals))
    print_point(name, point)
    return point


def print_point(name: str, p: dict) -> None:
    scores = "  ".join(
        f"{evaluation} mlm loss {p[evaluation]['mlm_loss']:.4f} acc {p[evaluation]['mlm_accuracy']:.2%}"
        for evaluation in EVALUATIONS
        if evaluation in p
    )
    print(f"  {name:<13}{p['t_s']:7.1f} s  step {p['step']:6d}  {scores}", flush=True)


def refine(
    name: str, recipe: Recipe, points: list[dict], extra: dict, target: float, evaluation: str, work: str, evals
) -> list:
    """More of the run's checkpoints between the two evaluated points around where it crosses ``target``
    on ``evaluation``."""
    span = qpb.bracket(on(points, evaluation), target)
    if not span:
        return points
    have = {p["step"] for p in points}
    between = [s for s, (t, _) in extra["every"].items() if span[0] < t < span[1] and s not in have]
    added = [snapshot_point(name, recipe, extra["exporter"], s, extra["every"][s], False, work, evals) for s in between]
    return sorted(points + added, key=lambda p: p["t_s"])


# --- downstream -----------------------------------------------------------------------------------


def run_lee(model_dir: str, out_file: str) -> dict:
    """The Lee correlation of one encoder (`python -m training.evaluate task=lee`)."""
    cmd = [sys.executable, "-m", "training.evaluate", f"model_dir={model_dir}", f"output={out_file}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stdout[-1500:] + done.stderr[-1500:]).strip()}
    with open(out_file) as f:
        result = json.load(f)
    return {**result, "seconds": time.perf_counter() - start}


def lee_pearson(entry: dict) -> Optional[float]:
    """The Pearson correlation in a training.evaluate result, wherever its JSON keeps it."""
    for key in ("pearson", "pearson_r"):
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key])
    for value in entry.values():
        if isinstance(value, dict):
            found = lee_pearson(value)
            if found is not None:
                return found
    return None


def downstream(finals: dict[str, str], work: str, seed: int) -> dict:
    """{recipe: {"lee": ..., "polarity": ...}} of each final encoder."""
    polarity_dir = qpb.polarity_data_dir(None)
    why_not = qpb.polarity_unavailable(polarity_dir)
    results = {}
    for name, encoder in finals.items():
        print(f"downstream of {name}: {encoder}", flush=True)
        entry = {"lee": run_lee(encoder, os.path.join(work, "downstream", f"{name}_lee.json"))}
        entry["polarity"] = (
            {"skipped": why_not}
            if why_not
            else qpb.run_polarity(encoder, os.path.join(work, "downstream", f"{name}_polarity"), polarity_dir, seed)
        )
        results[name] = entry
    return results


# --- report ---------------------------------------------------------------------------------------


def reach_ratio(points: list[dict], target: float, budget: float) -> dict:
    """When ``points`` first get to ``target`` held-out loss, and that time over the budget."""
    reach = qpb.time_to_reach(points, target)
    reach["ratio"] = reach["measured_s"] / budget if reach["measured_s"] is not None else None
    reach["ratio_interpolated"] = reach["interpolated_s"] / budget if reach["interpolated_s"] is not None else None
    return reach


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(EVALUATIONS), 2, figsize=(12, 4.2 * len(EVALUATIONS)), squeeze=False)
    for (ax_loss, ax_acc), (evaluation, title) in zip(axes, EVALUATIONS.items()):
        for entry in result["recipes"].values():
            pts = on(entry["points"], evaluation)
            t = [p["t_s"] for p in pts]
            style = "s--" if entry.get("mlm_label") else "o-"
            ax_loss.plot(t, [p["mlm_loss"] for p in pts], style, label=entry["label"])
            ax_acc.plot(t, [100 * p["mlm_accuracy"] for p in pts], style, label=entry["label"])
        for name, value in result["comparison"][evaluation]["final_losses"].items():
            if name in (REFERENCE, TRANSFORMERS):
                ax_loss.axhline(value, color="grey", ls=":", lw=1)
        for ax, what in ((ax_loss, "MLM loss (15% masks)"), (ax_acc, "MLM accuracy (%)")):
            ax.axvline(result["setup"]["budget_s"], color="grey", ls="--", lw=1)
            ax.set_xlim(left=0)
            ax.set_xlabel("wall time since the training process started (s)")
            ax.set_ylabel(what)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        f"recipes at the mini size on {result['setup']['corpus']}, batch {result['setup']['batch_size']}, "
        f"{result['setup']['budget_s']:.0f} s each, {result['setup']['machine']} (dashed: ELECTRA's generator)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_report(r: dict, paths: tuple[str, str]) -> None:
    s = r["setup"]
    print()
    print(f"corpus        {s['corpus']}")
    print(f"device        {s['machine']}; transformers {s['transformers']}")
    print(
        f"setup         batch {s['batch_size']}, lr {s['lr']:g} after {s['warmup_steps']} warmup steps, "
        f"{s['budget_s']:.0f} s per recipe"
    )
    for evaluation, title in EVALUATIONS.items():
        size = s["evaluations"][evaluation]
        print(f"{evaluation:<14}{title}: {size['examples']} examples, {size['masked']} masked tokens")
    print()
    header = "".join(f"{evaluation + ' loss':>14}{'acc':>8}" for evaluation in EVALUATIONS)
    print(f"{'recipe':<14}{'steps':>7}{header}{'Lee r':>8}{'polarity':>10}")
    for name, e in r["recipes"].items():
        final = e["points"][-1]
        down = r["downstream"].get(name, {})
        lee = lee_pearson(down.get("lee", {})) if down else None
        pol = (down.get("polarity") or {}).get("accuracy") if down else None
        note = f"  ({e['mlm_label']})" if e.get("mlm_label") else ""
        scores = "".join(
            f"{final[evaluation]['mlm_loss']:>14.4f}{final[evaluation]['mlm_accuracy']:>8.2%}"
            for evaluation in EVALUATIONS
        )
        print(
            f"{name:<14}{e['steps']:>7}{scores}"
            f"{(f'{lee:.3f}' if lee is not None else '-'):>8}{(f'{pol:.1%}' if pol is not None else '-'):>10}{note}"
        )
    print()
    for evaluation in EVALUATIONS:
        for goal in r["comparison"][evaluation]["goals"]:
            reach = goal["reach"]
            if reach["measured_s"] is None:
                print(f"{goal['what']}: not reached within the budget (goal <= {goal['goal']})")
                continue
            interpolated = (
                f", {reach['ratio_interpolated']:.2f} interpolated" if reach["ratio_interpolated"] is not None else ""
            )
            print(
                f"{goal['what']}: at {reach['measured_s']:.0f} s = {reach['ratio']:.2f} x budget{interpolated} "
                f"(goal <= {goal['goal']}: {'met' if goal['met'] else 'NOT met'})"
            )
    print(f"took          {r['seconds']['total']:.0f} s in all")
    print(f"wrote         {paths[0]}, {paths[1]}")


def goals_on(evaluation: str, recipes: dict, extras: dict, budget: float, work: str, evals: dict) -> dict:
    """The final losses on ``evaluation`` and whether MAIN reaches REFERENCE's (in half the budget) and
    transformers' (in a quarter): MAIN's curve is refined around each crossing first."""
    finals = {name: e["points"][-1][evaluation]["mlm_loss"] for name, e in recipes.items()}
    goals = []
    if MAIN in recipes:
        for other, share in ((REFERENCE, 0.5), (TRANSFORMERS, 0.25)):
            if other not in finals:
                continue
            recipes[MAIN]["points"] = refine(
                MAIN, RECIPES[MAIN], recipes[MAIN]["points"], extras[MAIN], finals[other], evaluation, work, evals
            )
            reach = reach_ratio(on(recipes[MAIN]["points"], evaluation), finals[other], budget)
            possessive = "'" if other.endswith("s") else "'s"
            goals.append(
                {
                    "what": f"{MAIN} reaches {other}{possessive} final {evaluation} loss {finals[other]:.4f}",
                    "reach": reach,
                    "goal": share,
                    "met": reach["ratio"] is not None and reach["ratio"] <= share,
                }
            )
    return {"final_losses": finals, "goals": goals}


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    if TRANSFORMERS in args.recipes and importlib.util.find_spec("accelerate") is None:
        raise SystemExit("transformers' Trainer needs accelerate: pip install 'accelerate>=1.1.0'")
    import transformers

    started = time.perf_counter()
    tmp = None if args.work else tempfile.mkdtemp(prefix="recipes_per_budget_")
    work = args.work or tmp
    os.makedirs(work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    shards = build_shards(work, args.inputs, args.eval_fraction)
    held_out = {kind: held_out_documents(path) for kind, path in shards.items()}
    if None not in held_out.values() and len(set(held_out.values())) != 1:
        raise SystemExit(f"the two shard sets hold out different documents ({held_out}): not one evaluation")

    pairs_cfg = qpb.model_config(contract.read_manifest(shards["pairs"]))
    single_cfg = qpb.model_config(contract.read_manifest(shards["single"]))
    init_dir = qpb.write_initial_weights(pairs_cfg, shards["pairs"], os.path.join(work, "init"), args.seed)
    model_cfgs = {"pairs": pairs_cfg, "single": single_cfg}
    evals = {
        evaluation: qpb.eval_batches(
            shards[evaluation], model_cfgs[evaluation], args.eval_batch_size, args.seed, args.eval_examples
        )
        for evaluation in EVALUATIONS
    }
    sizes = {evaluation: count_masked(batches) for evaluation, batches in evals.items()}
    step_s = qpb.seconds_per_step(pairs_cfg, shards["pairs"], args.batch_size, args.seed)
    checkpoint_every = max(1, int(args.budget_s / step_s / (2 * args.eval_points)))
    print(f"calibration: {step_s:.2f} s per mini BERT step -> a checkpoint every {checkpoint_every} steps", flush=True)
    targets = qpb.snapshot_targets(args.budget_s, args.eval_points)

    # training, one recipe at a time on the machine; evaluation after every clock has stopped
    runs, walls = {}, {}
    for name in args.recipes:
        clock = time.perf_counter()
        if name == TRANSFORMERS:
            runs[name] = qpb.run_transformers(args, shards["pairs"], init_dir, work)
        else:
            recipe = RECIPES[name]
            init = init_dir if name == REFERENCE else None
            runs[name] = qpb.run_ours(
                args, shards[recipe.shards], init, work, checkpoint_every, name=name, overrides=recipe.overrides
            )
        walls[name] = time.perf_counter() - clock

    print(f"evaluating on {sizes}", flush=True)
    recipes, extras = {}, {}
    for name in args.recipes:
        if name == TRANSFORMERS:
            points = []
            for p in runs[name]["points"]:
                point = {**p, **evaluate_masked_lm(p["snapshot"], evals)}
                print_point(name, point)
                points.append(point)
            recipes[name] = {"label": "transformers Trainer + BertForPreTraining, 15% per batch", "points": points}
            recipes[name]["steps"] = runs[name]["steps"]
            continue
        recipe = RECIPES[name]
        points, extras[name] = trained_points(name, recipe, runs[name], targets, work, evals)
        timeline = qpb.ours_timeline(runs[name], checkpoint_every)
        recipes[name] = {
            "label": recipe.label + (f" [{recipe.mlm_label}]" if recipe.mlm_label else ""),
            "overrides": list(recipe.overrides),
            "points": points,
            "steps": timeline["steps"],
            "first_step_s": timeline["first_step_s"],
            "mlm_label": recipe.mlm_label,
        }
    comparison = {
        evaluation: goals_on(evaluation, recipes, extras, args.budget_s, work, evals) for evaluation in EVALUATIONS
    }

    down: dict = {}
    if not args.skip_downstream:
        encoders = {}
        for name, e in recipes.items():
            snapshot = e["points"][-1]["snapshot"]
            encoders[name] = os.path.join(snapshot, RECIPES[name].encoder_dir) if name in RECIPES else snapshot
        down = downstream(encoders, work, args.seed)
    result = {
        "setup": {
            "budget_s": args.budget_s,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "seed": args.seed,
            "inputs": args.inputs,
            "corpus": corpus_name(args.inputs),
            "shards": shards,
            "eval_fraction": args.eval_fraction,
            "held_out_documents": held_out,
            "evaluations": sizes,
            "machine": qpb.machine(),
            "transformers": transformers.__version__,
            "checkpoint_every": checkpoint_every,
            "process_wall_s": walls,
        },
        "recipes": recipes,
        "comparison": comparison,
        "downstream": down,
        "seconds": {"total": time.perf_counter() - started},
    }
    for e in recipes.values():
        for p in e["points"]:
            p["snapshot"] = os.path.relpath(p["snapshot"], work)
    paths = output_path(args.out, args.tag, ".png"), output_path(args.out, args.tag, ".json")
    with open(paths[1], "w") as f:
        json.dump(result, f, indent=1, default=str)
    plot(result, paths[0])
    print_report(result, paths)
    if tmp is not None and not args.keep_work:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
