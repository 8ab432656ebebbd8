"""The modern recipes' experiment presets compose as `python -m training experiment=<name>` composes
them, and carry the settings of the papers their comments cite (ModernBERT, MosaicBERT's masking,
ELECTRA Small and Base), so a preset that drifts from its paper fails here."""

import functools
import importlib.util
import os
import sys

import pytest

from paths import REPO


def _load_sizing():
    """bench/sizing.py as a module (its ``compose_train_config`` composes as the trainer does)."""
    spec = importlib.util.spec_from_file_location("sizing_for_presets", os.path.join(REPO, "bench", "sizing.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sizing = _load_sizing()


@functools.lru_cache(maxsize=None)
def compose(*overrides: str):
    return sizing.compose_train_config(list(overrides))


RECIPES = ("modernbert_base", "modernbert_small", "bert_base_mlm30", "electra_small", "electra_base")


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_presets_compose(name):
    cfg = compose(f"experiment={name}")
    assert cfg.objective.name in ("mlm", "electra")


@pytest.mark.parametrize("name", ["modernbert_base", "modernbert_small"])
def test_modernbert_presets_follow_the_paper(name):
    cfg = compose(f"experiment={name}")
    assert cfg.model.architecture == "modern"
    assert (cfg.objective.name, cfg.data.masking.masked_lm_prob, cfg.trainer.unpad) == ("mlm", 0.3, True)
    assert (cfg.optim.betas, cfg.optim.weight_decay) == ([0.9, 0.98], 1e-5)


def test_modernbert_base_is_the_published_base():
    """Warner et al. 2024: 22 layers, hidden 768, 12 heads, GeGLU 1,152, lr 8e-4."""
    cfg = compose("experiment=modernbert_base")
    m = cfg.model
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.intermediate_size) == (22, 768, 12, 1152)
    assert cfg.optim.lr == 8e-4


def test_mlm30_preset_is_mosaicbert_masking_on_bert_base():
    cfg = compose("experiment=bert_base_mlm30")
    assert (cfg.model.architecture, cfg.model.hidden_size, cfg.model.num_hidden_layers) == ("bert", 768, 12)
    assert (cfg.objective.name, cfg.data.masking.masked_lm_prob) == ("mlm", 0.3)
    assert (cfg.optim.lr, cfg.optim.warmup_ratio, cfg.optim.weight_decay) == (5e-4, 0.06, 1e-5)


@pytest.mark.parametrize(
    ("name", "layers", "hidden", "heads", "ffn", "embedding", "fraction", "lr", "batch", "steps"),
    [
        # Clark et al. 2020, Table 6 and appendix A
        ("electra_small", 12, 256, 4, 1024, 128, 0.25, 5e-4, 128, 1_000_000),
        ("electra_base", 12, 768, 12, 3072, None, 1 / 3, 2e-4, 256, 766_000),
    ],
)
def test_electra_presets_follow_the_paper(name, layers, hidden, heads, ffn, embedding, fraction, lr, batch, steps):
    cfg = compose(f"experiment={name}")
    m, e = cfg.model, cfg.objective.electra
    assert cfg.objective.name == "electra"
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.intermediate_size) == (
        layers,
        hidden,
        heads,
        ffn,
    )
    assert (e.embedding_size, e.discriminator_weight) == (embedding, 50.0)
    assert e.generator_size_fraction == pytest.approx(fraction)
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.trainer.global_batch_size, cfg.trainer.max_steps) == (
        lr,
        10_000,
        batch,
        steps,
    )
    # 15% masked; of those 85% [MASK], 15% kept, none random (the generator supplies the replacements)
    assert cfg.data.masking.masked_lm_prob is None  # the shards' 15%
    assert (cfg.data.masking.mask_prob, cfg.data.masking.random_prob) == (0.85, 0.0)
