"""The ModernBERT-style encoder (model.architecture=modern) through the real trainer on CPU: instances=none
shards from the real Wikipedia sample, a tiny modern_small, DeepSpeed ZeRO-2 fp32, one process.

One run of STEPS steps (unpadded, evaluation, export) against the same run stopped at STEPS/2 and
resumed in a new process: identical steps.jsonl and final weights. The export loads with
AutoModelForMaskedLM as ModernBertForMaskedLM, its logits equal ours, fill-mask works; a padded run
starts from it with trainer.init_from; a BERT run refuses it and a modern run refuses a BERT export.
"""

import json
import os

import pytest
import torch

from conftest import IN_MEMORY, run_job
from launch_helpers import export_command, read_steps, run, single_process_command
from test_trainer import assert_same_steps, interrupt_at_step
from training import checkpoint as ckpt
from training.export import HF_SUBDIR, consolidated_state_dict_from_checkpoint

STEPS = 6
TINY_MODERN = (
    "model=modern_small",
    "model.hidden_size=64",
    "model.num_hidden_layers=3",  # layers 0 global, 1-2 local
    "model.num_attention_heads=2",
    "model.intermediate_size=96",
    "model.local_attention=16",  # windows narrower than the shards' 64 tokens: the local route masks
)
SMOKE = (
    "experiment=cpu_smoke",
    "optim.lr=3e-3",
    "optim.warmup_steps=0",
    "trainer.eval_steps=2",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=3",
)


@pytest.fixture(scope="module")
def modern_shards(tmp_path_factory) -> str:
    """No sentence pairs (the modern encoder has no sentence head), static masks, length 64, 2000 ids."""
    out = tmp_path_factory.mktemp("modern_shards")
    run_job(
        out,
        "seed=3",
        "instances=none",
        "tokenizer.vocab_size=2000",
        "instances.max_seq_length=64",
        "instances.eval_fraction=0.05",
        *IN_MEMORY,
    )
    return str(out)


def train(shards, output_dir, *extra, model=TINY_MODERN):
    return run(single_process_command(*SMOKE, *model, f"data_dir={shards}", f"output_dir={output_dir}", *extra))


def trained(shards, output_dir, *extra):
    result = train(shards, output_dir, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def straight_run(modern_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("modern_straight")
    result = trained(modern_shards, out, f"trainer.max_steps={STEPS}", "trainer.unpad=true")
    return out, result


def final_weights(output_dir, step=STEPS) -> dict:
    return consolidated_state_dict_from_checkpoint(
        os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR), ckpt.tag_for(step)
    )


def test_a_run_logs_evaluates_checkpoints_and_records_the_architecture(straight_run):
    out, result = straight_run
    steps = read_steps(out)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert all({"mlm_loss", "mlm_accuracy"} <= s.keys() and "nsp_loss" not in s for s in steps)
    assert result.stdout.count("eval mlm_loss=") == 2  # step 3 and the end
    record = ckpt.read_run_record(os.path.join(out, ckpt.CHECKPOINTS_SUBDIR), ckpt.tag_for(STEPS))
    assert record["architecture"]["architecture"] == "modern"
    assert record["architecture"]["local_attention"] == 16 and "type_vocab_size" not in record["architecture"]
    assert record["config"]["model"]["architecture"] == "modern"


def test_resume_is_exact(modern_shards, straight_run, tmp_path):
    """SIGTERM after step 2 (the run saves and exits 0), then the same command in a new process: every
    step (losses, lr, example ids) and the final weights equal the straight run's to the last bit. The
    same max_steps both times: a shorter first run would decay its learning rate on another schedule."""
    command = single_process_command(
        *SMOKE,
        *TINY_MODERN,
        f"data_dir={modern_shards}",
        f"output_dir={tmp_path}",
        f"trainer.max_steps={STEPS}",
        "trainer.unpad=true",
    )
    code, log, stopped = interrupt_at_step(command, 2, tmp_path)
    assert code == 0 and 2 <= stopped < STEPS, log[-3000:]
    resumed = run(command)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert f"at step {stopped}" in resumed.stdout
    assert_same_steps(read_steps(tmp_path), read_steps(straight_run[0]))
    ours, reference = final_weights(tmp_path), final_weights(straight_run[0])
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)


def test_the_export_is_transformers_modernbert_with_our_logits_and_fill_mask(straight_run):
    import transformers

    from training.models.modern import ModernBertForMaskedLM, ModernConfig

    out_dir = os.path.join(straight_run[0], HF_SUBDIR)
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(out_dir).eval()
    assert type(theirs) is transformers.ModernBertForMaskedLM
    with open(os.path.join(out_dir, "config.json")) as f:
        cfg = ModernConfig.from_hf_config_dict(json.load(f))
    assert (cfg.num_hidden_layers, cfg.local_attention, cfg.hidden_size) == (3, 16, 64)
    ours = ModernBertForMaskedLM(cfg).eval()
    ours.load_state_dict(final_weights(straight_run[0]))
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    batch = tokenizer(
        ["the history of the city began in the early years", "a short one"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ref = theirs(**batch).logits
        mine = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).mlm_logits
    real = batch["attention_mask"].bool()
    assert (mine - ref)[real].abs().max() < 1e-5
    fill = transformers.pipeline("fill-mask", model=out_dir, tokenizer=out_dir)
    predictions = fill(f"the history of the {tokenizer.mask_token} began")
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)


def test_the_export_command_writes_what_the_run_exported(straight_run, tmp_path):
    """python -m training.export on the final checkpoint: the run's own output_dir/hf, file for file."""
    out, _ = straight_run
    result = run(export_command(out, "--out", str(tmp_path / "again")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "again")) == sorted(os.listdir(os.path.join(out, "hf")))
    for name in os.listdir(tmp_path / "again"):
        assert (tmp_path / "again" / name).read_bytes() == open(os.path.join(out, "hf", name), "rb").read(), name


def test_init_from_reads_the_export_back_into_a_padded_run(modern_shards, straight_run, tmp_path):
    export = os.path.join(straight_run[0], HF_SUBDIR)
    trained(modern_shards, tmp_path, "trainer.max_steps=1", f"trainer.init_from={export}", "trainer.export_hf=false")
    record = ckpt.read_run_record(os.path.join(tmp_path, ckpt.CHECKPOINTS_SUBDIR), ckpt.tag_for(1))
    assert record["init_from"] == {"path": export, "weights_file": "model.safetensors", "fresh": [], "unused": []}


def test_the_export_loads_back_with_equal_weights(straight_run):
    from training.init_from import load_init_weights
    from training.models.modern import ModernBertForMaskedLM

    reference = final_weights(straight_run[0])
    export = os.path.join(straight_run[0], HF_SUBDIR)
    with open(os.path.join(export, "config.json")) as f:
        from training.models.modern import ModernConfig

        cfg = ModernConfig.from_hf_config_dict(json.load(f))
    torch.manual_seed(1)
    model = ModernBertForMaskedLM(cfg)
    load_init_weights(model, export)
    assert all(torch.equal(model.state_dict()[k], reference[k]) for k in reference)
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight  # tied again


def test_a_bert_run_refuses_a_modern_export_and_a_modern_run_a_bert_one(modern_shards, straight_run, tmp_path):
    from training.export import export_hf
    from training.model import BertConfig, BertForPreTraining

    modern_export = os.path.join(straight_run[0], HF_SUBDIR)
    result = train(
        modern_shards,
        tmp_path / "bert",
        "trainer.max_steps=1",
        f"trainer.init_from={modern_export}",
        model=("model=tiny",),
    )
    assert result.returncode != 0
    assert "is a 'modernbert' model" in result.stderr and "model.architecture=bert" in result.stderr, result.stderr[
        -3000:
    ]

    bert_cfg = BertConfig(vocab_size=2000, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=128, with_nsp_head=False)  # fmt: skip
    bert_export = export_hf(BertForPreTraining(bert_cfg).state_dict(), bert_cfg, modern_shards, str(tmp_path / "hf"))
    result = train(modern_shards, tmp_path / "modern", "trainer.max_steps=1", f"trainer.init_from={bert_export}")
    assert result.returncode != 0
    assert "is a 'bert' model" in result.stderr and "model.architecture=modern" in result.stderr, result.stderr[-3000:]
    assert not os.path.exists(tmp_path / "modern" / ckpt.CHECKPOINTS_SUBDIR)


def test_shards_with_sentence_pairs_are_refused_naming_instances_none(trainer_shards, tmp_path):
    result = train(trainer_shards, tmp_path, "trainer.max_steps=1")
    assert result.returncode != 0
    assert "instances=none" in result.stderr and "no sentence head" in result.stderr, result.stderr[-3000:]
