"""The training report plots whatever statistics the run's objective logged (training/report.py):
every name in steps.jsonl and evals.jsonl, losses on one plot and the rest on the other, labelled as
the objective labels them; on small hand-written run directories (no checkpoint: the config is
Hydra's .hydra/config.yaml, as a run leaves it before its first checkpoint)."""

from __future__ import annotations

import json

import pytest
import yaml

from training import report as run_report
from training.objectives import create, registered
from training.objectives.electra import STAT_NAMES
from training.run_log import EVALS_FILE, STEP_FIELDS, STEPS_FILE

STEPS = 6
EVAL_AT = (3, 6)


def write_run(directory, statistics: tuple[str, ...], objective: str | None) -> list[dict]:
    """A run dir whose steps log ``loss`` and ``statistics`` (value: a distinct number per name and
    step), evaluations at EVAL_AT, and a Hydra config naming ``objective`` (None: no objective key,
    as a run from before there was a choice). Returns the step records."""
    names = ("loss", *statistics)
    steps = [
        {"step": s, **{n: s + i / 10 for i, n in enumerate(names)}, "lr": 1e-4 * s, "samples_consumed": 8 * s}
        for s in range(1, STEPS + 1)
    ]
    steps[3]["resumed_from"] = 3
    evals = [
        {"step": s, **{f"eval/{n}": -(s + i / 10) for i, n in enumerate(names)}, "eval/batches_per_rank": 2}
        for s in EVAL_AT
    ]
    (directory / STEPS_FILE).write_text("".join(json.dumps(r) + "\n" for r in steps))
    (directory / EVALS_FILE).write_text("".join(json.dumps(r) + "\n" for r in evals))
    (directory / ".hydra").mkdir()
    config = {"data_dir": str(directory / "no-shards")}
    if objective is not None:
        config["objective"] = {"name": objective}
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return steps


def test_electra_runs_plot_every_statistic_under_the_objectives_labels(tmp_path):
    steps = write_run(tmp_path, STAT_NAMES, "electra")
    report = run_report.write_report(str(tmp_path), str(tmp_path / "plots"))
    loss, rates = report.plots["loss"].series, report.plots["accuracy"].series
    assert [k for k in loss if k.startswith("step/train")] == [
        "step/train loss",
        "step/train generator MLM loss",
        "step/train detection loss",
    ]
    assert [k for k in rates if k.startswith("step/train")] == [
        "step/train generator MLM accuracy",
        "step/train detection accuracy",
        "step/train replaced tokens found",
        "step/train original tokens kept",
        "step/train fraction replaced",
    ]
    assert rates["step/train replaced tokens found"].y == [s["replaced_recall"] for s in steps]
    assert rates["step/eval fraction replaced"].x == list(EVAL_AT)
    assert rates["step/eval fraction replaced"].y == [-(s + 7 / 10) for s in EVAL_AT]
    assert loss["step/eval detection loss"].y == [-(s + 3 / 10) for s in EVAL_AT]
    # the bookkeeping keys are not statistics
    plotted = " ".join(list(loss) + list(rates))
    assert not any(f"train {key}" in plotted for key in STEP_FIELDS)
    assert "batches" not in plotted
    assert report.plots["learning_rate"].series["step/lr"].y == [s["lr"] for s in steps]


def test_a_run_config_without_an_objective_is_bert_s_mlm(tmp_path):
    write_run(tmp_path, ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"), None)
    report = run_report.write_report(str(tmp_path), str(tmp_path / "plots"))
    assert {"step/train MLM loss", "step/train NSP loss", "step/eval MLM loss"} <= set(report.plots["loss"].series)
    assert {"step/train MLM accuracy", "step/eval NSP accuracy"} <= set(report.plots["accuracy"].series)


def test_an_objective_this_code_does_not_know_is_plotted_under_its_logged_names_with_a_note(tmp_path):
    write_run(tmp_path, ("span_loss", "boundary_accuracy"), "spanbert")
    report = run_report.write_report(str(tmp_path), str(tmp_path / "plots"))
    assert "step/train span loss" in report.plots["loss"].series
    assert "step/train boundary accuracy" in report.plots["accuracy"].series
    assert any("unknown objective 'spanbert'" in note for note in report.notes)


@pytest.mark.parametrize("name", sorted(registered()))
def test_every_objective_labels_exactly_the_statistics_it_logs(name):
    """A label for a name it never logs, or a logged name without one, is a typo somewhere."""
    cls = registered()[name]
    logged = set()
    for task in cls.sentence_pairs:
        logged |= set(create(name, task).statistics)
    assert set(cls.statistic_labels) == logged
    labels = list(cls.statistic_labels.values())
    assert len(set(labels)) == len(labels)
