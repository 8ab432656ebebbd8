"""The model registry (training/models): every preset composes against its architecture's schema and
builds its network, the schemas refuse keys of other architectures, run records name the
architecture (an old one reads as bert), and the modern encoder's FLOPs through the registry
equal a hand count."""

import dataclasses

import pytest
import torch
from hydra.errors import ConfigCompositionException

from test_training_config import REQUIRED, compose_train, options
from training import checkpoint as ckpt
from training.config import ConfigError, ModelConfig, check_model_schema
from training.data import DataContractError
from training.model import BertConfig
from training.models import DEFAULT_ARCHITECTURE, architecture, for_config, registered, upgraded_record
from training.models.modern import ModernConfig
from training.objectives import create

VOCAB, PAD = 30522, 0


def network_config(name: str):
    """The network config of preset ``name`` for a 30,522-id vocabulary, on shards it trains on."""
    model = compose_train(REQUIRED + [f"model={name}"]).model
    arch = architecture(model.architecture)
    return arch, arch.model_config(model, VOCAB, "nsp" if arch.name == "bert" else "none", PAD)


@pytest.mark.parametrize("name", options("model"))
def test_every_preset_composes_against_its_schema_and_builds(name):
    model = compose_train(REQUIRED + [f"model={name}"]).model
    arch, cfg = network_config(name)
    assert type(model) is arch.schema and isinstance(cfg, arch.config_class)
    assert name.startswith("modern") == (arch.name == "modern")
    with torch.device("meta"):  # names and shapes, no memory
        net = create("mlm", "none" if arch.name == "modern" else "nsp").build(cfg, unpad=False)
    shared = {f.name for f in dataclasses.fields(model)} & {f.name for f in dataclasses.fields(cfg)}
    assert all(getattr(cfg, k) == getattr(model, k) for k in shared - {"vocab_size", "with_nsp_head"})  # manifest's
    assert net.config is cfg and for_config(cfg) is not None


def test_modern_base_is_modernbert_base():
    _, cfg = network_config("modern_base")
    shape = (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size)
    assert shape == (22, 768, 12, 1152)
    assert (cfg.global_attn_every_n_layers, cfg.local_attention) == (3, 128)
    assert (cfg.global_rope_theta, cfg.local_rope_theta, cfg.norm_eps) == (160_000.0, 10_000.0, 1e-5)
    assert [cfg.is_local_layer(i) for i in range(4)] == [False, True, True, False]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model=modern_small", "model.type_vocab_size=3"], "type_vocab_size"),  # a BERT key
        (["model=base", "model.local_attention=64"], "local_attention"),  # a modern key
    ],
)
def test_a_schema_refuses_the_keys_of_another_architecture(overrides, match):
    with pytest.raises(ConfigCompositionException, match=match):
        compose_train(REQUIRED + overrides)


def test_appended_keys_and_another_architecture_than_the_presets_are_refused():
    with pytest.raises(ConfigError, match=r"unknown config keys \['model.foo'\]"):
        compose_train(REQUIRED + ["model=modern_small", "+model.foo=1"])
    with pytest.raises((ConfigError, ValueError), match="model.architecture=bert but the model preset is a modern"):
        compose_train(REQUIRED + ["model=modern_small", "model.architecture=bert"])
    with pytest.raises((ConfigError, ValueError), match="unknown model.architecture 'gpt'"):
        compose_train(REQUIRED + ["model.architecture=gpt"])
    with pytest.raises(ConfigError, match=r"defaults: \[/bert_model_schema@_here_, _self_\]"):
        check_model_schema(ModelConfig())  # a preset YAML that names no schema


def test_modern_refuses_shards_with_sentence_pairs_naming_instances_none():
    model = compose_train(REQUIRED + ["model=modern_small"]).model
    for task in ("nsp", "sop"):
        with pytest.raises(DataContractError, match="instances=none"):
            architecture("modern").model_config(model, VOCAB, task, PAD)
    assert architecture("modern").model_config(model, VOCAB, "none", PAD).with_nsp_head is False


def test_unknown_architecture_names_the_registered_ones():
    assert sorted(registered()) == ["bert", "modern"]
    with pytest.raises(ConfigError, match=r"\['bert', 'modern'\]"):
        architecture("t5")


# --- run records -----------------------------------------------------------------------------------


def record(name: str) -> dict:
    resolved = {"model": {"architecture": architecture(network_config(name)[0].name).name}, "seed": 1}
    return ckpt.run_record(resolved, network_config(name)[1], {"fingerprint": "f"})


def test_the_record_names_the_architecture_and_its_marked_fields():
    bert, modern = record("tiny")["architecture"], record("modern_small")["architecture"]
    old_fields = (  # what run_config.json kept before the registry: BertConfig's fields by hand
        "vocab_size hidden_size num_hidden_layers num_attention_heads intermediate_size "
        "max_position_embeddings type_vocab_size with_nsp_head"
    ).split()
    assert list(bert) == ["architecture", *old_fields] and bert["architecture"] == "bert"
    assert modern["architecture"] == "modern" and "local_attention" in modern and "type_vocab_size" not in modern
    assert "hidden_dropout_prob" not in bert and "norm_eps" not in modern  # settings, not the architecture


def test_a_record_written_before_the_registry_reads_as_bert_and_resumes():
    current = record("tiny")
    old = {
        **current,
        "config": {"model": {}, "seed": 1},
        "architecture": {k: v for k, v in current["architecture"].items() if k != "architecture"},
    }
    upgraded = upgraded_record(old)
    assert upgraded["architecture"]["architecture"] == DEFAULT_ARCHITECTURE == "bert"
    assert upgraded["config"]["model"]["architecture"] == "bert"
    assert ckpt.check_resumable(upgraded, current, "step1", force=False) == []
    assert upgraded_record(current) == current


def test_a_checkpoint_of_another_architecture_never_resumes():
    with pytest.raises(ConfigError, match="architecture differs"):
        ckpt.check_resumable(record("modern_small"), record("mini"), "step1", force=True)
    with pytest.raises(ConfigError, match="architecture differs"):
        ckpt.check_resumable(upgraded_record(record("mini")), record("modern_small"), "step1", force=True)


# --- FLOPs ---------------------------------------------------------------------------------------------


def test_modern_flops_per_token_through_the_registry_equal_a_hand_count():
    cfg = ModernConfig(
        vocab_size=100,
        hidden_size=8,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=12,
        local_attention=4,
    )
    s, h, inner, V = 16, 8, 12, 100
    # per layer: Wqkv 3h², Wo h², Wi h·2I, Wo I·h -> 6 FLOPs per weight per token
    dense = 6 * (3 * h * h + h * h + 2 * h * inner + inner * h) * 3
    # layer 0 global (16 keys), layers 1-2 local (a window of 4 keys): 12·h per key
    attention = 12 * h * (s * 1 + 4 * 2)
    head = 6 * h * h + 6 * h * V  # dense + decoder
    assert (dense, attention, head) == (9792, 2304, 5184)
    assert for_config(cfg).flops_per_token(cfg, s, None) == dense + attention + head
    assert create("mlm", "none").flops_per_token(cfg, s, 0.25) == dense + attention + 0.25 * head
    bert = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    assert create("mlm", "nsp").flops_per_token(bert, s, None) == for_config(bert).flops_per_token(bert, s, None)


def test_presets_are_read_from_the_yaml_with_their_architecture():
    """training.models.presets: every conf/train/model/*.yaml, its architecture from the key or the
    schema its defaults list names, and the fields it sets; preset_fields without the architecture."""
    from training.models import bert_presets, preset_fields, presets

    found = presets()
    assert sorted(found) == options("model")
    assert {name for name, p in found.items() if p["architecture"] == "modern"} == {"modern_small", "modern_base"}
    assert preset_fields("base") == {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    }
    assert preset_fields("modern_base")["global_attn_every_n_layers"] == 3 and "architecture" not in preset_fields(
        "modern_base"
    )
    assert "modern_small" not in bert_presets() and bert_presets()["tiny"] == preset_fields("tiny")
    with pytest.raises(KeyError, match="no model preset 'huge'"):
        preset_fields("huge")
