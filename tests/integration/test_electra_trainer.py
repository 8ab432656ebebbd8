"""objective=electra through the real trainer on CPU: `python -m training` (and torchrun) on shards
the data job built with instances=none, the mini model as discriminator.

What a run writes (every ELECTRA statistic in steps.jsonl, its eval/ twin in evals.jsonl), an exact
resume in a new process, the export of both networks loaded by transformers with our logits, init_from
refused before anything is built, and two ranks under ZeRO-3 (the shared embeddings partitioned).

Runtimes (2 cores): shards ~15 s, each run 30-60 s.
"""

import json
import math
import os

import pytest
import torch

from conftest import IN_MEMORY, run_job
from launch_helpers import export_command, read_steps, run, single_process_command, torchrun_command
from paths import CONF
from test_trainer import interrupt_at_step
from training import checkpoint as ckpt
from training.config import register_configs, to_train_config
from training.objectives import LOSS
from training.objectives.electra import DISCRIMINATOR_DIR, GENERATOR_DIR, STAT_NAMES

ELECTRA = (
    "experiment=cpu_smoke",  # mini model (H256, L4) as discriminator, its generator 1/4 as wide; ZeRO-2, fp32
    "objective=electra",
    "trainer.log_every=1",
    "trainer.eval_steps=2",
)
STEPS = 8
"""Steps of the straight run (and of the interrupted and resumed one)."""
STEP_KEYS = {"step", LOSS, "lr", "samples_consumed", "example_ids", *STAT_NAMES}
EVAL_KEYS = {"step", f"eval/{LOSS}", "eval/batches_per_rank", *(f"eval/{name}" for name in STAT_NAMES)}


def electra_run(shards, output_dir, *extra):
    return (*ELECTRA, f"data_dir={shards}", f"output_dir={output_dir}", *extra)


def straight_command(shards, output_dir):
    return single_process_command(
        *electra_run(
            shards, output_dir, f"trainer.max_steps={STEPS}", "trainer.eval_every=4", "trainer.checkpoint_every=4"
        )
    )


def compose(*overrides):
    """The trainer's config as `python -m training <overrides>` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=os.path.join(CONF, "train"), version_base="1.3"):
        return to_train_config(hydra_compose(config_name="train", overrides=list(overrides)))


@pytest.fixture(scope="module")
def electra_shards(tmp_path_factory):
    """No sentence pairs (instances=none), masked by the loader (dynamic), length 64, a 2000-id
    vocabulary, 5% held out: trainer_shards' settings where ELECTRA needs others."""
    out = tmp_path_factory.mktemp("electra_shards")
    run_job(
        out,
        "seed=3",
        "instances=none",
        "masking=dynamic",
        "tokenizer.vocab_size=2000",
        "instances.max_seq_length=64",
        "instances.eval_fraction=0.05",
        *IN_MEMORY,
    )
    return str(out)


@pytest.fixture(scope="module")
def straight_run(electra_shards, tmp_path_factory):
    """An uninterrupted run of STEPS steps: evaluations at 4 and 8, checkpoints at 4 and 8, the export."""
    out = tmp_path_factory.mktemp("electra_straight")
    result = run(straight_command(electra_shards, out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return str(out), result


def assert_run_logs_every_statistic(out, steps_taken, evaluated_at):
    steps = read_steps(out)
    assert [s["step"] for s in steps] == list(range(1, steps_taken + 1))
    for s in steps:
        assert set(s) == STEP_KEYS, s.keys()
        assert all(math.isfinite(s[name]) for name in (LOSS, *STAT_NAMES)), s
        assert 0.0 < s["replaced_fraction"] < 1.0 and 0.0 <= s["rtd_accuracy"] <= 1.0
    with open(os.path.join(out, "evals.jsonl")) as f:
        evals = [json.loads(line) for line in f if line.strip()]
    assert [e["step"] for e in evals] == evaluated_at
    for e in evals:
        assert set(e) == EVAL_KEYS, e.keys()
        assert all(math.isfinite(e[key]) for key in EVAL_KEYS - {"step"}), e


def test_steps_and_evals_carry_every_electra_statistic(straight_run):
    out, result = straight_run
    assert_run_logs_every_statistic(out, STEPS, [4, 8])
    assert result.stdout.count("eval mlm_loss=") == 2 and "rtd_accuracy=" in result.stdout
    record = ckpt.read_run_record(os.path.join(out, "checkpoints"), ckpt.tag_for(STEPS))
    assert record["config"]["objective"]["name"] == "electra"
    # training.report plots every statistic the run logged, named as ELECTRA names them
    from training.report import write_report

    report = write_report(out)
    assert {"loss", "accuracy", "learning_rate"} <= set(report.plots)
    with open(os.path.join(out, "steps.jsonl")) as f:
        steps = [json.loads(line) for line in f]
    rates, losses = report.plots["accuracy"].series, report.plots["loss"].series
    assert rates["step/train replaced tokens found"].y == [s["replaced_recall"] for s in steps]
    assert losses["step/train generator MLM loss"].y == [s["mlm_loss"] for s in steps]
    assert losses["step/eval detection loss"].x == [4, 8]


def test_a_resume_in_a_new_process_repeats_the_straight_run_exactly(straight_run, electra_shards, tmp_path):
    """SIGTERM after step 2: the run saves and exits 0; the same command resumes in a new process;
    every step's statistics (fp32 on CPU, the loader position and RNG states restored) and the final
    weights equal the straight run's to the last bit."""
    command = straight_command(electra_shards, tmp_path)
    code, log, stopped = interrupt_at_step(command, 2, tmp_path)
    assert code == 0 and 2 <= stopped < STEPS, log[-3000:]
    resumed = run(command)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert f"at step {stopped}" in resumed.stdout

    straight, steps = read_steps(straight_run[0]), read_steps(tmp_path)
    assert steps[stopped].pop("resumed_from") == stopped
    assert steps == straight  # every key of every step: statistics, lr, samples, example ids
    final = ckpt.tag_for(STEPS)
    from training.export import consolidated_state_dict_from_checkpoint

    ours = consolidated_state_dict_from_checkpoint(os.path.join(tmp_path, "checkpoints"), final)
    reference = consolidated_state_dict_from_checkpoint(os.path.join(straight_run[0], "checkpoints"), final)
    assert ours.keys() == reference.keys()
    assert [name for name in ours if not torch.equal(ours[name], reference[name])] == []


def test_the_export_loads_in_transformers_with_our_logits(straight_run, electra_shards):
    """output_dir/hf/discriminator is an ElectraForPreTraining, hf/generator an ElectraForMaskedLM,
    each with the shards' tokenizer; on an eval batch of the shards their logits are those of our
    networks holding the final checkpoint's weights."""
    import transformers

    from training.export import consolidated_state_dict_from_checkpoint
    from training.preflight import objective_for, open_data

    out = straight_run[0]
    cfg = compose(*electra_run(electra_shards, out))
    model_cfg, data = open_data(cfg)
    ours = objective_for(cfg, data).build(model_cfg, unpad=False)
    ours.load_state_dict(consolidated_state_dict_from_checkpoint(os.path.join(out, "checkpoints"), ckpt.tag_for(STEPS)))
    ours.eval()
    batch = next(iter(data.eval_loader(0, 1)))
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    real = batch["attention_mask"].bool()  # (B, T)
    assert not real.all(), "the batch should hold padding, so the export's masking is compared too"

    discriminator = transformers.ElectraForPreTraining.from_pretrained(os.path.join(out, "hf", DISCRIMINATOR_DIR))
    generator = transformers.ElectraForMaskedLM.from_pretrained(os.path.join(out, "hf", GENERATOR_DIR))
    with torch.no_grad():
        theirs_rtd = discriminator.eval()(**inputs).logits  # (B, T)
        theirs_mlm = generator.eval()(**inputs).logits  # (B, T, V)
        ours_rtd = ours.discriminator(**inputs)  # (B, T)
        ours_mlm = ours.generator(**inputs)  # (B, T, V)
    assert (theirs_rtd - ours_rtd)[real].abs().max().item() <= 1e-5
    assert (theirs_mlm - ours_mlm)[real].abs().max().item() <= 1e-5
    assert ours_mlm[real].std().item() > 0.1  # trained logits, not a constant both sides agree on
    for network in (DISCRIMINATOR_DIR, GENERATOR_DIR):
        tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(out, "hf", network))
        assert len(tokenizer) == model_cfg.vocab_size == 2000


def test_the_export_command_writes_both_networks_as_the_run_did(straight_run, tmp_path):
    """python -m training.export on the final checkpoint: discriminator/ and generator/, file for file
    the run's own output_dir/hf."""
    out, _ = straight_run
    result = run(export_command(out, "--out", str(tmp_path / "again")))
    assert result.returncode == 0, result.stderr[-3000:]
    for network in (DISCRIMINATOR_DIR, GENERATOR_DIR):
        ours, theirs = tmp_path / "again" / network, os.path.join(out, "hf", network)
        assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
        for name in os.listdir(ours):
            assert (ours / name).read_bytes() == open(os.path.join(theirs, name), "rb").read(), name


def test_init_from_is_refused_before_anything_is_built(straight_run, electra_shards, tmp_path):
    init_from = os.path.join(straight_run[0], "hf", DISCRIMINATOR_DIR)
    result = run(single_process_command(*electra_run(electra_shards, tmp_path, f"trainer.init_from={init_from}")))
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "init_from loads a BERT or ModernBERT masked-LM export" in result.stderr
    assert "trainer.init_from=null" in result.stderr
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_two_processes_under_zero3_train_and_export_both_networks(electra_shards, tmp_path):
    """2 ranks on gloo, ZeRO-3: the parameters, the embedding module the two networks share among
    them, are partitioned; the export merges the partitions into both directories."""
    import transformers
    from safetensors.torch import load_file

    from training.export import consolidated_state_dict_from_checkpoint

    result = run(
        torchrun_command(
            2,
            *electra_run(electra_shards, tmp_path, "deepspeed=zero3", "trainer.max_steps=4", "trainer.eval_every=2"),
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert_run_logs_every_statistic(str(tmp_path), 4, [2, 4])
    for s in read_steps(tmp_path):  # both ranks' micro batches, disjoint
        assert len(s["example_ids"]) == 8 and len(set(s["example_ids"])) == 8
    merged = consolidated_state_dict_from_checkpoint(os.path.join(tmp_path, "checkpoints"), ckpt.tag_for(4))
    exported = {}
    for network, cls in ((DISCRIMINATOR_DIR, "ElectraForPreTraining"), (GENERATOR_DIR, "ElectraForMaskedLM")):
        where = os.path.join(tmp_path, "hf", network)
        _, info = getattr(transformers, cls).from_pretrained(where, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        exported[network] = load_file(os.path.join(where, "model.safetensors"))
        assert all(torch.equal(merged[f"{network}.{name}"], tensor) for name, tensor in exported[network].items())
    word_table = "electra.embeddings.word_embeddings.weight"  # one table, partitioned once, in both exports
    assert torch.equal(exported[DISCRIMINATOR_DIR][word_table], exported[GENERATOR_DIR][word_table])
