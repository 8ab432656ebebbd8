"""The summary of a learning-rate (or any) Hydra sweep over fine-tuning runs.

``SweepSummary`` is a Hydra callback (registered in conf/finetune/finetune.yaml's hydra.callbacks): when a
multirun ends it reads the results.json of each job of this sweep (``<sweep dir>/<job>/``,
written after the sweep started), writes ``<sweep dir>/sweep_summary.json`` with every point and
the best one by its score (every metric here is better higher), and prints the best. Points that
tie with the best are listed (``tied``) and said, with whether their score is only the
majority-class score (nothing learnt: the sweep has no best point).
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from training.finetune.loop import RESULTS_FILE

SUMMARY_FILE = "sweep_summary.json"


def summarize(sweep_dir: str, since: float = 0.0) -> Optional[dict]:
    """Every job's point {dir, overrides, main_metric, score, final} and the best; None without jobs.

    since: ignore results.json files older than this (a sweep run again into the same dir)."""
    points = []
    for path in sorted(glob.glob(os.path.join(sweep_dir, "*", RESULTS_FILE))):
        if os.path.getmtime(path) < since:
            continue
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        points.append(
            {
                "dir": os.path.dirname(path),
                "overrides": results.get("overrides", []),
                "lr": results["config"]["optim"]["lr"],
                "main_metric": results["main_metric"],
                "score": results["score"],
                "majority_class": results.get("majority_class", {}).get(results["main_metric"]),
                "final": results["final"],
            }
        )
    if not points:
        return None
    points.sort(key=lambda p: int(os.path.basename(p["dir"])) if os.path.basename(p["dir"]).isdigit() else 0)
    common = set.intersection(*(set(p["overrides"]) for p in points))
    for point in points:
        point["varied"] = [o for o in point["overrides"] if o not in common]  # what the sweep changed
    best = max(points, key=lambda p: p["score"])
    tied = [p["dir"] for p in points if p["score"] == best["score"]]
    return {"main_metric": best["main_metric"], "best": best, "points": points, "tied": tied if len(tied) > 1 else []}


def tie_note(summary: dict) -> str:
    """One line about points that tie with the best ("" when none tie)."""
    if not summary["tied"]:
        return ""
    best = summary["best"]
    tied = [p for p in summary["points"] if p["dir"] in summary["tied"]]
    note = (
        f"sweep: {len(tied)} points tie at {best['main_metric']} {best['score']:.4f} "
        f"({'; '.join(' '.join(p['varied']) or p['dir'] for p in tied)}): the best is the first of them"
    )
    if best["majority_class"] is not None and best["score"] <= best["majority_class"]:
        note += (
            f", and {best['score']:.4f} is no more than the majority-class score {best['majority_class']:.4f}: "
            "none of them learnt anything (docs/finetuning.md: a small model or data set)"
        )
    return note


class SweepSummary(Callback):
    """Writes sweep_summary.json in the sweep dir at the end of a multirun."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1.0  # file times have coarse resolution on some filesystems

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        summary = summarize(sweep_dir, self.started)
        if summary is None:
            print(f"sweep: no results.json under {sweep_dir}", flush=True)
            return
        with open(os.path.join(sweep_dir, SUMMARY_FILE), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        best = summary["best"]
        print(
            f"sweep: best {best['main_metric']} {best['score']:.4f} with {' '.join(best['varied'])} "
            f"({best['dir']}); {len(summary['points'])} points in {os.path.join(sweep_dir, SUMMARY_FILE)}",
            flush=True,
        )
        if summary["tied"]:
            print(tie_note(summary), flush=True)
