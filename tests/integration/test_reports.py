"""The run reports on real outputs: the data job's shards of the real Wikipedia sample, and a real
training run of the tiny model that diverges after its step-4 checkpoint (the NaN injection of
tests/launch_helpers.py at step 7) and is then resumed with more steps, logging to W&B offline.

Each plot's returned data is compared with the logs and shards, counted here independently.
Runtimes here (2 busy cores): the two data jobs ~10 s each, the crashed and the resumed run
~20-25 s each, each report a few seconds.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import matplotlib.image
import numpy as np
import pyarrow.compute as pc
import pytest

from conftest import IN_MEMORY, run_job
from launch_helpers import REPO, fault_injecting_command, read_steps, run, single_process_command, trainer_env
from pipeline import contract
from pipeline import report as data_report
from shards import read_split
from training import report as run_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, f"{path} is not a PNG"
    image = matplotlib.image.imread(path)  # decodes the whole file
    assert image.shape[0] > 100 and image.shape[1] > 100


def report_command(module, *args):
    return [sys.executable, "-m", module, *map(str, args)]


def run_report_cli(module, *args):
    return subprocess.run(
        report_command(module, *args), cwd=REPO, env=trainer_env(), capture_output=True, text=True, timeout=300
    )


# --- the data job's report ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """NSP, static masks, length 128, a 2000-id vocabulary, every document masked once."""
    out = tmp_path_factory.mktemp("report_shards")
    manifest = run_job(out, "tokenizer.vocab_size=2000", "masking.dupe_factor=1", *IN_MEMORY)
    return str(out), manifest


@pytest.fixture(scope="module")
def dynamic_shards(tmp_path_factory):
    """Unmasked examples (the trainer masks them) without a sentence-pair label."""
    out = tmp_path_factory.mktemp("report_dynamic")
    run_job(out, "masking=dynamic", "instances=none", "tokenizer.vocab_size=2000", *IN_MEMORY)
    return str(out)


def split_values(out, split):
    table = read_split(out, split)
    return (
        pc.list_value_length(table.column(contract.INPUT_IDS)).to_numpy(),
        pc.list_value_length(table.column(contract.MASKED_LM_POSITIONS)).to_numpy(),
        table.column(contract.NEXT_SENTENCE_LABEL).to_numpy(),
    )


def counted(series):
    return dict(zip(series.x, series.y))


def test_data_report_plots_what_the_shards_hold(shards, tmp_path):
    out, manifest = shards
    stats = manifest.statistics
    report = data_report.write_report(out, str(tmp_path / "report"))
    assert set(report.plots) == {
        "example_lengths",
        "sentence_pairs",
        "masked_positions",
        "documents_per_source",
        "rejects",
    }
    assert report.notes == []
    for plotted in report.plots.values():
        assert os.path.dirname(plotted.path) == str(tmp_path / "report")
        assert_png(plotted.path)
    for split in ("train", "eval"):
        lengths, masked, labels = split_values(out, split)
        rows = sum(s.rows for s in manifest.shards_of(split))
        assert len(lengths) == rows == stats["examples"][split] > 0
        histogram = report.plots["example_lengths"].series[split]
        assert sum(histogram.y) == rows
        assert histogram.y == np.bincount(lengths, minlength=manifest.max_seq_length + 1).tolist()
        assert sum(x * n for x, n in zip(histogram.x, histogram.y)) == stats["example_tokens"][split]
        per_example = report.plots["masked_positions"].series[split]
        assert sum(per_example.y) == rows
        assert sum(x * n for x, n in zip(per_example.x, per_example.y)) == stats["masked_positions"][split]
        assert per_example.y == np.bincount(masked, minlength=manifest.masking.max_predictions_per_seq + 1).tolist()
        balance = counted(report.plots["sentence_pairs"].series[split])
        assert balance == {"B next": int(np.sum(labels == 0)), "B random": int(np.sum(labels == 1))}
        assert balance["B random"] == stats.get("sentence_pair_negatives", {}).get(split, 0)
        documents = report.plots["documents_per_source"].series[f"documents/{split}"]
        assert sum(documents.y) == stats["documents_kept"][split]
        assert sum(report.plots["documents_per_source"].series[f"tokens/{split}"].y) == stats["tokens"][split]
    assert 0 < counted(report.plots["sentence_pairs"].series["train"])["B random"] < stats["examples"]["train"]
    rejects = counted(report.plots["rejects"].series["rejects"])
    assert rejects == stats["rejected"] and sum(rejects.values()) > 0
    in_files = Counter()
    for path in glob.glob(os.path.join(out, "rejects", "*.jsonl")):
        with open(path) as f:
            in_files.update(json.loads(line)["reason"] for line in f)
    assert rejects == dict(in_files)


SHELVES = {"fiction": 14, "history": 11, "science": 9}  # books per subfolder: 34 sources in all


def test_documents_per_source_groups_a_folder_of_books_by_subfolder_and_format(sample_paragraphs, tmp_path):
    """A folder of 34 small books in three subfolders, and a JSON-lines file beside the science
    books: one bar per subfolder and format, each with its documents and tokens, not 25 bars of
    one book each and an "other" bar."""
    books = tmp_path / "books"
    paragraphs = iter(sample_paragraphs)
    for shelf, n in SHELVES.items():
        (books / shelf).mkdir(parents=True)
        for i in range(n):
            text = "\n\n".join(next(paragraphs) for _ in range(2))
            (books / shelf / f"{shelf}-{i:02d}.txt").write_text(text + "\n", "utf-8")
    notes = [{"id": i, "text": next(paragraphs)} for i in range(6)]
    (books / "science" / "notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in notes), "utf-8")
    out = tmp_path / "out"
    manifest = run_job(
        out,
        f"inputs=[{books}]",
        "tokenizer.vocab_size=2000",
        "masking.dupe_factor=1",
        "cleaning.min_document_chars=50",
        *IN_MEMORY,
    )
    plotted = data_report.write_report(str(out), str(tmp_path / "report")).plots["documents_per_source"]
    assert_png(plotted.path)
    kept, tokens = manifest.statistics["documents_kept"], manifest.statistics["tokens"]
    docs_table = read_split(str(out), "documents")
    per_label = Counter()
    for source, fmt, n in zip(*(docs_table.column(c).to_pylist() for c in ("source", "format", "tokens"))):
        shelf = os.path.basename(os.path.dirname(source))
        per_label[f"books/{shelf} · {fmt}"] += n
    expected = {
        "books/fiction · book_text (14 files)",
        "books/history · book_text (11 files)",
        "books/science · book_text (9 files)",
        "books/science · json_lines (1 file)",
    }
    assert set(plotted.series["documents/train"].x) == expected
    assert "folder and format" in plotted.title and "34 sources" not in plotted.title and "35 sources" in plotted.title
    for split in kept:
        assert sum(plotted.series[f"documents/{split}"].y) == kept[split]
        assert sum(plotted.series[f"tokens/{split}"].y) == tokens[split]
    drawn = Counter()
    for split in kept:
        for label, n in zip(plotted.series[f"tokens/{split}"].x, plotted.series[f"tokens/{split}"].y):
            drawn[label.rsplit(" (", 1)[0]] += n
    assert drawn == per_label


def test_data_report_samples_large_splits_evenly_and_says_so(shards, tmp_path):
    out, manifest = shards
    train_rows = manifest.statistics["examples"]["train"]
    first = data_report.write_report(out, str(tmp_path / "a"), max_rows=1000)
    again = data_report.write_report(out, str(tmp_path / "b"), max_rows=1000)
    train, eval_ = first.samples["train"], first.samples["eval"]
    assert train.sampled and len(train.rows) == 1000 and not eval_.sampled
    assert np.array_equal(train.rows, np.arange(1000) * train_rows // 1000) and len(np.unique(train.rows)) == 1000
    assert np.array_equal(train.example_id, again.samples["train"].example_id)  # the same rows every time
    lengths, masked, labels = split_values(out, "train")
    histogram = first.plots["example_lengths"].series["train"]
    assert sum(histogram.y) == 1000
    assert histogram.y == np.bincount(lengths[train.rows], minlength=manifest.max_seq_length + 1).tolist()
    assert counted(first.plots["sentence_pairs"].series["train"])["B random"] == int(np.sum(labels[train.rows] == 1))
    assert sum(first.plots["sentence_pairs"].series["eval"].y) == manifest.statistics["examples"]["eval"]
    assert f"sampled 1,000 of {train_rows:,} examples" in first.plots["sentence_pairs"].title
    assert f"sampled 1,000 of {train_rows:,} examples" in train.describe()
    for plotted in first.plots.values():
        assert_png(plotted.path)


def test_data_report_command_on_dynamic_masks_without_sentence_pairs(dynamic_shards, tmp_path):
    result = run_report_cli("pipeline.report", dynamic_shards)
    assert result.returncode == 0, result.stderr
    written = result.stdout.split()
    default_dir = os.path.join(dynamic_shards, "report")
    assert written == [
        os.path.join(default_dir, f"{name}.png") for name in ("example_lengths", "documents_per_source", "rejects")
    ]
    for path in written:
        assert_png(path)
    assert "masking=dynamic" in result.stderr and "objective none" in result.stderr
    report = data_report.write_report(dynamic_shards, str(tmp_path))
    manifest = contract.read_manifest(dynamic_shards)
    assert sum(report.plots["example_lengths"].series["train"].y) == manifest.statistics["examples"]["train"]
    assert report.samples["train"].masked_positions is None and report.samples["train"].sentence_label is None

    missing = run_report_cli("pipeline.report", tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == f"error: {tmp_path / 'nowhere'} does not exist"
    not_a_job = run_report_cli("pipeline.report", tmp_path)
    assert not_a_job.returncode == 2
    assert not_a_job.stderr.strip().startswith("error: no manifest.json in") and len(not_a_job.stderr.splitlines()) == 1


# --- the training run's report -------------------------------------------------------------------

RUN = (
    "experiment=cpu_smoke",
    "model=tiny",
    "logger=wandb_offline",
    "trainer.export_hf=false",
    "trainer.checkpoint_every=4",
    "trainer.eval_every=4",
    "trainer.eval_steps=2",
)
"""log_every 1; global batch 8 = micro 4 x accumulation 2, so step k runs forward calls 2k-1 and 2k."""
CRASH_CALLS = "13,15,17"
"""A NaN loss in each of three steps in a row from step 7 on (2 micro batches a step): the optimizer
skips all three, so the first attempt logs steps 1-6 and stops at step 7."""
STEPS = 12


def finished_wandb_files(out):
    """The run's W&B files once each has its exit record (wandb-core may still be flushing)."""
    from test_tracking import finished_run_records

    files = run_report.wandb_files(str(out))
    for path in files:
        finished_run_records(path)
    return files


@pytest.fixture(scope="module")
def resumed_run(shards, tmp_path_factory):
    """(output_dir, steps.jsonl records after the crash, the same after the resume, the crashed
    attempt's W&B file, the resumed attempt's)."""
    out = tmp_path_factory.mktemp("resumed") / "run"
    data_dir = shards[0]
    args = (*RUN, f"data_dir={data_dir}", f"output_dir={out}")
    env = {**trainer_env(), "INJECT_NAN_AT_CALLS": CRASH_CALLS}
    crashed = subprocess.run(
        fault_injecting_command(*args, "trainer.max_steps=10"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert crashed.returncode != 0 and "non-finite steps in a row at step 7" in crashed.stderr, crashed.stderr[-3000:]
    crashed_steps = read_steps(out)
    assert [s["step"] for s in crashed_steps] == [1, 2, 3, 4, 5, 6]
    (first,) = finished_wandb_files(out)
    resumed = run(single_process_command(*args, f"trainer.max_steps={STEPS}"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "resumed from" in resumed.stdout and "at step 4" in resumed.stdout
    second = [f for f in finished_wandb_files(out) if f != first]
    assert len(second) == 1
    return out, crashed_steps, read_steps(out), first, second[0]


def tokens_per_step(data_dir, steps):
    lengths = {}
    table = read_split(data_dir, "train")
    for i, n in zip(
        table.column(contract.EXAMPLE_ID).to_pylist(),
        pc.list_value_length(table.column(contract.INPUT_IDS)).to_pylist(),
    ):
        lengths[i] = n
    return [sum(lengths[i] for i in s["example_ids"]) for s in steps]


def test_training_report_of_a_resumed_run_is_one_continuous_curve(resumed_run, shards, tmp_path):
    out, crashed_steps, steps, first_file, second_file = resumed_run
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))  # the trainer truncated the crashed tail
    report = run_report.write_report(str(out), str(tmp_path))
    assert set(report.plots) == {"loss", "accuracy", "learning_rate", "throughput"}
    for plotted in report.plots.values():
        assert_png(plotted.path)
    assert report.notes == []
    assert report.resumed == [4]
    loss = report.plots["loss"].series
    every_step = list(range(1, STEPS + 1))
    assert loss["step/train loss"].x == every_step
    assert loss["step/train loss"].y == [s["loss"] for s in steps]
    assert loss["step/train MLM loss"].y == [s["mlm_loss"] for s in steps]
    assert loss["step/train NSP loss"].y == [s["nsp_loss"] for s in steps]
    accuracy = report.plots["accuracy"].series
    assert accuracy["step/train MLM accuracy"].y == [s["mlm_accuracy"] for s in steps]
    assert accuracy["step/train NSP accuracy"].y == [s["nsp_accuracy"] for s in steps]
    assert report.plots["learning_rate"].series["step/lr"].y == [s["lr"] for s in steps]

    # Evaluations: step 4 by the crashed attempt, steps 8 and 12 (the end) by the resumed one.
    first, second = run_report.wandb_history(first_file), run_report.wandb_history(second_file)
    assert [r["step"] for r in first] == [1, 2, 3, 4, 5, 6] and [r["step"] for r in second] == list(range(5, 13))
    evals = {r["step"]: r for r in first[:4] + second if "eval/loss" in r}
    assert sorted(evals) == [4, 8, 12]
    # evals.jsonl (every run writes it, whatever the logger) holds the same evaluations.
    with open(os.path.join(out, "evals.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert [r["step"] for r in logged] == [4, 8, 12]
    assert [r["eval/loss"] for r in logged] == [evals[s]["eval/loss"] for s in (4, 8, 12)]
    assert loss["step/eval loss"].x == [4, 8, 12]
    assert loss["step/eval loss"].y == [evals[s]["eval/loss"] for s in (4, 8, 12)]
    assert accuracy["step/eval MLM accuracy"].y == [evals[s]["eval/mlm_accuracy"] for s in (4, 8, 12)]
    # Throughput: one point per step, steps 5 and 6 from the resumed attempt, not the crashed one.
    throughput = report.plots["throughput"].series["step/tokens/s"]
    assert throughput.x == every_step
    assert throughput.y == [r["perf/tokens_per_s"] for r in first[:4] + second]
    assert throughput.y[4:6] != [r["perf/tokens_per_s"] for r in first[4:6]]

    # Tokens seen: the non-padding tokens of each step's examples, summed over the steps.
    seen = np.cumsum(tokens_per_step(shards[0], steps)).tolist()
    assert report.tokens.label == "tokens seen (non-padding)"
    assert loss["tokens/train loss"].x == seen and loss["tokens/train loss"].y == loss["step/train loss"].y
    assert loss["tokens/eval loss"].x == [seen[3], seen[7], seen[11]]
    assert accuracy["tokens/train NSP accuracy"].x == seen
    assert all(b > a for a, b in zip(seen, seen[1:]))


def test_training_report_supersedes_relogged_steps_and_skips_a_torn_line(resumed_run, shards, tmp_path):
    """steps.jsonl as it would be without the resume's truncation: the crashed attempt's steps
    1-6, the resumed attempt's 5-12, then half a line from a crash; no W&B files, no checkpoint."""
    out, crashed_steps, steps, _, _ = resumed_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = [json.dumps(s) + "\n" for s in crashed_steps + steps[4:]]
    with open(run_dir / "steps.jsonl", "w") as f:
        f.writelines(lines)
        f.write(json.dumps(steps[-1] | {"step": STEPS + 1})[:40])
    report = run_report.write_report(str(run_dir), data_dir=shards[0])
    assert [s["step"] for s in report.steps] == list(range(1, STEPS + 1))
    assert report.steps == steps
    train_loss = report.plots["loss"].series["step/train loss"]
    assert train_loss.x == list(range(1, STEPS + 1)) and train_loss.y == [s["loss"] for s in steps]
    assert "throughput" not in report.plots and "step/eval loss" not in report.plots["loss"].series
    assert any("half-written" in n for n in report.notes)
    assert any("no evaluation points" in n for n in report.notes)
    assert report.resumed == [4]
    assert all(os.path.dirname(p.path) == str(run_dir / "report") for p in report.plots.values())
    exact = report.tokens.tokens

    # Without example ids (trainer.record_example_ids=false): samples x the mean example length.
    with open(run_dir / "steps.jsonl", "w") as f:
        f.writelines(json.dumps({k: v for k, v in s.items() if k != "example_ids"}) + "\n" for s in steps)
    estimated = run_report.write_report(str(run_dir), data_dir=shards[0])
    assert estimated.tokens.label.startswith("tokens seen (estimated")
    manifest = shards[1]
    mean = sum(s.tokens for s in manifest.shards_of("train")) / sum(s.rows for s in manifest.shards_of("train"))
    assert estimated.tokens.tokens.tolist() == [round(s["samples_consumed"] * mean) for s in steps]
    assert abs(estimated.tokens.tokens[-1] - exact[-1]) < 0.1 * exact[-1]
    # Without shards: step panels only, and a note.
    alone = run_report.write_report(str(run_dir), str(tmp_path / "alone"))
    assert alone.tokens is None and not any(k.startswith("tokens/") for k in alone.plots["loss"].series)
    assert any("--data-dir" in n for n in alone.notes)


def test_training_report_marks_resumes_without_wandb_files(resumed_run, tmp_path):
    """As a run with logger=disabled leaves it: steps.jsonl (as the trainer truncated it on the resume)
    and the checkpoints, no W&B files; the resume at step 4 is marked from steps.jsonl."""
    out = resumed_run[0]
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir, ignore=shutil.ignore_patterns("wandb", "report"))
    steps = read_steps(run_dir)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))  # nothing re-logged to tell the resume by
    report = run_report.write_report(str(run_dir), str(tmp_path / "report"))
    assert report.history == [] and report.resumed == [4]
    assert [s.get("resumed_from") for s in steps] == [None] * 4 + [4] + [None] * (STEPS - 5)
    # Records a resume did not truncate tell it too: step 3 again after step 5 resumed from step 2.
    assert run_report.resumed_steps([{"step": s} for s in (1, 2, 3, 4, 5, 3, 4)]) == [2]


def test_training_report_command(resumed_run, tmp_path):
    out = resumed_run[0]
    result = run_report_cli("training.report", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        os.path.join(str(out), "report", f"{name}.png") for name in ("loss", "accuracy", "learning_rate", "throughput")
    ]
    for path in result.stdout.split():
        assert_png(path)
    shutil.rmtree(os.path.join(str(out), "report"))

    empty = run_report_cli("training.report", tmp_path)
    assert empty.returncode == 2 and empty.stdout == ""
    assert empty.stderr.strip() == (
        f"error: no steps.jsonl in {tmp_path}: not a training output_dir "
        f"(python -m training ... output_dir=<dir> writes it)"
    )
