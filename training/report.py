"""PNG plots of what a training run logged.

    python -m training.report <output_dir> [--out DIR] [--data-dir DIR]

Writes into ``<output_dir>/report/`` unless ``--out`` says otherwise, and prints each path:

    loss.png           train loss (total, and each ``*_loss`` the objective logs: MLM, NSP, ELECTRA's
                       detection loss) per step and the evaluation losses; against step and tokens seen
    accuracy.png       the objective's other statistics (MLM and NSP accuracy; ELECTRA's detection
                       accuracy and per-class rates) per step and at each evaluation; likewise
    learning_rate.png  the learning rate each step's update used
    throughput.png     non-padding tokens/s per logging interval

Where the numbers come from, all of it under output_dir:

- ``steps.jsonl`` (``training.run_log``, rank 0, one line per optimizer step): step, loss and the
  objective's statistics under their own names (mlm: mlm_loss, mlm_accuracy, nsp_loss, nsp_accuracy,
  no NSP keys without sentence pairs; electra: the generator's mlm_* and the discriminator's rtd_*
  and rates), lr, samples_consumed, example_ids (``trainer.record_example_ids``), and on the first
  step of a resumed attempt resumed_from (the checkpoint's step: each resume is marked on every
  plot). Every statistic found is plotted, named as its objective labels it
  (``Objective.statistic_labels``, read from the run's config).
- ``evals.jsonl`` (rank 0, one line per evaluation: ``eval/*`` every ``trainer.eval_every``
  steps and at the end), whatever the logger.
- Throughput (``perf/tokens_per_s`` every ``trainer.log_every`` steps) goes to the tracker only.
  With ``logger=wandb`` or ``wandb_offline`` W&B keeps it in its local transaction log, one file
  per attempt, ``<logger.dir or output_dir>/wandb/*run-*/run-<id>.wandb``, read here
  (``wandb_history``; also the evaluations of a run from before evals.jsonl). A run with
  ``logger=disabled`` has no throughput plot (a printed note says so).
- Tokens seen: the non-padding tokens of the examples each step trained on (its example_ids
  looked up in the train shards of the run's data_dir, or ``--data-dir``); without example ids,
  samples_consumed x the train split's mean example length from the manifest, and the axis
  says "estimated". Without the shards' manifest there is no tokens-seen panel (noted).

Resumed runs give one continuous curve. A resume truncates steps.jsonl to its checkpoint's step
and ``training.run_log.drop_torn_steps_line`` first cuts a half-written last line; this reader,
which never writes to the run, tolerates both anyway (a crashed run not yet resumed, a file
appended to by other means): a last line without its newline, or not JSON, is skipped, and a
record whose step is not above the one before starts a new attempt that supersedes every earlier
record from that step on (``continuous``). W&B's files are never truncated: they are read in the
order their attempts started and the same rule applies, so the steps a crashed attempt logged
after its last checkpoint give way to those of the attempt that resumed from it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import struct
import sys
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from pipeline import contract
from pipeline.cli import exit_with
from pipeline.plots import Plotted, Series, new_figure, rolling_mean, save
from pipeline.report import read_split
from training import checkpoint as ckpt
from training.run_log import EVAL_FIELDS, EVAL_PREFIX, EVALS_FILE, LOSS, STEP_FIELDS, STEPS_FILE

REPORT_SUBDIR = "report"
LOSS_SUFFIX = "_loss"
"""Statistics named ``loss`` or ``*_loss`` go on the loss plot, the others (accuracies, rates) on the accuracy plot."""

SMOOTH_FROM = 200
"""Curves of at least this many steps get a rolling mean over 1% of them drawn on top."""


# --- steps.jsonl ---------------------------------------------------------------------------------


@dataclass
class StepsFile:
    records: list[dict]
    """The complete lines, in file order."""
    torn_lines: int = 0
    """Lines skipped: a last line without its newline, or a line that is not a JSON object."""


def read_steps_file(path: str) -> StepsFile:
    """The records of a steps.jsonl, skipping what a crash can leave half written."""
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    out = StepsFile([])
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.records.append(record)
        else:
            out.torn_lines += 1
    return out


def continuous(records: list[dict]) -> list[dict]:
    """Records with strictly increasing steps, one per step: a record whose step is not above the
    previous kept one's starts a new attempt and supersedes every kept record from its step on
    (a resumed run re-logs the steps after its checkpoint)."""
    kept: list[dict] = []
    for record in records:
        while kept and kept[-1]["step"] >= record["step"]:
            kept.pop()
        kept.append(record)
    return kept


def resumed_steps(records: list[dict]) -> list[int]:
    """The checkpoint steps attempts resumed from, from steps.jsonl's own records (``records``: in
    file order), whatever the logger: the first record of a resumed attempt carries
    ``resumed_from`` (``Trainer.write_step``); and a record whose step is not above the one before
    (records a resume did not truncate: see ``continuous``) starts an attempt that resumed from the
    step before its own."""
    found = {r["resumed_from"] for r in records if isinstance(r.get("resumed_from"), int)}
    found |= {b["step"] - 1 for a, b in zip(records, records[1:]) if b["step"] <= a["step"] and b["step"] > 1}
    return sorted(found)


# --- W&B's local transaction log ---------------------------------------------------------------

WANDB_FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
"""Identifier, magic number and version 0 at the start of every ``run-<id>.wandb``."""
_BLOCK = 32768
_CHUNK_HEADER = struct.Struct("<IHB")  # CRC-32 of type byte + data, data length, chunk type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: str) -> Iterator[bytes]:
    """The serialized records of a W&B transaction log, in order. The layout is LevelDB's log
    format (what ``wandb sync`` replays): 32 KiB blocks, counted from the file's start, of chunks
    with a 7-byte header; a record longer than its block's room spans FIRST, MIDDLE.., LAST
    chunks. Stops at the first cut-short or damaged chunk (a crash can leave one). Raises
    ValueError for a file that is not a W&B log of this version."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(WANDB_FILE_HEADER):
        raise ValueError(f"{path}: not a W&B transaction log of version 0")
    pos, pending = len(WANDB_FILE_HEADER), None
    while pos + _CHUNK_HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER.size:  # zero padding at a block's end
            pos += room
            continue
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += room
            continue
        chunk = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind in (_MIDDLE, _LAST) and pending is not None:
            pending += chunk
            if kind == _LAST:
                yield pending
                pending = None


def wandb_history(path: str) -> list[dict]:
    """The history rows of one W&B run file: {"step": int, "<key>": value, ...} per logged step
    (the tracker's keys: ``train/*``, ``perf/*``, ``eval/*``; W&B's ``_timestamp``, ``_runtime``)."""
    from wandb.proto import wandb_internal_pb2  # only for runs that were tracked

    rows = []
    for raw in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {"step": record.history.step.num}
        for item in record.history.item:
            row[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        if "_step" in row:
            row["step"] = int(row["_step"])
        rows.append(row)
    return rows


def wandb_files(wandb_root: str) -> list[str]:
    """The run files under ``<wandb_root>/wandb`` (online ``run-*`` and offline ``offline-run-*`` directories)."""
    return sorted(glob.glob(os.path.join(wandb_root, "wandb", "*run-*", "run-*.wandb")))


def tracked_history(wandb_root: str) -> tuple[list[dict], list[int], list[str]]:
    """The W&B rows of every attempt, attempts in the order they started (their first row's
    ``_timestamp``), made ``continuous``; the checkpoint step each later attempt resumed from
    (the step before its first row); and a note per file that could not be read."""
    attempts, notes = [], []
    for path in wandb_files(wandb_root):
        try:
            rows = wandb_history(path)
        except ValueError as e:
            notes.append(f"skipped {e}")
            continue
        if rows:
            attempts.append((rows[0].get("_timestamp", os.path.getmtime(path)), rows))
    attempts.sort(key=lambda a: a[0])
    resumed = [rows[0]["step"] - 1 for _, rows in attempts[1:] if rows[0]["step"] > 1]  # not a restart from step 0
    return continuous([row for _, rows in attempts for row in rows]), resumed, notes


# --- the run's config and tokens seen ----------------------------------------------------------


def run_config(output_dir: str) -> dict:
    """The run's resolved config: from the newest complete checkpoint's run_config.json, else
    (a run without a checkpoint yet) Hydra's ``.hydra/config.yaml``; {} when neither is there."""
    checkpoint_dir = os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR)
    tag = ckpt.latest_complete(checkpoint_dir) if os.path.isdir(checkpoint_dir) else None
    record = ckpt.read_run_record(checkpoint_dir, tag) if tag else None
    if record:
        return record["config"]
    hydra_config = os.path.join(output_dir, ".hydra", "config.yaml")
    if os.path.exists(hydra_config):
        import yaml

        with open(hydra_config) as f:
            return yaml.safe_load(f) or {}
    return {}


@dataclass
class TokensSeen:
    """Cumulative non-padding tokens trained on after each step, aligned with the steps."""

    steps: np.ndarray  # (N,)
    tokens: np.ndarray  # (N,)
    label: str

    def at(self, steps) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, mask): tokens seen at those of ``steps`` (K,) that are logged steps."""
        steps = np.asarray(steps, dtype=np.int64)
        where = np.clip(np.searchsorted(self.steps, steps), 0, max(len(self.steps) - 1, 0))
        mask = (self.steps[where] == steps) if len(self.steps) else np.zeros(len(steps), bool)
        return self.tokens[where[mask]], mask


def tokens_seen(steps: list[dict], data_dir: Optional[str]) -> tuple[Optional[TokensSeen], Optional[str]]:
    """TokensSeen for ``steps`` (``continuous`` records), or (None, why not)."""
    if not data_dir or not os.path.exists(os.path.join(data_dir, contract.MANIFEST_FILE)):
        return None, (
            f"no tokens-seen panels: no shards' manifest at data_dir={data_dir!r} (pass --data-dir <the run's shards>)"
        )
    manifest = contract.read_manifest(data_dir)
    step_numbers = np.array([s["step"] for s in steps], dtype=np.int64)
    if all("example_ids" in s for s in steps):
        train = read_split(data_dir, manifest, "train")
        order = np.argsort(train.example_id, kind="stable")
        sorted_ids = train.example_id[order]
        ids = np.array([i for s in steps for i in s["example_ids"]], dtype=np.int64)
        where = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        unique = len(np.unique(sorted_ids)) == len(sorted_ids)
        if unique and len(sorted_ids) and np.array_equal(sorted_ids[where], ids):
            per_example = train.lengths[order[where]]
            owner = np.repeat(np.arange(len(steps)), [len(s["example_ids"]) for s in steps])
            per_step = np.bincount(owner, weights=per_example, minlength=len(steps))
            return TokensSeen(step_numbers, np.cumsum(per_step).astype(np.int64), "tokens seen (non-padding)"), None
    train_shards = manifest.shards_of("train")
    rows = sum(s.rows for s in train_shards)
    if not rows:
        return None, f"no tokens-seen panels: {data_dir} has no train examples"
    mean_length = sum(s.tokens for s in train_shards) / rows
    samples = np.array([s["samples_consumed"] for s in steps], dtype=np.float64)
    return TokensSeen(
        step_numbers,
        np.round(samples * mean_length).astype(np.int64),
        f"tokens seen (estimated: samples x mean example length {mean_length:.1f})",
    ), None


# --- the plots ----------------------------------------------------------------------------------


@dataclass
class Curve:
    label: str
    steps: np.ndarray  # (N,)
    values: np.ndarray  # (N,)
    color: str
    points: bool = False
    """Evaluations: markers, not a line."""


def curve(label: str, rows: list[dict], key: str, color: str, points: bool = False) -> Optional[Curve]:
    """``key``'s values over the rows that have it, or None when none has. ``color``: a
    matplotlib color; a train curve and its evaluation share one."""
    have = [r for r in rows if r.get(key) is not None]
    if not have:
        return None
    return Curve(
        label,
        np.array([r["step"] for r in have], dtype=np.int64),
        np.array([float(r[key]) for r in have]),
        color,
        points,
    )


def plot_curves(
    curves: list[Optional[Curve]],
    tokens: Optional[TokensSeen],
    path: str,
    title: str,
    ylabel: str,
    resumed: list[int] = (),
) -> Plotted:
    """The curves against step and (with ``tokens``) against tokens seen, side by side; a dotted
    line at each step a resumed attempt started from. Series "step/<label>" and
    "tokens/<label>": x the steps or tokens seen, y the values."""
    curves = [c for c in curves if c is not None]
    panels = ["step"] + (["tokens"] if tokens is not None else [])
    fig, axes = new_figure(len(panels))
    plotted = Plotted(path, title)
    for panel, ax in zip(panels, axes):
        for c in curves:
            if panel == "step":
                x, y = c.steps, c.values
            else:
                x, mask = tokens.at(c.steps)
                y = c.values[mask]
            if c.points:
                ax.plot(x, y, "o--", color=c.color, markersize=5, linewidth=1, label=c.label)
            else:
                window = max(1, len(x) // 100) if len(x) >= SMOOTH_FROM else 1
                ax.plot(
                    x,
                    y,
                    color=c.color,
                    linewidth=1,
                    alpha=0.35 if window > 1 else 1.0,
                    label=c.label if window == 1 else None,
                )
                if window > 1:
                    smooth = rolling_mean(y, window)
                    ax.plot(x, smooth, color=c.color, linewidth=1.5, label=f"{c.label} (mean of {window})")
                    plotted.series[f"{panel}/{c.label} (mean of {window})"] = Series(x.tolist(), smooth.tolist())
            plotted.series[f"{panel}/{c.label}"] = Series(x.tolist(), y.tolist())
        marks = resumed if panel == "step" else tokens.at(resumed)[0]
        for i, x in enumerate(marks):
            ax.axvline(x, color="grey", linestyle=":", linewidth=1, label="resumed" if i == 0 else None)
        ax.set_xlabel("step" if panel == "step" else tokens.label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, path)
    return plotted


# --- which statistics, named how ------------------------------------------------------------------


def statistic_names(steps: list[dict], evals: list[dict]) -> list[str]:
    """The statistics the run logged, in first-logged order: a steps.jsonl record's numeric values
    other than ``STEP_FIELDS``, and evals.jsonl's ``eval/<name>`` other than ``EVAL_FIELDS``. Whatever
    the objective (``training.objectives``), the trainer logs its statistics under their own names."""
    names: dict[str, None] = {}
    for record in steps:
        for key, value in record.items():
            if key not in STEP_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
                names[key] = None
    for record in evals:
        for key in record:
            if key.startswith(EVAL_PREFIX) and key not in EVAL_FIELDS:
                names[key[len(EVAL_PREFIX) :]] = None
    return list(names)


def default_label(name: str) -> str:
    return name.replace("_", " ")


def statistic_labels(config: dict) -> tuple[dict[str, str], Optional[str]]:
    """The run's objective's names for its statistics (``Objective.statistic_labels``), from the
    run's config (no ``objective`` key: a run from before there was a choice, so mlm); with a
    note when the objective is not one this code knows (the names are then shown as logged)."""
    from training.config import ConfigError, ObjectiveConfig
    from training.objectives import objective_class  # torch: imported when a report is drawn only

    name = (config.get("objective") or {}).get("name", ObjectiveConfig.name)
    try:
        return dict(objective_class(name).statistic_labels), None
    except ConfigError as e:
        return {}, f"statistics shown under their logged names: {e}"


def train_and_eval_curves(names: list[str], labels: dict[str, str], steps: list[dict], evals: list[dict]) -> list:
    """Per statistic, its train curve and its evaluation points, in one colour."""
    curves = []
    for i, name in enumerate(names):
        label, color = labels.get(name, default_label(name)), f"C{i % 10}"
        curves.append(curve(f"train {label}", steps, name, color))
        curves.append(curve(f"eval {label}", evals, f"{EVAL_PREFIX}{name}", color, points=True))
    return curves


@dataclass
class Report:
    plots: dict[str, Plotted] = field(default_factory=dict)
    """By file stem: loss, accuracy, learning_rate, throughput."""
    notes: list[str] = field(default_factory=list)
    """What is missing and why."""
    steps: list[dict] = field(default_factory=list)
    """steps.jsonl made ``continuous``."""
    history: list[dict] = field(default_factory=list)
    """W&B's rows made ``continuous`` (empty for a run without tracking)."""
    resumed: list[int] = field(default_factory=list)
    """Steps later attempts resumed from: ``resumed_steps`` of steps.jsonl, with those W&B's files show."""
    tokens: Optional[TokensSeen] = None


class NoStepsError(ValueError):
    """The directory holds no steps.jsonl with a step in it."""


def write_report(output_dir: str, out_dir: Optional[str] = None, data_dir: Optional[str] = None) -> Report:
    """Every plot of the module docstring for the run in ``output_dir``, into ``out_dir``
    (default ``<output_dir>/report``). ``data_dir``: the run's shards, if not where its config
    says. Raises NoStepsError for a directory without logged steps."""
    steps_path = os.path.join(output_dir, STEPS_FILE)
    if not os.path.isdir(output_dir):
        raise NoStepsError(
            f"{output_dir} does not exist" if not os.path.exists(output_dir) else f"{output_dir} is not a directory"
        )
    if not os.path.exists(steps_path):
        raise NoStepsError(
            f"no {STEPS_FILE} in {output_dir}: not a training output_dir "
            f"(python -m training ... output_dir=<dir> writes it)"
        )
    parsed = read_steps_file(steps_path)
    report = Report(steps=continuous(parsed.records))
    if not report.steps:
        raise NoStepsError(f"{steps_path} holds no complete step yet")
    if parsed.torn_lines:
        report.notes.append(f"skipped {parsed.torn_lines} half-written line(s) of {steps_path}")
    config = run_config(output_dir)
    logger_dir = (config.get("logger") or {}).get("dir") or output_dir
    report.history, tracked_resumes, unread = tracked_history(logger_dir)
    report.resumed = sorted(set(resumed_steps(parsed.records)) | set(tracked_resumes))
    report.notes += unread
    report.tokens, why = tokens_seen(report.steps, data_dir or config.get("data_dir"))
    if why:
        report.notes.append(why)
    evals_path = os.path.join(output_dir, EVALS_FILE)
    if os.path.exists(evals_path):  # written by every run, whatever its logger
        evals = continuous(read_steps_file(evals_path).records)
    else:  # a run from before evals.jsonl: its W&B files, if any
        evals = [r for r in report.history if EVAL_PREFIX + LOSS in r]
    if not evals:
        report.notes.append(f"no evaluation points: no {EVALS_FILE} and no W&B run file with any in {logger_dir}")

    out_dir = out_dir or os.path.join(output_dir, REPORT_SUBDIR)
    out = lambda name: os.path.join(out_dir, f"{name}.png")  # noqa: E731
    steps, tokens, resumed = report.steps, report.tokens, report.resumed
    names = statistic_names(steps, evals)
    labels, why = statistic_labels(config)
    if why:
        report.notes.append(why)
    losses = [n for n in names if n == LOSS or n.endswith(LOSS_SUFFIX)]
    rates = [n for n in names if n not in losses]
    report.plots["loss"] = plot_curves(
        train_and_eval_curves(losses, labels, steps, evals),
        tokens,
        out("loss"),
        f"Loss ({len(steps):,} steps, {len(evals)} evaluations)",
        "loss",
        resumed,
    )
    report.plots["accuracy"] = plot_curves(
        train_and_eval_curves(rates, labels, steps, evals),
        tokens,
        out("accuracy"),
        "Accuracies and rates",
        "fraction",
        resumed,
    )
    report.plots["learning_rate"] = plot_curves(
        [curve("lr", steps, "lr", "C3")],
        None,
        out("learning_rate"),
        "Learning rate (each step's update)",
        "learning rate",
        resumed,
    )
    throughput = curve("tokens/s", report.history, "perf/tokens_per_s", "C4")
    if throughput is None:
        report.notes.append(
            "no throughput plot: the trainer logs tokens/s only to W&B (logger=wandb or "
            f"wandb_offline), and {logger_dir}/wandb holds no run file with any"
        )
    else:
        report.plots["throughput"] = plot_curves(
            [throughput],
            None,
            out("throughput"),
            "Throughput per logging interval (evaluation, saving left out)",
            "non-padding tokens/s",
            resumed,
        )
    return report


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.report",
        description="PNG plots of what a training run logged (steps.jsonl, W&B's local files).",
    )
    parser.add_argument("output_dir", help="the run's output_dir (holds steps.jsonl)")
    parser.add_argument("--out", help="where to write the plots (default: <output_dir>/report)")
    parser.add_argument("--data-dir", help="the run's shards, for tokens seen (default: data_dir of the run's config)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.output_dir, args.out, args.data_dir)
    except (NoStepsError, contract.ContractError) as e:
        exit_with(str(e))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for plotted in report.plots.values():
        print(plotted.path)


if __name__ == "__main__":
    main()
