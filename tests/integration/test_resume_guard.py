"""Resuming only the run that output_dir holds, on the schedule of this run.

A rerun into a used output_dir resumes only when its config matches the checkpoint's
``run_config.json`` outside ``training.config.RESUMABLE_KEYS`` (shards compared by content, not
path); otherwise it stops with one message before anything is built, and
``trainer.force_resume=true`` lets it through unless the architecture differs. After a resume with
a longer max_steps, every step's lr is the one a fresh run with the new settings records.

Real runs of the tiny model as users start them (``python -m training``), on real shards from the
real sample (the fixture in tests/conftest.py). Runtimes here (2 cores): the 4-step base run
~20 s; each refused rerun a few seconds (no DeepSpeed); each resumed run ~15-25 s.
"""

import json
import os
import shutil
import time

import pytest

from conftest import IN_MEMORY, run_job
from launch_helpers import read_steps, run, single_process_command
from test_trainer import overrides
from training import checkpoint as ckpt
from training.config import OptimConfig
from training.models import preset_fields
from training.optim import lr_multiplier

BASE = ("trainer.max_steps=4", "trainer.checkpoint_every=4", "trainer.eval_every=0")
"""The run every test here starts from: 4 steps, one checkpoint at the end (SMOKE: lr 3e-3, warmup 2)."""


@pytest.fixture(scope="module")
def base_run(trainer_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    result = run(single_process_command(*overrides(trainer_shards, out, *BASE)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


@pytest.fixture
def used_dir(base_run, tmp_path):
    """A copy of the base run's output_dir to rerun into."""
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


def rerun(shards, output_dir, *extra):
    started = time.perf_counter()
    result = run(single_process_command(*overrides(shards, output_dir, *extra)))
    return result, time.perf_counter() - started


def assert_refused_early(result, seconds, output_dir):
    """Exit 2 with one `error:` message, before the engine (DeepSpeed never started) and without
    touching the run."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-5000:]
    assert result.stderr.startswith("error: ") and "Traceback" not in output, result.stderr[-3000:]
    assert "DeepSpeed info" not in output and "ds_accelerator" not in output, output[-3000:]
    assert ckpt.complete_tags(os.path.join(output_dir, "checkpoints")) == ["step00000004"]
    assert [s["step"] for s in read_steps(output_dir)] == [1, 2, 3, 4]
    print(f"refused in {seconds:.1f} s")


def test_rerun_with_another_learning_rate_is_refused_naming_the_keys(trainer_shards, used_dir):
    """The sweep rerun of the issue: before, it "resumed" the finished run, trained 0 steps and exited 0."""
    result, seconds = rerun(trainer_shards, used_dir, *BASE, "optim.lr=1e-3", "optim.warmup_steps=1")
    assert_refused_early(result, seconds, used_dir)
    message = result.stderr
    assert "optim.lr: 0.003 -> 0.001" in message and "optim.warmup_steps: 2 -> 1" in message, message
    assert "another output_dir" in message and "trainer.force_resume=true" in message, message
    assert "step00000004" in message and "trainer.max_steps" not in message, message


def test_another_model_size_is_refused_even_when_forced(trainer_shards, used_dir):
    """Before: an 80-line `size mismatch` traceback from DeepSpeed's load."""
    result, seconds = rerun(trainer_shards, used_dir, *BASE, "model=mini", "trainer.force_resume=true")
    assert_refused_early(result, seconds, used_dir)
    message = result.stderr
    assert "model.hidden_size: 128 -> 256" in message and "model.num_hidden_layers: 2 -> 4" in message, message
    assert "architecture differs (hidden_size 128 -> 256" in message, message
    assert "not even with trainer.force_resume=true" in message and "another output_dir" in message, message


def test_resume_false_with_checkpoints_is_refused_early(trainer_shards, used_dir):
    """Before: a RuntimeError traceback after the engine was built."""
    result, seconds = rerun(trainer_shards, used_dir, *BASE, "trainer.resume=false")
    assert_refused_early(result, seconds, used_dir)
    assert "trainer.resume=false" in result.stderr


def test_other_shards_are_refused(trainer_shards, used_dir, tmp_path):
    """Shards of another seed (same vocabulary size, so the model would load them silently)."""
    other = tmp_path / "other_shards"
    run_job(
        other,
        "seed=5",
        "tokenizer.vocab_size=2000",
        "instances.max_seq_length=64",
        "instances.eval_fraction=0.05",
        *IN_MEMORY,
    )
    result, seconds = rerun(other, used_dir, *BASE)
    assert_refused_early(result, seconds, used_dir)
    assert f'data_dir: "{trainer_shards}" -> "{other}": other shards' in result.stderr, result.stderr


def test_forced_resume_continues_the_run_with_the_new_values(trainer_shards, used_dir):
    result, _ = rerun(
        trainer_shards,
        used_dir,
        "trainer.max_steps=6",
        "trainer.checkpoint_every=4",
        "trainer.eval_every=0",
        "optim.lr=1e-3",
        "trainer.force_resume=true",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "trainer.force_resume=true: resuming" in output and "optim.lr: 0.003 -> 0.001" in output, output[-3000:]
    assert "at step 4" in result.stdout
    cfg = OptimConfig(lr=1e-3, warmup_steps=2)
    steps = read_steps(used_dir)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [s["lr"] for s in steps[4:]] == [cfg.lr * lr_multiplier(s - 1, cfg, 6) for s in (5, 6)]
    record = ckpt.read_run_record(os.path.join(used_dir, "checkpoints"), "step00000006")
    assert record["config"]["optim"]["lr"] == 1e-3  # the next resume compares with the new values


def test_moved_shards_and_resumable_keys_resume(trainer_shards, used_dir, tmp_path):
    """The same shards under another path, and changes of keys in RESUMABLE_KEYS only."""
    moved = tmp_path / "moved_shards"
    shutil.copytree(trainer_shards, moved)
    result, _ = rerun(
        moved,
        used_dir,
        "trainer.max_steps=6",
        "trainer.checkpoint_every=3",
        "trainer.eval_every=3",
        "trainer.log_every=2",
        "trainer.keep_last_k=1",
        "trainer.peak_tflops=1.0",
        "trainer.record_example_ids=false",
        "data.num_workers=0",
        "data.eval_micro_batch_size=2",
        "logger.project=elsewhere",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "at step 4" in result.stdout and "force_resume" not in output, output[-3000:]
    assert [s["step"] for s in read_steps(used_dir)] == [1, 2, 3, 4, 5, 6]
    checkpoints = os.path.join(used_dir, "checkpoints")
    assert ckpt.complete_tags(checkpoints) == ["step00000006"]
    record = ckpt.read_run_record(checkpoints, "step00000006")
    assert record["config"]["data_dir"] == str(moved) and record["config"]["trainer"]["max_steps"] == 6
    assert record["architecture"]["hidden_size"] == 128 and record["data"]["shards"] >= 2


def test_checkpoint_without_a_run_config_resumes_with_a_warning(trainer_shards, used_dir):
    """Checkpoints written before run_config.json existed (only a hash in the client state)."""
    os.remove(os.path.join(used_dir, "checkpoints", "step00000004", ckpt.RUN_CONFIG_FILE))
    result, _ = rerun(trainer_shards, used_dir, "trainer.max_steps=5", "trainer.eval_every=0")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "the config could not be compared" in output and "at step 4" in result.stdout, output[-3000:]
    assert [s["step"] for s in read_steps(used_dir)] == [1, 2, 3, 4, 5]


def test_extended_run_has_the_schedule_of_a_fresh_run(trainer_shards, used_dir, tmp_path):
    """4 steps at max_steps=4 (the last lr 0.0), resumed with max_steps=8: steps 5..8 run at the
    rates a fresh 8-step run records (before: step 5 at 0.0, the old schedule's end)."""
    result, _ = rerun(trainer_shards, used_dir, "trainer.max_steps=8", "trainer.eval_every=0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    fresh_dir = tmp_path / "fresh"
    fresh, _ = rerun(trainer_shards, fresh_dir, "trainer.max_steps=8", "trainer.eval_every=0")
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-5000:]
    resumed, fresh = read_steps(used_dir), read_steps(fresh_dir)
    assert [s["step"] for s in resumed] == [s["step"] for s in fresh] == list(range(1, 9))
    cfg = OptimConfig(lr=3e-3, warmup_steps=2)  # SMOKE and cpu_smoke
    expected = [cfg.lr * lr_multiplier(step - 1, cfg, 8) for step in range(5, 9)]
    assert [s["lr"] for s in fresh[4:]] == expected
    assert [s["lr"] for s in resumed[4:]] == expected
    # Same batches as the fresh run, too (the loader position and RNG states were restored).
    assert [s["example_ids"] for s in resumed] == [s["example_ids"] for s in fresh]


# --- the comparison itself, in process ----------------------------------------------------------


def test_differences_skip_resumable_keys_and_name_the_rest():
    from training.config import config_differences, is_resumable_key

    saved = {
        "data_dir": "/a",
        "seed": 1,
        "optim": {"lr": 1e-4, "betas": [0.9, 0.999]},
        "trainer": {"max_steps": 10, "init_from": None, "log_every": 1},
        "logger": {"project": "p", "tags": []},
        "data": {"num_workers": 2, "micro_batch_size": 4},
    }
    current = {
        "data_dir": "/b",
        "seed": 1,
        "optim": {"lr": 2e-4, "betas": [0.9, 0.98]},
        "trainer": {"max_steps": 20, "init_from": "/phase1/hf", "log_every": 5, "new_option": True},
        "logger": {"project": "q", "tags": ["x"]},
        "data": {"num_workers": 0, "micro_batch_size": 8},
    }
    assert config_differences(saved, current) == [
        ("data.micro_batch_size", 4, 8),
        ("optim.betas", [0.9, 0.999], [0.9, 0.98]),
        ("optim.lr", 1e-4, 2e-4),
        ("trainer.init_from", None, "/phase1/hf"),
        ("trainer.new_option", "<absent>", True),
    ]
    assert is_resumable_key("logger.tags") and is_resumable_key("trainer.max_steps")
    assert not is_resumable_key("trainer.max_steps_extra") and not is_resumable_key("loggers.x")


def test_check_resumable_compares_shards_by_content_and_always_refuses_another_architecture():
    arch = {"vocab_size": 2000, "hidden_size": 128}
    data = {"fingerprint": "f" * 64, "vocab_sha256": "v" * 64, "shards": 2, "rows": 100}
    saved = {"version": 1, "config": {"data_dir": "/a", "optim": {"lr": 1.0}}, "architecture": arch, "data": data}
    moved = {**saved, "config": {"data_dir": "/b", "optim": {"lr": 1.0}}}
    assert ckpt.check_resumable(saved, moved, "ckpt", force=False) == []
    rebuilt = {**saved, "data": {**data, "fingerprint": "e" * 64, "rows": 90}}
    with pytest.raises(ckpt.ConfigError, match=r'data_dir: "/a" \(same path\): other shards .* 100 -> 90 rows'):
        ckpt.check_resumable(saved, rebuilt, "ckpt", force=False)
    assert len(ckpt.check_resumable(saved, rebuilt, "ckpt", force=True)) == 1
    wider = {**saved, "architecture": {**arch, "vocab_size": 3000}}
    with pytest.raises(ckpt.ConfigError, match="vocab_size 2000 -> 3000.*not even with trainer.force_resume"):
        ckpt.check_resumable(saved, wider, "ckpt", force=True)


def test_run_record_redacts_secrets():
    from training.model import BertConfig

    record = ckpt.run_record(
        {"logger": {"api_key": "k"}, "seed": 1}, BertConfig(vocab_size=10, **preset_fields("tiny")), {"fingerprint": ""}
    )
    assert record["config"] == {"logger": {"api_key": "<redacted>"}, "seed": 1}
    assert json.loads(json.dumps(record))["architecture"]["vocab_size"] == 10
