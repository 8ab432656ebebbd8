"""The trainer end to end on CPU: real shards from the real Wikipedia sample, the tiny model, runs
as users start them (``python -m training`` alone or under ``torchrun``, gloo), one at a time.

Runtimes here (2 cores): shards ~20 s, each run 15-40 s; the first run ever also compiles
DeepSpeed's CPU ops (~2 min, cached in ~/.cache/torch_extensions).
"""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import IN_MEMORY, run_job
from launch_helpers import (
    REPO,
    export_command,
    fault_injecting_command,
    read_steps,
    run,
    single_process_command,
    torchrun_command,
    trainer_env,
)
from training import checkpoint as ckpt
from training.models import preset_fields

# Tiny model, accumulation 2 (global 8 = micro 4 x 2 x 1 rank), a learning rate high enough for a
# clear fall within a few dozen steps, no Hugging Face export (the export has its own tests).
SMOKE = ("experiment=cpu_smoke", "model=tiny", "optim.lr=3e-3", "trainer.export_hf=false", "trainer.eval_steps=2")

STEPS = 30
"""Steps of the single-process reference run (also the uninterrupted run of the resume test)."""


def mean_loss(steps, which):
    return float(np.mean([s["loss"] for s in steps[which]]))


def assert_loss_falls(steps, window=5, by=0.3):
    first, last = mean_loss(steps, slice(0, window)), mean_loss(steps, slice(-window, None))
    assert last < first - by, f"loss did not fall: first {window} steps {first:.4f}, last {window} {last:.4f}"


def overrides(shards, output_dir, *extra):
    return (*SMOKE, f"data_dir={shards}", f"output_dir={output_dir}", *extra)


@pytest.fixture(scope="module")
def reference_run(trainer_shards, tmp_path_factory):
    """An uninterrupted single-process run (no launcher) of STEPS steps."""
    out = tmp_path_factory.mktemp("reference")
    result = run(
        single_process_command(
            *overrides(
                trainer_shards,
                out,
                f"trainer.max_steps={STEPS}",
                "trainer.checkpoint_every=10",
                "trainer.eval_every=10",
            )
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out, result


def test_single_process_loss_falls_and_checkpoints(reference_run):
    out, result = reference_run
    steps = read_steps(out)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert all(len(s["example_ids"]) == 8 for s in steps)
    ids = [i for s in steps for i in s["example_ids"]]
    assert len(set(ids)) == len(ids), "an example was trained on twice within the first epoch"
    assert_loss_falls(steps)
    # progress and evaluation on stdout; the last keep_last_k=2 checkpoints kept, both complete
    assert f"step {STEPS}/{STEPS}" in result.stdout
    assert result.stdout.count("eval mlm_loss=") == 3  # steps 10, 20 and the end
    assert ckpt.complete_tags(os.path.join(out, "checkpoints")) == ["step00000020", "step00000030"]
    # (DeepSpeed also drops its own conversion scripts there: zero_to_fp32.py, and zero_to_torch.py from 0.19.8)
    kept = sorted(n for n in os.listdir(os.path.join(out, "checkpoints")) if not n.endswith(".py"))
    assert kept == ["latest", "step00000020", "step00000030"]


def test_the_export_command_writes_any_kept_checkpoint(reference_run, trainer_shards, tmp_path):
    """python -m training.export: the newest complete checkpoint by default, or --tag; its fp32
    weights as transformers' BertForPreTraining with the shards' tokenizer. A pruned tag is one line."""
    import transformers

    from training.export import consolidated_state_dict_from_checkpoint

    out, _ = reference_run
    checkpoints = os.path.join(out, "checkpoints")
    for tag, args in (("step00000030", ()), ("step00000020", ("--tag", "step00000020"))):
        result = run(export_command(out, *args, "--out", str(tmp_path / tag)))
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.splitlines()[-1] == str(tmp_path / tag)
        model = transformers.BertForPreTraining.from_pretrained(tmp_path / tag)
        saved = consolidated_state_dict_from_checkpoint(checkpoints, tag)
        mine = model.state_dict()
        assert all(torch.equal(mine[name], saved[name]) for name in saved)
        assert (tmp_path / tag / "vocab.txt").read_text() == open(os.path.join(trainer_shards, "vocab.txt")).read()
        assert len(transformers.AutoTokenizer.from_pretrained(tmp_path / tag)) == model.config.vocab_size
    last = transformers.BertForPreTraining.from_pretrained(tmp_path / "step00000030").state_dict()
    earlier = transformers.BertForPreTraining.from_pretrained(tmp_path / "step00000020").state_dict()
    assert not torch.equal(last["bert.pooler.dense.weight"], earlier["bert.pooler.dense.weight"])

    pruned = run(export_command(out, "--tag", "step00000010"))
    assert pruned.returncode == 2 and pruned.stdout == ""
    assert pruned.stderr.strip().splitlines()[-1] == (
        f"error: no complete checkpoint 'step00000010' in {checkpoints}; complete ones: step00000020, step00000030"
    )
    nothing = run(export_command(tmp_path / "nowhere"))
    assert nothing.returncode == 2 and "holds no complete checkpoint" in nothing.stderr


TWO_PROCESS_STEPS = 20


def two_process_command(shards, output_dir, stage):
    """torchrun, 2 ranks on gloo: global 8 = micro 4 x accumulation 1 x 2 ranks."""
    return torchrun_command(
        2,
        *overrides(
            shards,
            output_dir,
            f"deepspeed=zero{stage}",
            "deepspeed.precision=fp32",
            f"trainer.max_steps={TWO_PROCESS_STEPS}",
            "trainer.checkpoint_every=10",
            "trainer.eval_every=0",
            f"trainer.export_hf={str(stage == 3).lower()}",
        ),
    )


@pytest.fixture(scope="module")
def two_process_runs(trainer_shards, tmp_path_factory):
    """stage -> output_dir of an uninterrupted 2-rank run (made on first use)."""
    runs = {}

    def get(stage):
        if stage not in runs:
            out = tmp_path_factory.mktemp(f"zero{stage}")
            result = run(two_process_command(trainer_shards, out, stage))
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
            assert not deepspeed_start_up_lines(result.stdout + result.stderr)  # none from either rank
            runs[stage] = out
        return runs[stage]

    return get


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_processes_loss_falls_under_zero(two_process_runs, stage):
    out = two_process_runs(stage)
    steps = read_steps(out)
    assert len(steps) == TWO_PROCESS_STEPS
    for s in steps:  # both ranks' micro batches, disjoint
        assert len(s["example_ids"]) == 8 and len(set(s["example_ids"])) == 8
    assert_loss_falls(steps, window=4, by=0.2)
    tag_dir = os.path.join(out, "checkpoints", ckpt.tag_for(TWO_PROCESS_STEPS))
    assert os.path.exists(os.path.join(tag_dir, "complete"))
    assert {f"rng_state_rank0000{r}.pt" for r in (0, 1)} <= set(os.listdir(tag_dir))
    if stage == 3:  # the export merges the final checkpoint's partitions into the whole model
        from safetensors.torch import load_file

        from training.model import BertConfig, BertForPreTraining

        config = json.load(open(os.path.join(out, "hf", "config.json")))
        assert config["vocab_size"] == 2000 and config["hidden_size"] == 128
        model = BertForPreTraining(
            BertConfig(
                vocab_size=2000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512
            )
        )
        model.load_state_dict(load_file(os.path.join(out, "hf", "model.safetensors")), strict=True)


def interrupt_at_step(command, k, output_dir):
    """Start ``command``, send SIGTERM to it once it prints step k, wait for it; returns
    (exit code, output, the step the trainer stopped at)."""
    proc = subprocess.Popen(
        command, cwd=REPO, env=trainer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(f"step {k}/"):
                proc.send_signal(signal.SIGTERM)
                break
        lines += proc.stdout.readlines()
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = [int(line.split()[3]) for line in lines if line.startswith("stopping at step")]
    assert stopped, "".join(lines)[-5000:]
    assert ckpt.latest_complete(os.path.join(output_dir, "checkpoints")) == ckpt.tag_for(stopped[0])
    assert len(read_steps(output_dir)) == stopped[0]
    return code, "".join(lines), stopped[0]


def assert_same_steps(resumed, reference):
    """Same example ids, samples and learning rates at every step, and the same losses to the
    last bit (fp32 on CPU, same batches, RNG states restored: exact equality is the tolerance)."""
    assert [s["step"] for s in resumed] == [s["step"] for s in reference]
    assert [s["example_ids"] for s in resumed] == [s["example_ids"] for s in reference]
    assert [s["samples_consumed"] for s in resumed] == [s["samples_consumed"] for s in reference]
    for a, b in zip(resumed, reference):
        assert (a["loss"], a["mlm_loss"], a.get("nsp_loss"), a["lr"]) == (
            b["loss"],
            b["mlm_loss"],
            b.get("nsp_loss"),
            b["lr"],
        ), (a["step"], a, b)


def test_sigterm_then_resume_matches_uninterrupted_run(reference_run, trainer_shards, tmp_path):
    """No launcher, accumulation 2. SIGTERM at step k: the run finishes its step, saves and exits
    0; the same command resumes; every step equals the uninterrupted run's (exactly)."""
    command = single_process_command(
        *overrides(
            trainer_shards,
            tmp_path,
            f"trainer.max_steps={STEPS}",
            "trainer.checkpoint_every=10",
            "trainer.eval_every=10",
        )
    )
    code, log, stopped = interrupt_at_step(command, 7, tmp_path)
    assert code == 0 and 7 <= stopped < STEPS, log[-3000:]

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert f"at step {stopped}" in resumed.stdout
    steps = read_steps(tmp_path)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert_same_steps(steps, read_steps(reference_run[0]))


def test_sigterm_to_torchrun_then_resume_matches_uninterrupted_run(two_process_runs, trainer_shards, tmp_path):
    """2 ranks, ZeRO-2: torchrun forwards SIGTERM to both workers, which agree on the step, save
    and exit 0 (torchrun itself then exits non-zero, re-raising the signal). Resuming under
    torchrun reproduces the uninterrupted 2-rank run exactly."""
    command = two_process_command(trainer_shards, tmp_path, 2)
    _, log, stopped = interrupt_at_step(command, 3, tmp_path)
    assert 3 <= stopped < TWO_PROCESS_STEPS, log[-3000:]
    assert os.path.exists(os.path.join(tmp_path, "checkpoints", ckpt.tag_for(stopped), "rng_state_rank00001.pt"))

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert_same_steps(read_steps(tmp_path), read_steps(two_process_runs(2)))


def test_manifest_mismatch_fails_before_training(trainer_shards, tmp_path):
    result = run(single_process_command(*overrides(trainer_shards, tmp_path, "model.max_position_embeddings=32")))
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "max_seq_length=64" in message and "max_position_embeddings=32" in message, message[-3000:]
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
    assert not os.path.exists(os.path.join(tmp_path, "steps.jsonl"))


def test_data_dir_that_does_not_exist_says_so(tmp_path):
    """Before: "no manifest.json in ...: not a finished pipeline output", as if the job had not finished."""
    missing = tmp_path / "no_such_shards"
    result = run(single_process_command(*overrides(missing, tmp_path / "out")))
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"data_dir={missing} as training data: {missing} does not exist" in result.stderr, result.stderr[-3000:]
    assert "manifest" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU accelerator's answer; GPUs run fp16")
def test_fp16_on_cpu_runs_where_the_cpu_has_it_and_fails_clearly_where_not(trainer_shards, tmp_path):
    """DeepSpeed's CPU accelerator has fp16 only on CPUs whose oneDNN supports it (AVX512-FP16/AMX):
    there the run trains with loss scaling; elsewhere it stops at once and names the precisions it has."""
    from deepspeed.accelerator import get_accelerator

    result = run(single_process_command(*overrides(trainer_shards, tmp_path, "deepspeed.precision=fp16")))
    if get_accelerator().is_fp16_supported():
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        steps = read_steps(tmp_path)
        assert steps and all(np.isfinite(s["loss"]) for s in steps)
        return
    assert result.returncode == 2
    assert "deepspeed.precision=fp16 is not supported" in result.stderr and "bf16" in result.stderr, result.stderr[
        -2000:
    ]
    assert "Traceback" not in result.stderr


def test_nonfinite_losses_skip_their_steps_then_stop(trainer_shards, tmp_path):
    """2 micro batches a step. Forward call 3 returns NaN: the optimizer skips that step (neither of
    its micro batches is applied) and the step number is taken again; a NaN in each of the next
    three windows (calls 9, 12 -- the second micro batch of its window -- and 13) stops the run
    (trainer.max_nonfinite_in_a_row=3) with a clear error; no checkpoint after the divergence."""
    command = fault_injecting_command(
        *overrides(
            trainer_shards, tmp_path, "trainer.max_steps=10", "trainer.checkpoint_every=2", "trainer.eval_every=0"
        )
    )
    env = {**trainer_env(), "INJECT_NAN_AT_CALLS": "3,9,12,13"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "3 non-finite steps in a row" in result.stdout + result.stderr, result.stderr[-3000:]
    assert "step skipped" in result.stdout and "(1 in a row)" in result.stdout
    steps = read_steps(tmp_path)
    # calls 1-2 -> step 1; 3-4 skipped; 5-6 -> step 2; 7-8 -> step 3; 9-10, 11-12, 13-14 skipped -> stop
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all(np.isfinite(s["loss"]) for s in steps)
    assert steps[1]["samples_consumed"] - steps[0]["samples_consumed"] == 16  # 8 skipped + 8 trained
    assert ckpt.complete_tags(os.path.join(tmp_path, "checkpoints")) == ["step00000002"]


def test_a_skipped_step_applies_nothing_and_keeps_the_schedule(trainer_shards, tmp_path):
    """The weights after a skipped step are those before it, and the run's learning rates are those
    of a run without the fault: the skip moved neither the weights nor the schedule."""
    clean_dir, faulty_dir = tmp_path / "clean", tmp_path / "faulty"
    common = ("trainer.max_steps=3", "trainer.checkpoint_every=1", "trainer.eval_every=0", "data.shuffle=false")
    clean = run(single_process_command(*overrides(trainer_shards, clean_dir, *common)))
    assert clean.returncode == 0, clean.stderr[-3000:]
    env = {**trainer_env(), "INJECT_NAN_AT_CALLS": "3"}
    command = fault_injecting_command(*overrides(trainer_shards, faulty_dir, *common))
    faulty = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert faulty.returncode == 0, faulty.stderr[-3000:]
    clean_steps, faulty_steps = read_steps(clean_dir), read_steps(faulty_dir)
    assert [s["lr"] for s in faulty_steps] == [s["lr"] for s in clean_steps]
    # Step 1 is the same in both runs; the faulty run's step 2 trained on the next window's batches.
    assert faulty_steps[0]["loss"] == clean_steps[0]["loss"]
    assert faulty_steps[1]["samples_consumed"] == clean_steps[1]["samples_consumed"] + 8


def test_deterministic_kernels_train_the_same_steps(reference_run, trainer_shards, tmp_path):
    """trainer.deterministic=true (torch.use_deterministic_algorithms before CUDA would start): every
    kernel the step uses has a deterministic form (torch would stop naming one that has not), and on
    CPU, deterministic already, the steps equal the reference run's."""
    command = single_process_command(
        *overrides(
            trainer_shards,
            tmp_path,
            "trainer.deterministic=true",
            "trainer.max_steps=3",
            "trainer.checkpoint_every=10",
            "trainer.eval_every=10",
        )
    )
    result = run(command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    reference = read_steps(reference_run[0])[:3]
    assert [s["loss"] for s in read_steps(tmp_path)] == [s["loss"] for s in reference]


def test_nonfinite_loss_on_one_rank_is_skipped_by_all_under_zero3(trainer_shards, tmp_path):
    """Only rank 1 sees NaN (its forward calls 3 and 4, one micro batch a step): both ranks skip
    those two steps (the gradients are reduced before the optimizer's check), rank 0 reports it,
    the run finishes."""
    command = fault_injecting_command(
        *overrides(
            trainer_shards,
            tmp_path,
            "deepspeed=zero3",
            "deepspeed.precision=fp32",
            "trainer.max_steps=5",
            "trainer.eval_every=0",
        ),
        nproc=2,
    )
    env = {**trainer_env(), "INJECT_NAN_AT_CALLS": "3,4", "INJECT_NAN_RANK": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "step skipped" in result.stdout and "(2 in a row)" in result.stdout
    steps = read_steps(tmp_path)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    assert [s["samples_consumed"] for s in steps] == [8, 16, 40, 48, 56]  # 2 x 8 skipped before step 3


def test_multirun_sweep_trains_each_job_in_its_own_directory(trainer_shards, tmp_path):
    """`-m optim.lr=a,b` runs both jobs in one process (one process group for both), each in
    output_dir/<job number> with its own steps and checkpoints."""
    result = run(
        single_process_command(
            "-m",
            *overrides(
                trainer_shards,
                tmp_path,
                "trainer.max_steps=3",
                "trainer.eval_every=0",
                "optim.warmup_steps=0",
                "optim.lr=1e-3,3e-3",
            ),
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    jobs = [read_steps(tmp_path / str(job)) for job in (0, 1)]
    for steps, peak in zip(jobs, (1e-3, 3e-3)):  # linear decay from the peak over 3 steps
        assert [s["lr"] for s in steps] == pytest.approx([peak, peak * 2 / 3, peak / 3], rel=1e-12)
    assert jobs[0][0]["example_ids"] == jobs[1][0]["example_ids"]
    for job in (0, 1):
        assert ckpt.latest_complete(os.path.join(tmp_path, str(job), "checkpoints")) == "step00000003"
    assert not os.path.exists(os.path.join(tmp_path, "steps.jsonl"))


# --- checkpoint helpers, in process -----------------------------------------------------------


def test_phase2_starts_from_phase1_export_on_other_shards(trainer_shards, tmp_path):
    """The two-phase recipe: phase 1 (length 64) exports hf/; phase 2 (trainer=phase2, length 128,
    shards of another seed) starts from those weights with a fresh optimizer, schedule and step
    count. With a learning rate too small to move an fp32 weight, phase 2's export must equal
    phase 1's bit for bit, which shows every tensor came from init_from."""
    from safetensors.torch import load_file

    phase1 = tmp_path / "phase1"
    result = run(
        single_process_command(
            *overrides(trainer_shards, phase1, "trainer.max_steps=3", "trainer.export_hf=true", "trainer.eval_every=0")
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    shards128 = tmp_path / "shards128"
    run_job(
        shards128,
        "seed=4",
        "tokenizer.vocab_size=2000",
        "instances.max_seq_length=128",
        *IN_MEMORY,
        "tokenizer=vocab_file",
        f"tokenizer.vocab_file={os.path.join(trainer_shards, 'vocab.txt')}",
    )
    phase2 = tmp_path / "phase2"
    result = run(
        single_process_command(
            *overrides(
                shards128,
                phase2,
                "trainer=phase2",
                f"trainer.init_from={phase1 / 'hf'}",
                "trainer.max_steps=2",
                "trainer.global_batch_size=8",
                "trainer.log_every=1",
                "trainer.eval_every=0",
                "trainer.export_hf=true",
                "data.max_seq_length=128",
                "optim.lr=1e-30",
                "optim.warmup_steps=0",
            )
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    phase2_steps = read_steps(phase2)
    assert [s["step"] for s in phase2_steps] == [1, 2]  # a fresh step count, not phase 1's
    assert "example_ids" not in phase2_steps[0]  # the phase presets leave the id record off
    before, after = load_file(phase1 / "hf" / "model.safetensors"), load_file(phase2 / "hf" / "model.safetensors")
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    # ...and phase 1 really trained them (they are not a fresh initialisation).
    fresh = run(
        single_process_command(
            *overrides(
                trainer_shards,
                tmp_path / "fresh",
                "trainer.max_steps=1",
                "trainer.export_hf=true",
                "trainer.eval_every=0",
                "optim.lr=1e-30",
                "optim.warmup_steps=0",
            )
        )
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    init = load_file(tmp_path / "fresh" / "hf" / "model.safetensors")
    assert not torch.equal(
        init["bert.encoder.layer.0.output.dense.weight"], before["bert.encoder.layer.0.output.dense.weight"]
    )


def test_init_from_that_is_missing_or_of_another_model_is_one_message(trainer_shards, tmp_path):
    from safetensors.torch import save_file

    from training.export import hf_weights
    from training.model import BertConfig, BertForPreTraining

    missing = tmp_path / "no_such_export"
    result = run(single_process_command(*overrides(trainer_shards, tmp_path / "a", f"trainer.init_from={missing}")))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"error: trainer.init_from={missing} does not exist" in result.stderr
    # Weights of a wider model (hidden 64, not tiny's 128) on the same vocabulary.
    other = BertConfig(
        vocab_size=2000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=256,
        pad_token_id=0,
        with_nsp_head=True,
    )
    weights = tmp_path / "other.safetensors"
    save_file(hf_weights(BertForPreTraining(other).state_dict(), other), str(weights))
    result = run(single_process_command(*overrides(trainer_shards, tmp_path / "b", f"trainer.init_from={weights}")))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"error: trainer.init_from={weights} does not fit this model" in result.stderr
    assert "size mismatch" not in result.stderr


def test_unpadded_encoder_trains(trainer_shards, tmp_path):
    """trainer.unpad=true (dense layers on real tokens only) through the real trainer: loss falls."""
    result = run(
        single_process_command(
            *overrides(
                trainer_shards, tmp_path, "trainer.unpad=true", f"trainer.max_steps={STEPS}", "trainer.eval_every=0"
            )
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert_loss_falls(read_steps(tmp_path))


def test_compiled_model_trains(trainer_shards, reference_run, tmp_path):
    """trainer.compile=true with batches of one shape (data.pad_to_max_length): the forward is
    compiled before DeepSpeed wraps the model (inductor's C++ backend on CPU: its cache fills), with
    fullgraph, and recompiles only for what is not a shape -- a batch without padding (no mask: the
    flash-eligible graph) and evaluation (no grad) -- over batches of varied lengths and mask counts;
    it trains on the same data order as the eager run."""
    env = {**trainer_env(), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "TORCH_LOGS": "recompiles"}
    command = single_process_command(
        *overrides(
            trainer_shards,
            tmp_path / "run",
            "trainer.compile=true",
            "data.pad_to_max_length=true",
            "trainer.max_steps=5",
            "trainer.eval_every=0",
        )
    )
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert any(files for _, _, files in os.walk(tmp_path / "inductor")), "nothing was compiled"
    reasons = [line.split("- ", 1)[1] for line in result.stderr.splitlines() if re.search(r"\] +- \d+/\d+: ", line)]
    allowed = ("attention_mask is None", "GLOBAL_STATE changed: grad_mode")
    assert reasons and all(r.split(": ", 1)[1].startswith(allowed) for r in reasons), reasons
    assert sum("Recompiling function forward" in line for line in result.stderr.splitlines()) <= 2
    steps, eager = read_steps(tmp_path / "run"), read_steps(reference_run[0])[:5]
    assert [s["samples_consumed"] for s in steps] == [s["samples_consumed"] for s in eager]
    assert all(np.isfinite(s["loss"]) for s in steps) and steps[-1]["loss"] < steps[0]["loss"]
    # Dropout draws differ between compiled and eager code; the losses stay close.
    assert abs(steps[0]["loss"] - eager[0]["loss"]) < 0.2


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import random

    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    ckpt.save_rng_state(str(tmp_path), "step00000001", rank=3)
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    assert ckpt.load_rng_state(str(tmp_path), "step00000001", rank=3)
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]
    assert not ckpt.load_rng_state(str(tmp_path), "step00000001", rank=4)


def test_only_complete_checkpoints_are_resumed_and_last_k_kept(tmp_path):
    root = str(tmp_path)
    for step in (10, 20, 30, 40):
        os.makedirs(os.path.join(root, ckpt.tag_for(step)))
    for step in (10, 20, 30):
        ckpt.mark_complete(root, ckpt.tag_for(step), {"step": step})
    os.makedirs(os.path.join(root, "not_a_tag"))
    assert ckpt.latest_complete(root) == "step00000030"  # step 40 was never completed
    assert ckpt.prune(root, keep_last_k=2) == ["step00000010"]
    assert sorted(os.listdir(root)) == ["latest", "not_a_tag", "step00000020", "step00000030", "step00000040"]
    assert open(os.path.join(root, "latest")).read() == "step00000030"  # DeepSpeed's pointer: complete only
    assert ckpt.latest_complete(str(tmp_path / "missing")) is None


def test_dense_head_labels_give_the_sparse_head_loss(trainer_shards):
    """trainer.sparse_mlm_head=false: the dense labels built from a batch score the same tokens."""
    from training.config import DataConfig
    from training.data import RunExpectations, open_pretraining_data
    from training.model import BertConfig, BertForPreTraining
    from training.objectives.mlm import forward_inputs

    cfg = BertConfig(
        vocab_size=2000, **preset_fields("tiny"), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    data = open_pretraining_data(
        trainer_shards,
        DataConfig(num_workers=0, pin_memory=False, micro_batch_size=4),
        1,
        RunExpectations.of_model(cfg),
    )
    batch = next(iter(data.train_loader()))
    model = BertForPreTraining(cfg).eval()
    sparse = model(**forward_inputs(batch, torch.device("cpu"), sparse_head=True))
    dense = model(**forward_inputs(batch, torch.device("cpu"), sparse_head=False))
    assert int(dense.mlm_count) == int(sparse.mlm_count) > 0
    torch.testing.assert_close(dense.mlm_loss, sparse.mlm_loss, rtol=1e-5, atol=1e-6)


def test_launcher_local_rank_argument_goes_to_the_environment(monkeypatch):
    from training.__main__ import take_launcher_local_rank

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert take_launcher_local_rank(["--local_rank=1", "seed=3"]) == ["seed=3"]
    assert os.environ["LOCAL_RANK"] == "1"
    monkeypatch.delenv("LOCAL_RANK")
    assert take_launcher_local_rank(["seed=3", "--local-rank", "0"]) == ["seed=3"]
    assert os.environ["LOCAL_RANK"] == "0"


def test_deepspeed_launcher_two_processes(trainer_shards, tmp_path):
    """The `deepspeed` launcher (it appends --local_rank=N, which Hydra alone would reject)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    command = [
        launcher,
        "--num_gpus",
        "2",
        "--master_port",
        str(port),
        "--module",
        "training",
        *overrides(
            trainer_shards,
            tmp_path,
            "deepspeed=zero2",
            "deepspeed.precision=fp32",
            "trainer.max_steps=3",
            "trainer.eval_every=0",
            "trainer.export_hf=false",
        ),
    ]
    result = run(command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    steps = read_steps(tmp_path)
    assert [s["step"] for s in steps] == [1, 2, 3]


def test_wandb_offline_run_holds_the_training_metrics_and_a_resume_continues_it(trainer_shards, tmp_path):
    """A real training run logging to W&B offline, read back from its run file without network."""
    import glob

    from test_tracking import finished_run_records, offline_run

    def wandb_run(max_steps):
        result = run(
            single_process_command(
                *overrides(
                    trainer_shards,
                    tmp_path,
                    "logger=wandb_offline",
                    f"trainer.max_steps={max_steps}",
                    "trainer.log_every=2",
                    "trainer.eval_every=4",
                    "trainer.checkpoint_every=4",
                    "trainer.export_hf=false",
                )
            )
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        return sorted(glob.glob(os.path.join(str(tmp_path), "wandb", "offline-run-*", "run-*.wandb")))

    first = wandb_run(4)
    run_id, config, history, _ = offline_run(finished_run_records(first[0]))
    logged = {k for row in history for k in row}
    assert {
        "train/loss",
        "train/mlm_accuracy",
        "train/lr",
        "train/grad_norm",
        "perf/tokens_per_s",
        "eval/loss",
    } <= logged
    losses = [s["loss"] for s in read_steps(tmp_path)]  # each logged loss is its window's mean
    assert [row["train/loss"] for row in history if "train/loss" in row] == pytest.approx(
        [np.mean(losses[0:2]), np.mean(losses[2:4])], rel=1e-5
    )
    assert config["data_dir"] == trainer_shards
    files = wandb_run(6)  # resumes from the step-4 checkpoint: the same W&B run continues
    assert len(files) == 2 and all(f.endswith(f"run-{run_id}.wandb") for f in files)


# --- what a run says at start and on a resume --------------------------------------------------

DEEPSPEED_START_UP = ("Setting accelerator to CPU", "gcc ", "deepspeed_shm_comm_op built successfully")
"""DeepSpeed's output at start: its accelerator warning, the op builder's compiler probe, its shm op's build."""


def deepspeed_start_up_lines(console: str) -> list[str]:
    return [line for line in console.splitlines() if any(noise in line for noise in DEEPSPEED_START_UP)]


def without_eval_split(trainer_shards, out, statistics=None):
    """A copy of trainer_shards whose manifest lists no eval shard (as for a corpus too small to hold
    documents out), with ``statistics`` merged into the manifest's."""
    import shutil

    shutil.copytree(trainer_shards, out)
    path = os.path.join(out, "manifest.json")
    manifest = json.load(open(path))
    manifest["shards"] = (
        [s for s in manifest["shards"] if s["split"] != "eval"] if statistics is None else manifest["shards"]
    )
    manifest["statistics"].update(statistics or {})
    json.dump(manifest, open(path, "w"))
    return str(out)


@pytest.fixture(scope="module")
def run_without_eval_split(trainer_shards, tmp_path_factory):
    """3 steps with trainer.eval_every=2 on shards without an eval split, default console output."""
    shards = without_eval_split(trainer_shards, tmp_path_factory.mktemp("no_eval") / "shards")
    out = tmp_path_factory.mktemp("no_eval_run")
    result = run(single_process_command(*overrides(shards, out, "trainer.max_steps=3", "trainer.eval_every=2")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return shards, out, result


def test_a_run_without_eval_split_says_so_and_keeps_deepspeed_start_up_quiet(run_without_eval_split):
    shards, out, result = run_without_eval_split
    console = result.stdout + result.stderr
    assert f"trainer.eval_every=2 but {shards} has no 'eval' examples" in console, console[-3000:]
    assert "evaluates nothing and writes no evals.jsonl" in console
    assert not os.path.exists(os.path.join(out, "evals.jsonl"))
    assert deepspeed_start_up_lines(console) == []


def test_a_resume_with_more_steps_names_the_recomputed_schedule(run_without_eval_split, tmp_path):
    """3 steps, then resumed with max_steps 5 at debug level (hydra.verbose=true): one line with the old and
    the new rate; DeepSpeed's start-up output shows there."""
    import shutil

    shards, first, _ = run_without_eval_split
    out = tmp_path / "run"
    shutil.copytree(first, out)
    result = run(single_process_command(*overrides(shards, out, "trainer.max_steps=5", "hydra.verbose=true")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    steps = read_steps(out)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    expected = (
        "resuming at step 3 with max_steps 5 (was 3): the schedule is recomputed for 5 steps (as in a fresh run); "
        f"learning rate {steps[2]['lr']:.1e} at step 3 -> {steps[3]['lr']:.1e} at step 4 "
        "(the checkpoint's schedule would give 0.0e+00)"
    )
    assert expected in result.stdout, result.stdout[-3000:]
    assert steps[2]["lr"] != steps[3]["lr"]
    console = result.stdout + result.stderr
    for noise in DEEPSPEED_START_UP:
        assert noise in console, noise


def test_eval_labels_of_one_class_are_named_at_start(trainer_shards, tmp_path):
    """The manifest's per-split label counts (examples/<split>, sentence_pair_negatives/<split>) read when present."""
    from training.config import DataConfig
    from training.data import RunExpectations, open_pretraining_data
    from training.preflight import eval_split_warnings

    def warnings(statistics, name):
        shards = without_eval_split(trainer_shards, tmp_path / name, statistics)
        expect = RunExpectations(vocab_size=2000, max_position_embeddings=512, with_nsp_head=True)
        data = open_pretraining_data(shards, DataConfig(), 0, expect)
        return eval_split_warnings(data, eval_every=10)

    one_class = {"examples": {"eval": 2862, "train": 57291}, "sentence_pair_negatives": {"train": 27291}}
    (one_sided,) = warnings(one_class, "a")
    assert one_sided.startswith("every one of the 2,862 'eval' examples has NSP label 0")
    balanced = {"examples": {"eval": 2862}, "sentence_pair_negatives": {"eval": 1462}}
    assert warnings(balanced, "b") == []
    assert warnings({}, "c") == []  # shards from before the counts: nothing to say
