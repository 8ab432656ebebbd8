"""PNG plots of a data job's output: what the shards hold, read back from the files themselves.

    python -m pipeline.report <shard dir> [--out DIR] [--max-rows N]

Writes into ``<shard dir>/report/`` unless ``--out`` says otherwise, and prints each path:

    example_lengths.png       non-padding tokens per example, a histogram per split
    sentence_pairs.png        next_sentence_label per split: B random / B next (nsp), swapped / in order (sop)
    masked_positions.png      stored masked positions per example, per split (static masking only)
    documents_per_source.png  kept documents and their tokens per input source, by split (the
                              documents table); over TOP_SOURCES sources, per folder and format
    rejects.png               rejected or repaired documents and file parts by reason (the manifest's
                              statistics; rejects/*.jsonl for an output without them)

Shards are memory-mapped (``contract.open_shard``) and only the list offsets and the small
columns are read. A split of more than ``--max-rows`` examples (default 1,000,000) is sampled:
``max_rows`` rows evenly spaced over the split (the same rows every time; the job already shuffled
the rows within each shard), and the plots' titles say so. Shards without a sentence-pair label
(objective none) or without stored masks (masking=dynamic: the trainer masks as it loads) skip
that plot with a printed note.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa

from pipeline import contract
from pipeline.cli import exit_with
from pipeline.plots import Plotted, Series, bars, new_figure, save

REPORT_SUBDIR = "report"
DEFAULT_MAX_ROWS = 1_000_000
TOP_SOURCES = 25
"""documents_per_source.png shows up to this many sources one by one; more are grouped by folder
and format, and past this many groups the rest are one "other" bar."""

SENTENCE_LABELS = {"nsp": ("B next", "B random"), "sop": ("in order", "swapped")}
"""The names of next_sentence_label 0 and 1 per objective."""


# --- reading the shards ------------------------------------------------------------------------


def sample_rows(total: int, max_rows: Optional[int]) -> np.ndarray:
    """Split row indices to read, sorted: all ``total`` rows, or ``max_rows`` evenly spaced ones."""
    if max_rows is None or total <= max_rows:
        return np.arange(total, dtype=np.int64)
    return np.arange(max_rows, dtype=np.int64) * total // max_rows


@dataclass
class SplitSample:
    """Per-example values of the rows read from one split (all of them, or a sample), (K,) each."""

    split: str
    total_rows: int
    """Rows of the split (the manifest's count)."""
    rows: np.ndarray
    """Split row indices read (shards in manifest order)."""
    example_id: np.ndarray
    lengths: np.ndarray
    """Non-padding tokens (examples are stored unpadded: the length of input_ids)."""
    masked_positions: Optional[np.ndarray]
    """Stored masked positions; None for shards masked by the trainer (masking=dynamic)."""
    sentence_label: Optional[np.ndarray]
    """next_sentence_label; None for objective none."""

    @property
    def sampled(self) -> bool:
        return len(self.rows) < self.total_rows

    def describe(self) -> str:
        """``eval: 28 examples`` or ``train: sampled 1,000,000 of 28,000,000 examples (evenly spaced)``."""
        if self.sampled:
            return f"{self.split}: sampled {len(self.rows):,} of {self.total_rows:,} examples (evenly spaced)"
        return f"{self.split}: {self.total_rows:,} examples"


def _list_lengths(column: pa.ListArray, rows: np.ndarray) -> np.ndarray:
    offsets = column.offsets.to_numpy()  # (n+1,) int32, zero-copy from the mapped file
    return (offsets[rows + 1] - offsets[rows]).astype(np.int64)


def read_split(
    data_dir: str, manifest: contract.ShardManifest, split: str, max_rows: Optional[int] = None
) -> SplitSample:
    """The rows ``sample_rows`` picks from ``split``'s shards. Raises ContractError for a shard
    whose row count differs from the manifest's."""
    shards = manifest.shards_of(split)
    total = sum(s.rows for s in shards)
    rows = sample_rows(total, max_rows)
    static = manifest.masking.mode == "static"
    labelled = manifest.objective != "none"
    parts: dict[str, list[np.ndarray]] = {"example_id": [], "lengths": [], "masked": [], "label": []}
    start = 0
    for info in shards:
        path = os.path.join(data_dir, info.file)
        table = contract.open_shard(path)
        if table.num_rows != info.rows:
            raise contract.ContractError(f"{path} has {table.num_rows} rows, the manifest says {info.rows}")
        for batch in table.to_batches():
            lo, hi = np.searchsorted(rows, [start, start + batch.num_rows])
            local = rows[lo:hi] - start
            start += batch.num_rows
            if not len(local):
                continue
            parts["example_id"].append(batch.column(contract.EXAMPLE_ID).to_numpy()[local])
            parts["lengths"].append(_list_lengths(batch.column(contract.INPUT_IDS), local))
            if static:
                parts["masked"].append(_list_lengths(batch.column(contract.MASKED_LM_POSITIONS), local))
            if labelled:
                parts["label"].append(batch.column(contract.NEXT_SENTENCE_LABEL).to_numpy()[local])

    def joined(name, dtype):
        return np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype)

    return SplitSample(
        split,
        total,
        rows,
        joined("example_id", np.int64),
        joined("lengths", np.int64),
        joined("masked", np.int64) if static else None,
        joined("label", np.int8) if labelled else None,
    )


def _side_tables(data_dir: str, name: str, suffix: str) -> list[str]:
    return sorted(glob.glob(os.path.join(data_dir, name, f"*{suffix}")))


@dataclass(frozen=True)
class Kept:
    """What the documents table says of one source in one split."""

    documents: int
    tokens: int


def documents_by_source(data_dir: str) -> dict[tuple[str, str, str], Kept]:
    """Kept documents and their tokens per (source, format, split), from ``documents/*.arrow``
    ({} when there is none). The format is how the source was read (``book_text``...); a table
    written before it had that column gives the file's suffix instead."""
    counts: dict[tuple[str, str, str], Kept] = {}
    for path in _side_tables(data_dir, "documents", contract.SHARD_SUFFIX):
        table = contract.open_shard(path)
        if "format" not in table.column_names:
            suffixes = [_suffix(s) for s in table.column("source").to_pylist()]
            table = table.append_column("format", pa.array(suffixes, pa.string()))
        keys = ["source", "format", "split"]
        grouped = table.select([*keys, "tokens"]).group_by(keys).aggregate([([], "count_all"), ("tokens", "sum")])
        for row in grouped.to_pylist():
            key = (row["source"], row["format"], row["split"])
            before = counts.get(key, Kept(0, 0))
            counts[key] = Kept(before.documents + row["count_all"], before.tokens + (row["tokens_sum"] or 0))
    return counts


def _suffix(source: str) -> str:
    """``a/b.jsonl.gz`` -> ``.jsonl.gz``."""
    name = source.rsplit("/", 1)[-1]
    return name[name.find(".") :] if "." in name else "(no suffix)"


def rejects_by_reason(data_dir: str, manifest: contract.ShardManifest) -> tuple[dict[str, int], str]:
    """Rejected or repaired documents and file parts per reason, and where the counts come from:
    the manifest's statistics, or (an output without them) a count of ``rejects/*.jsonl``."""
    counted = manifest.statistics.get("rejected")
    if isinstance(counted, dict):
        return dict(counted), "manifest statistics"
    counts: Counter = Counter()
    for path in _side_tables(data_dir, "rejects", ".jsonl"):
        with open(path, encoding="utf-8") as f:
            counts.update(json.loads(line)["reason"] for line in f if line.strip())
    return dict(counts), "rejects/*.jsonl"


# --- the plots ----------------------------------------------------------------------------------


def plot_histograms(
    samples: list[SplitSample], values: str, path: str, title: str, xlabel: str, max_value: int
) -> Plotted:
    """One panel per split: how many examples have each value 0..max_value of ``values``
    (a SplitSample field). Series "<split>": x the values, y the example counts."""
    fig, axes = new_figure(len(samples))
    plotted = Plotted(path, title)
    for ax, sample in zip(axes, samples):
        data = getattr(sample, values)
        counts = np.bincount(data, minlength=max_value + 1) if len(data) else np.zeros(max_value + 1, np.int64)
        x = np.arange(len(counts))
        ax.bar(x, counts, width=1.0)
        nonzero = counts[counts > 0]
        if len(nonzero) and counts.max() > 20 * nonzero.mean():  # one spike (e.g. at the maximum length)
            ax.set_yscale("log")
        ax.set_title(sample.describe(), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("examples" + (" (log scale)" if ax.get_yscale() == "log" else ""))
        if len(data):
            ax.axvline(
                float(np.mean(data)), color="black", linestyle="--", linewidth=1, label=f"mean {np.mean(data):.1f}"
            )
            ax.legend()
        plotted.series[sample.split] = Series(x.tolist(), counts.tolist())
    fig.suptitle(title)
    save(fig, path)
    return plotted


def plot_sentence_pairs(samples: list[SplitSample], objective: str, path: str) -> Plotted:
    """Per split, the share of examples with next_sentence_label 0 and 1 (counts written on the
    bars). Series "<split>": x the two label names, y their counts."""
    names = SENTENCE_LABELS[objective]
    title = "\n".join(
        [f"{objective.upper()} balance (next_sentence_label)"] + [s.describe() for s in samples if s.sampled]
    )
    counts = {s.split: np.bincount(s.sentence_label.astype(np.int64), minlength=2)[:2] for s in samples}
    shares = {s.split: counts[s.split] / max(int(counts[s.split].sum()), 1) for s in samples}
    fig, (ax,) = new_figure(1, width=7.0, height=1.6 + 0.6 * len(samples))
    bars(
        ax,
        [s.split for s in samples],
        {f"{label} ({i})": [shares[s.split][i] for s in samples] for i, label in enumerate(names)},
        horizontal=True,
    )
    for row, s in enumerate(samples):
        zero, one = counts[s.split]
        ax.text(0.01, row, f"{zero:,}", va="center", fontsize=8)
        ax.text(0.99, row, f"{one:,} ({shares[s.split][1]:.1%})", va="center", ha="right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("share of examples")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncols=2)
    save(fig, path)
    return Plotted(path, title, {s.split: Series(list(names), counts[s.split].tolist()) for s in samples})


LABEL_CHARS = 48


def short_sources(sources: list[str]) -> dict[str, str]:
    """Source paths as labels: without their common directory (the base name of a lone source),
    cut to their last LABEL_CHARS characters."""
    if len(sources) == 1:
        labels = {sources[0]: os.path.basename(sources[0]) or sources[0]}
    else:
        common = os.path.commonpath(sources) if all(s.startswith("/") for s in sources) else ""
        labels = {s: os.path.relpath(s, common) if common else s for s in sources}
    return {s: label if len(label) <= LABEL_CHARS else "..." + label[-LABEL_CHARS + 3 :] for s, label in labels.items()}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("s" if n != 1 else "")


def _common_dir(directories: list[str]) -> str:
    """The longest directory all of ``directories`` are in ("/"-separated, so gs:// paths too)."""
    parts = [d.rstrip("/").split("/") for d in directories]
    common = []
    for names in zip(*parts):
        if len(set(names)) > 1:
            break
        common.append(names[0])
    return "/".join(common)


def source_groups(sources: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A bar label per (source, format): the file itself (``short_sources``) when there are at
    most TOP_SOURCES sources, else its folder and format, ``books/fiction · book_text (120
    files)``, the folder named from the one above the inputs' common folder."""
    paths = sorted({s for s, _ in sources})
    if len(paths) <= TOP_SOURCES:
        labels = short_sources(paths)
        return {(s, f): labels[s] for s, f in sources}
    folder = {s: s.rsplit("/", 1)[0] if "/" in s else "." for s in paths}
    root = _common_dir(list(folder.values()))
    above = root.rsplit("/", 1)[0] + "/" if "/" in root else ""
    named = {s: (d[len(above) :] if above and d.startswith(above) else d) or "." for s, d in folder.items()}
    files = Counter((named[s], f) for s, f in set(sources))
    return {(s, f): f"{named[s]} · {f} ({_plural(files[(named[s], f)], 'file')})" for s, f in sources}


def plot_documents_per_source(counts: dict[tuple[str, str, str], Kept], path: str) -> Plotted:
    """Kept documents and their tokens (two panels) per source, or per folder and format when
    there are more than TOP_SOURCES sources (``source_groups``); the TOP_SOURCES largest bars by
    tokens, then one "other" bar; stacked by split. Series "documents/<split>" and
    "tokens/<split>": x the bar labels, y the documents or tokens."""
    splits = sorted({split for *_, split in counts}, key=lambda s: (s != "train", s))
    label_of = source_groups(sorted({(s, f) for s, f, _ in counts}))
    per_label: dict[tuple[str, str], list[int]] = {}
    for (source, fmt, split), kept in counts.items():
        summed = per_label.setdefault((label_of[(source, fmt)], split), [0, 0])
        summed[0] += kept.documents
        summed[1] += kept.tokens
    totals = Counter()
    for (label, _), (_, tokens) in per_label.items():
        totals[label] += tokens
    ranked = [label for label, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    shown, rest = ranked[:TOP_SOURCES], ranked[TOP_SOURCES:]
    categories = shown + ([f"other ({len(rest):,} groups)"] if rest else [])
    series: dict[str, Series] = {}
    fig, axes = new_figure(2, width=6.0, height=1.8 + 0.3 * len(categories))
    for i, (panel, ax) in enumerate(zip(("documents", "tokens"), axes)):
        stacks = {}
        for split in splits:
            values = [per_label.get((label, split), [0, 0])[i] for label in shown]
            if rest:
                values.append(sum(per_label.get((label, split), [0, 0])[i] for label in rest))
            stacks[split] = values
            series[f"{panel}/{split}"] = Series(categories, values)
        bars(ax, categories, stacks, horizontal=True)
        ax.set_xlabel(f"{panel} kept")
        ax.tick_params(labelleft=i == 0)  # the bars of both panels are in the same order
    documents = sum(v[0] for v in per_label.values())
    sources = len({s for s, _, _ in counts})
    grouping = "source" if sources <= TOP_SOURCES else "folder and format"
    title = (
        f"Documents and tokens per {grouping} ({documents:,} documents, {sum(totals.values()):,} tokens, "
        f"{_plural(sources, 'source')})"
    )
    fig.suptitle(title)
    save(fig, path)
    return Plotted(path, title, series)


def plot_rejects(counts: dict[str, int], origin: str, path: str) -> Plotted:
    """Rejects per reason, largest first. Series "rejects": x the reasons, y the counts."""
    reasons = sorted(counts, key=lambda r: (-counts[r], r))
    title = f"Rejected or repaired ({sum(counts.values()):,}, from the {origin})"
    fig, (ax,) = new_figure(1, height=1.5 + 0.3 * max(len(reasons), 1))
    bars(ax, reasons, {"rejects": [counts[r] for r in reasons]}, horizontal=True)
    for row, r in enumerate(reasons):
        ax.text(counts[r], row, f" {counts[r]:,}", va="center", fontsize=8)
    if not reasons:
        ax.text(0.5, 0.5, "no rejects", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("documents or file parts")
    ax.set_title(title)
    save(fig, path)
    return Plotted(path, title, {"rejects": Series(reasons, [counts[r] for r in reasons])})


@dataclass
class Report:
    plots: dict[str, Plotted] = field(default_factory=dict)
    """By file stem: example_lengths, sentence_pairs, masked_positions, documents_per_source, rejects."""
    notes: list[str] = field(default_factory=list)
    """Why a plot was not drawn."""
    samples: dict[str, SplitSample] = field(default_factory=dict)
    """What was read of each split with examples."""


def write_report(data_dir: str, out_dir: Optional[str] = None, max_rows: Optional[int] = DEFAULT_MAX_ROWS) -> Report:
    """Every plot of the module docstring for the output in ``data_dir``, into ``out_dir``
    (default ``<data_dir>/report``). Raises ContractError for a directory that is not a
    finished job output."""
    manifest = contract.read_manifest(data_dir)
    out_dir = out_dir or os.path.join(data_dir, REPORT_SUBDIR)
    report = Report()
    splits = [s for s in contract.SPLITS if manifest.shards_of(s)]
    samples = [read_split(data_dir, manifest, split, max_rows) for split in splits]
    samples = [s for s in samples if s.total_rows]
    report.samples = {s.split: s for s in samples}

    def out(name):
        return os.path.join(out_dir, f"{name}.png")

    if samples:
        report.plots["example_lengths"] = plot_histograms(
            samples,
            "lengths",
            out("example_lengths"),
            "Example lengths (non-padding tokens)",
            "tokens per example",
            manifest.max_seq_length,
        )
        if manifest.objective == "none":
            report.notes.append("sentence pairs: not plotted: the shards have no sentence-pair label (objective none)")
        else:
            report.plots["sentence_pairs"] = plot_sentence_pairs(samples, manifest.objective, out("sentence_pairs"))
        m = manifest.masking
        if m.mode == "static":
            report.plots["masked_positions"] = plot_histograms(
                samples,
                "masked_positions",
                out("masked_positions"),
                f"Masked positions per example (static, masked_lm_prob {m.masked_lm_prob}, dupe_factor {m.dupe_factor})",
                "masked positions",
                m.max_predictions_per_seq,
            )
        else:
            report.notes.append(
                f"masked positions: not plotted: the shards are stored unmasked (masking=dynamic); the trainer "
                f"draws masks as it loads (masked_lm_prob {m.masked_lm_prob}, at most "
                f"{m.max_predictions_per_seq} per example)"
            )
    else:
        report.notes.append("examples: not plotted: the manifest lists no examples")
    documents = documents_by_source(data_dir)
    if documents:
        report.plots["documents_per_source"] = plot_documents_per_source(documents, out("documents_per_source"))
    else:
        report.notes.append(f"documents per source: not plotted: no documents table in {data_dir}/documents")
    rejects, origin = rejects_by_reason(data_dir, manifest)
    report.plots["rejects"] = plot_rejects(rejects, origin, out("rejects"))
    return report


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="PNG plots of a data job's output (shards, manifest, side tables).",
    )
    parser.add_argument("data_dir", help="the job's output_dir (holds manifest.json)")
    parser.add_argument("--out", help="where to write the plots (default: <data_dir>/report)")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        help=f"read at most this many examples per split, evenly spaced (default {DEFAULT_MAX_ROWS:,})",
    )
    args = parser.parse_args(argv)
    if args.max_rows < 1:
        parser.error("--max-rows must be at least 1")
    try:
        report = write_report(args.data_dir, args.out, args.max_rows)
    except contract.ContractError as e:
        exit_with(str(e))
    except OSError as e:  # a shard the manifest lists is missing or unreadable
        exit_with(f"{args.data_dir}: cannot read what its manifest lists ({e})")
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for plotted in report.plots.values():
        print(plotted.path)


if __name__ == "__main__":
    main()
