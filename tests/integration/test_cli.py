"""The two command lines as a user meets them: help that names the tool and only its own presets,
one line per configuration mistake, a quiet data job that shows its progress, nothing left behind
outside output_dir. Each test runs the real entry point in a subprocess."""

import re
import subprocess
import sys

import pytest

PIPELINE_GROUPS = {"dedup", "filters", "instances", "masking", "runner", "tokenizer"}
TRAINER_GROUPS = {"data", "deepspeed", "experiment", "logger", "model", "objective", "optim", "trainer"}
# logger: the trainer's group (conf/train/logger), on fine-tuning's search path
FINETUNE_GROUPS = {"task", "recipe", "logger"}
PROGRESS_LINE = re.compile(
    r"^\[ *(\d+m)?\d+s\] files [\d,]+/[\d,]+ · input [\d.]+ [KMGT]?B/[\d.]+ [KMGT]?B \(\d+%\)"
    r" · documents read [\d,]+ · kept [\d,]+ · examples [\d,]+ · (inputs read|\S+ left reading)$"
)


def cli(tool, *args, cwd, timeout=180):
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def preset_groups(help_text: str) -> dict[str, list[str]]:
    if "== Presets (group=option) ==" not in help_text:
        return {}
    section = help_text.split("== Presets (group=option) ==", 1)[1].split("==", 1)[0]
    groups = {}
    for line in section.strip().splitlines():
        name, _, options = line.partition(":")
        groups[name.strip()] = [o.strip() for o in options.split(",")]
    return groups


@pytest.mark.parametrize(
    "tool, title, required, own",
    [
        ("pipeline", "bert-pretrain data job", ["output_dir"], PIPELINE_GROUPS),
        ("training", "bert-pretrain trainer", ["data_dir", "output_dir"], TRAINER_GROUPS),
        (
            "training.finetune",
            "bert-pretrain fine-tuning",
            ["task", "data_dir", "model_dir", "output_dir"],
            FINETUNE_GROUPS,
        ),
        ("training.evaluate", "bert-pretrain evaluate", ["model_dir"], set()),  # task=lee is a plain key
    ],
)
def test_help_names_the_tool_its_required_keys_and_only_its_own_presets(tmp_path, tool, title, required, own):
    r = cli(tool, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(title) and "powered by Hydra" not in r.stdout
    header = r.stdout.split("==", 1)[0]
    assert all(key in header for key in required) and "Required:" in header, header
    groups = preset_groups(r.stdout)
    assert set(groups) == own  # not the other tool's groups
    assert not any(o.endswith("_schema") for options in groups.values() for o in options)
    assert list(tmp_path.iterdir()) == []  # --help writes nothing


@pytest.mark.parametrize(
    "tool, args, message",
    [
        ("pipeline", [], "error: output_dir is required"),
        ("pipeline", ["output_dir=out", "instances.pool_size=1"], "error: instances.pool_size must be at least 2"),
        ("pipeline", ["output_dir=out", "runner=dataflow"], "error: DataflowRunner needs runner.project"),
        ("pipeline", ["output_dir=out", "log_level=LOUD"], "error: log_level must be one of"),
        ("training", ["data_dir=shards"], "error: output_dir is required"),
        ("training", ["output_dir=run"], "error: data_dir is required"),
        ("training", ["data_dir=shards", "output_dir=run", "optim.lr=-1"], "error: optim.lr must be positive"),
        (
            "training",
            ["data_dir=shards", "output_dir=run", "optim=lamb"],
            "error: optim.name=lamb needs deepspeed.zero_stage=0",
        ),
    ],
)
def test_a_configuration_mistake_is_one_line_and_exit_code_2(tmp_path, tool, args, message):
    r = cli(tool, *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "out").exists()  # nothing started


def test_the_data_job_prints_progress_and_its_summary_and_no_beam_chatter(tmp_path):
    """Two worker processes, default log level: stderr holds only progress lines, stdout the
    summary; nothing is written outside output_dir (no Hydra run directory)."""
    work, out = tmp_path / "cwd", tmp_path / "shards"
    work.mkdir()
    r = cli(
        "pipeline",
        f"output_dir={out}",
        "tokenizer.vocab_size=4000",
        "progress_every_s=0.5",
        "runner.direct_num_workers=2",
        "runner.direct_running_mode=multi_processing",
        cwd=work,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bert-pretrain data job finished in")
    stderr = r.stderr.splitlines()
    assert stderr, "no progress shown"
    assert all(PROGRESS_LINE.match(line) for line in stderr), r.stderr
    last = stderr[-1]
    assert int(re.search(r"documents read ([\d,]+)", last).group(1).replace(",", "")) > 0
    assert list(work.iterdir()) == []
    assert (out / "manifest.json").exists()


def test_log_level_info_reaches_the_worker_processes(tmp_path):
    r = cli(
        "pipeline",
        f"output_dir={tmp_path / 'shards'}",
        "tokenizer.vocab_size=4000",
        "log_level=INFO",
        "progress_every_s=0",
        "runner.direct_num_workers=1",
        "runner.direct_running_mode=multi_processing",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    # Logged at INFO by Beam's SDK harness, which runs only inside the worker process.
    assert re.search(r" INFO apache_beam\.runners\.worker\.sdk_worker_main: Python sdk harness starting", r.stderr), (
        r.stderr
    )


@pytest.mark.parametrize(
    "tool, override",
    [
        ("training", "model=model_schema"),
        ("training", "instances=sop"),
        ("pipeline", "tokenizer=tokenizer_schema"),
        ("pipeline", "model=mini"),
    ],
)
def test_a_schema_or_the_other_tools_group_is_not_a_preset(tmp_path, tool, override):
    """`model=model_schema` used to build a 768-wide model silently; `instances=sop` was offered to
    the trainer. Neither is an option of that tool now: Hydra says so while composing."""
    required = ["data_dir=shards", "output_dir=out"] if tool == "training" else ["output_dir=out"]
    r = cli(tool, "--cfg", "job", *required, override, cwd=tmp_path)
    assert r.returncode != 0
    assert "Could not" in r.stderr and override.split("=")[0] in r.stderr, r.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"a\nb\n", "vocabulary lacks BERT's special tokens"),
        (b"\xff\xfe[PAD]\n", "is not UTF-8 text"),
    ],
)
def test_a_bad_vocab_file_is_one_line_before_the_job_starts(tmp_path, content, message):
    vocab = tmp_path / "vocab.txt"
    if content is not None:
        vocab.write_bytes(content)
    r = cli(
        "pipeline",
        f"output_dir={tmp_path / 'out'}",
        "tokenizer=vocab_file",
        f"tokenizer.vocab_file={vocab}",
        cwd=tmp_path,
    )
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: tokenizer.vocab_file={vocab}") and message in lines[0], (
        r.stderr
    )
    assert not (tmp_path / "out").exists()


def test_the_summary_says_why_a_trained_vocabulary_is_smaller_than_asked():
    from pipeline.config import TokenizerConfig
    from pipeline.run import vocabulary_note

    short = vocabulary_note(26_485, TokenizerConfig())
    assert short.startswith("26,485 pieces trained") and "fewer than tokenizer.vocab_size=30,522" in short
    assert "min_frequency=2" in short
    assert vocabulary_note(30_522, TokenizerConfig()) == "30,522 pieces trained on the corpus"
    assert vocabulary_note(30_522, TokenizerConfig(vocab_file="v.txt")) == "30,522 pieces from v.txt"
