"""One optimizer and schedule (training/optim.py) for pre-training and fine-tuning: the same weight-decay
groups for the encoder of each export, whether pre-training builds our model or fine-tuning builds
transformers' task model on the export; the same learning rate at every step; what the first update
at lr 0 does. CPU, tiny models."""

from __future__ import annotations

import pytest
import torch
import transformers

from test_electra import electra_model
from test_modern_model import hf_config, tiny_config
from training import config as pretraining
from training.finetune.config import OptimConfig
from training.finetune.loop import accepted_inputs, make_optimizer
from training.model import BertConfig, BertForPreTraining
from training.models import preset_fields
from training.models.modern import ModernBertForMaskedLM
from training.objectives.electra import DISCRIMINATOR_DIR, hf_config_dict
from training.optim import build_optimizer, make_scheduler, no_decay_parameter_names


def bert_pair():
    """Our BERT and transformers' sequence classifier over the same architecture; encoder prefix."""
    cfg = BertConfig(vocab_size=100, **preset_fields("tiny"))
    theirs = transformers.BertForSequenceClassification(transformers.BertConfig(**cfg.to_hf_config_dict()))
    return BertForPreTraining(cfg), theirs, "bert."


def modern_pair():
    cfg = tiny_config()
    return ModernBertForMaskedLM(cfg), transformers.ModernBertForSequenceClassification(hf_config(cfg)), "model."


def electra_pair():
    """ELECTRA's discriminator as pre-training holds it, named as its export (ElectraForPreTraining)."""
    ours = electra_model(embedding_size=16)
    hf = transformers.ElectraConfig(**hf_config_dict(ours, DISCRIMINATOR_DIR))
    return ours.discriminator, transformers.ElectraForSequenceClassification(hf), "electra."


@pytest.mark.parametrize("pair", [bert_pair, modern_pair, electra_pair], ids=["bert", "modernbert", "electra"])
def test_the_encoder_has_the_same_no_decay_names_in_pre_training_and_fine_tuning(pair):
    ours, task_model, encoder = pair()
    pretrained = {n for n in no_decay_parameter_names(ours) if n.startswith(encoder)}
    finetuned = {n for n in no_decay_parameter_names(task_model) if n.startswith(encoder)}
    assert pretrained == finetuned
    assert {n for n, _ in ours.named_parameters() if n.startswith(encoder)} == {
        n for n, _ in task_model.named_parameters() if n.startswith(encoder)
    }  # the same encoder, named alike: the comparison above is not of two empty or disjoint sets
    assert any("norm" in n.lower() for n in finetuned)
    # the groups fine-tuning's make_optimizer builds are pre-training's build_optimizer's
    optimizer, _ = make_optimizer(task_model, OptimConfig(lr=1e-3), total_steps=10)
    names = {id(p): n for n, p in task_model.named_parameters()}
    decay, no_decay = ({names[id(p)] for p in group["params"]} for group in optimizer.param_groups)
    assert no_decay == no_decay_parameter_names(task_model) and not decay & no_decay
    assert decay | no_decay == set(names.values())
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    # for these models BERT's rule (by module type) and fine-tuning's old one (1-D tensors) agree
    assert no_decay == {n for n, p in task_model.named_parameters() if p.ndim < 2}


def test_modernbert_bias_free_norms_are_not_decayed_in_our_model_or_transformers():
    cfg = tiny_config()
    ours, theirs = ModernBertForMaskedLM(cfg), transformers.ModernBertForMaskedLM(hf_config(cfg))
    assert ours.model.final_norm.bias is None
    assert no_decay_parameter_names(ours) == no_decay_parameter_names(theirs)
    assert {"model.embeddings.norm.weight", "model.final_norm.weight", "head.norm.weight", "decoder.bias"} <= (
        no_decay_parameter_names(ours)
    )


def schedule(scheduler, optimizer, steps: int) -> list[float]:
    """The lr of each of ``steps`` updates."""
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_fine_tuning_schedule_is_pre_trainings():
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = make_optimizer(model, OptimConfig(lr=1e-3, warmup_ratio=0.1), total_steps=20)
    finetuning = schedule(scheduler, optimizer, 20)
    same = pretraining.OptimConfig(lr=1e-3, warmup_steps=None, warmup_ratio=0.1)
    pre_optimizer = build_optimizer(torch.nn.Linear(2, 2), same)
    assert finetuning == schedule(make_scheduler(pre_optimizer, same, 20), pre_optimizer, 20)
    # warmup of round(0.1 * 20) = 2 steps: step/warmup, then (20 - step)/(20 - 2) down to the last update
    expected = [0.0, 0.5] + [(20 - s) / 18 for s in range(2, 20)]
    assert finetuning == pytest.approx([1e-3 * m for m in expected])
    no_warmup, scheduler = make_optimizer(model, OptimConfig(lr=1e-3, warmup_ratio=0.0), total_steps=4)
    assert schedule(scheduler, no_warmup, 4) == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_the_first_update_at_lr_0_moves_no_weight_but_fills_adams_moments():
    """What warmup's first step (step/warmup = 0) spends: the weights stay, the gradient enters AdamW's
    moments, so the second update's direction averages the two gradients."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    before = model.weight.detach().clone()
    optimizer, scheduler = make_optimizer(model, OptimConfig(lr=1e-3, warmup_ratio=0.5), total_steps=4)
    model(torch.randn(5, 3)).square().sum().backward()
    assert scheduler.get_last_lr() == [0.0, 0.0]
    optimizer.step()
    assert torch.equal(model.weight, before)
    assert optimizer.state[model.weight]["exp_avg"].abs().sum() > 0


def test_token_type_ids_go_only_to_a_model_that_takes_them():
    inputs = {k: torch.zeros(2, 4, dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}
    inputs["labels"] = torch.zeros(2, dtype=torch.long)
    modern = transformers.ModernBertForSequenceClassification(hf_config(tiny_config()))
    assert set(accepted_inputs(modern, inputs)) == {"input_ids", "attention_mask", "labels"}
    bert = bert_pair()[1]
    assert set(accepted_inputs(bert, inputs)) == set(inputs)
