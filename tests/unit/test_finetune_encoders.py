"""Fine-tuning (training/finetune) on every encoder this project exports, loaded by transformers' Auto
classes: a tiny random ModernBERT (training/models/modern.py save_hf) and a tiny ELECTRA discriminator
(training/objectives/electra.py save_hf), built and saved by their own tests' helpers; its generator
refused with the directory to use instead. In process (``loop.run`` on a composed config), CPU, a few
seconds each.

The classification set is eight sentences labelled by the animal in them (cat or dog), its dev file
the same rows: a model that learns anything overfits it."""

from __future__ import annotations

import json
import os

import pytest
import torch

from paths import CONF, DATA
from test_electra import (
    data_dir,  # noqa: F401 (a fixture: the manifest and vocabulary save_hf reads)
    electra_model,
)
from test_modern_model import tiny_config, write_vocab
from training.config import ConfigError
from training.models.modern import ModernBertForMaskedLM
from training.models.modern import save_hf as save_modern
from training.objectives.electra import DISCRIMINATOR_DIR, GENERATOR_DIR
from training.objectives.electra import save_hf as save_electra

ROWS = [
    ("the cat sat on a mat", "cat"),
    ("a dog ran", "dog"),
    ("the cat ran", "cat"),
    ("the dog sat on the mat", "dog"),
    ("a cat on a mat", "cat"),
    ("dog ran on a mat", "dog"),
    ("cat sat", "cat"),
    ("a dog sat", "dog"),
]
"""Words both test vocabularies hold (test_modern_model.VOCAB, test_electra.VOCAB)."""
CLASSIFY = (
    "task=sst2",
    "task.labels=[cat,dog]",
    "task.max_seq_length=16",  # the ELECTRA test model's max_position_embeddings
    "train.batch_size=2",
    "train.epochs=10",  # 40 steps, at the high rate a tiny random model needs to move in so few
    "optim.lr=1e-2",
    "train.device=cpu",
)


@pytest.fixture
def modern_export(tmp_path) -> str:
    torch.manual_seed(0)
    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    return save_modern(ModernBertForMaskedLM(tiny_config()), str(tmp_path / "modern"), write_vocab(vocab_dir))


@pytest.fixture
def electra_export(tmp_path, data_dir) -> str:  # noqa: F811
    return save_electra(electra_model(embedding_size=16), str(tmp_path / "electra"), data_dir)


@pytest.fixture
def animals(tmp_path) -> str:
    out = tmp_path / "animals"
    out.mkdir()
    text = "sentence\tlabel\n" + "".join(f"{sentence}\t{label}\n" for sentence, label in ROWS)
    for name in ("train.tsv", "dev.tsv"):
        (out / name).write_text(text, encoding="utf-8")
    return str(out)


def finetune(*overrides: str) -> dict:
    """``python -m training.finetune <overrides>`` in process: compose, check, run; results.json's content."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from training.finetune.config import register_configs, to_finetune_config
    from training.finetune.loop import run

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=os.path.join(CONF, "finetune"), version_base="1.3"):
        composed = compose(config_name="finetune", overrides=list(overrides))
    return run(to_finetune_config(composed), OmegaConf.to_container(composed, resolve=True), overrides)


def check_overfits(results: dict) -> None:
    first, last = results["epochs"][0], results["epochs"][-1]
    assert last["train_loss"] < 0.5 * first["train_loss"], [e["train_loss"] for e in results["epochs"]]
    assert results["score"] == results["final"]["dev/accuracy"] == 1.0, results["epochs"]
    assert results["one_class"] == {}


def test_modernbert_export_fine_tunes_and_its_saved_model_predicts_the_rows(modern_export, animals, tmp_path, capsys):
    import transformers

    out = tmp_path / "out"
    results = finetune(
        *CLASSIFY, f"data_dir={animals}", f"model_dir={modern_export}", f"output_dir={out}", "save_model=true"
    )
    check_overfits(results)
    assert results["model_source"]["architectures"] == ["ModernBertForMaskedLM"]
    with open(out / "results.json", encoding="utf-8") as f:
        assert json.load(f)["final"] == results["final"]
    # the MLM head's dense-GELU-norm block is ModernBERT's classification head's too: only the
    # classifier starts fresh
    assert (
        "new head: classifier.bias, classifier.weight start fresh; head.* from model_dir's pre-training head"
        in capsys.readouterr().out
    )

    model = transformers.AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    assert type(model) is transformers.ModernBertForSequenceClassification
    encoded = tokenizer([s for s, _ in ROWS], padding=True, return_tensors="pt")
    assert "token_type_ids" not in encoded
    with torch.no_grad():
        predicted = model(**encoded).logits.argmax(-1).tolist()
    assert [model.config.id2label[i] for i in predicted] == [label for _, label in ROWS]


def test_electra_discriminator_fine_tunes_and_its_generator_is_refused(electra_export, animals, tmp_path, capsys):
    discriminator = os.path.join(electra_export, DISCRIMINATOR_DIR)
    results = finetune(*CLASSIFY, f"data_dir={animals}", f"model_dir={discriminator}", f"output_dir={tmp_path / 'd'}")
    check_overfits(results)
    assert results["model_source"]["architectures"] == ["ElectraForPreTraining"]
    assert (
        "new head: classifier.dense.bias, classifier.dense.weight, classifier.out_proj.bias, "
        "classifier.out_proj.weight start fresh; pre-training heads discriminator_predictions.* dropped"
    ) in capsys.readouterr().out

    generator = os.path.join(electra_export, GENERATOR_DIR)
    with pytest.raises(ConfigError) as e:
        finetune(*CLASSIFY, f"data_dir={animals}", f"model_dir={generator}", f"output_dir={tmp_path / 'g'}")
    assert str(e.value) == (
        f"model_dir={generator} is an ELECTRA generator (config.json architectures ElectraForMaskedLM); "
        f"the encoder ELECTRA pre-trains is the discriminator: model_dir={discriminator}"
    )
    assert not os.path.exists(tmp_path / "g")  # refused before anything is read or written


TAGGED = [
    ("the cat sat on a mat", "O B-PER O O O B-LOC"),
    ("a dog ran", "O B-PER O"),
    ("the dog sat on the rug", "O B-PER O O O B-LOC"),
    ("cat ran on a rug", "B-PER O O O B-LOC"),
]
"""Animals are PER, things to sit on LOC: words of test_modern_model.VOCAB."""


def test_modernbert_token_classification_and_question_answering_run(modern_export, tmp_path):
    conll = tmp_path / "conll"
    conll.mkdir()
    text = "\n".join("".join(f"{w} X X {t}\n" for w, t in zip(s.split(), tags.split())) for s, tags in TAGGED)
    for name in ("train.txt", "valid.txt"):
        (conll / name).write_text(text, encoding="utf-8")
    tagged = finetune(
        "task=conll2003",
        "~task.dev_files.test",
        f"data_dir={conll}",
        f"model_dir={modern_export}",
        f"output_dir={tmp_path / 'ner'}",
        "task.max_seq_length=16",
        "train.batch_size=2",
        "train.epochs=10",
        "optim.lr=1e-2",
        "train.device=cpu",
    )
    assert tagged["score"] == tagged["final"]["dev/entity_f1"] == 1.0, tagged["epochs"]
    assert tagged["epochs"][0]["dev/entity_f1"] < 1.0

    squad = finetune(
        "task=squad_v1",
        f"data_dir={DATA}/finetune/squad",
        f"model_dir={modern_export}",
        f"output_dir={tmp_path / 'qa'}",
        "task.max_seq_length=32",
        "task.doc_stride=12",
        "task.max_query_length=12",
        "train.batch_size=4",
        "train.epochs=1",
        "train.device=cpu",
    )
    assert squad["rows"]["train"] > 4  # windows: more than the 4 questions
    assert all(0.0 <= squad["final"][f"dev/{m}"] <= 100.0 for m in ("exact_match", "f1"))


def test_evaluate_loads_the_electra_discriminator_and_refuses_its_generator(electra_export):
    """training.evaluate's AutoModel on the discriminator (ElectraModel: the export's weights but the
    detection head). The test vocabulary knows few of the Lee documents' words: the run, not the score."""
    from training.evaluate import EvaluateConfig, evaluate_lee

    discriminator = os.path.join(electra_export, DISCRIMINATOR_DIR)
    results = evaluate_lee(EvaluateConfig(model_dir=discriminator, max_seq_length=16))
    assert results["model_type"] == "electra" and results["pairs"] == 1225
    assert results["model"]["hidden_size"] == 32 and results["windows"] > results["documents"]
    assert -1.0 <= results["pearson"] <= 1.0
    with pytest.raises(ConfigError, match=f"is an ELECTRA generator .* model_dir={discriminator}$"):
        evaluate_lee(EvaluateConfig(model_dir=os.path.join(electra_export, GENERATOR_DIR), max_seq_length=16))
