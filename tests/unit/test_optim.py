"""Optimizers and schedules: BERT's weight-decay groups, LAMB against a hand computation, and the
learning rate at the points that define a schedule. CPU, tiny tensors, no DeepSpeed engine."""

import math

import pytest
import torch

from training.config import ConfigError, OptimConfig
from training.model import BertConfig, BertForPreTraining
from training.models import preset_fields
from training.optim import (
    Lamb,
    build_optimizer,
    lr_multiplier,
    make_scheduler,
    no_decay_parameter_names,
    param_groups,
    restore_schedule_position,
)


def tiny_bert(with_nsp_head=True) -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(BertConfig(vocab_size=100, with_nsp_head=with_nsp_head, **preset_fields("tiny")))


# --- weight-decay groups ----------------------------------------------------------------------


@pytest.mark.parametrize("with_nsp_head", [True, False])
def test_no_decay_group_is_exactly_layernorm_and_biases(with_nsp_head):
    model = tiny_bert(with_nsp_head)
    named = dict(model.named_parameters())  # tied tensors listed once
    expected = {n for n in named if n.endswith(".bias") or ".LayerNorm." in n}
    assert no_decay_parameter_names(model) == expected
    assert any(".LayerNorm.weight" in n for n in expected) and "cls.predictions.bias" in expected

    decay, no_decay = param_groups(model, weight_decay=0.01)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(no_decay) == {id(named[n]) for n in expected}
    assert ids(decay) == {id(p) for n, p in named.items() if n not in expected}
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)  # each tensor once
    # BERT decays the embeddings; the MLM decoder shares the word embeddings, so it is there once
    assert id(model.bert.embeddings.word_embeddings.weight) in ids(decay)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_norms_without_bias_rmsnorm_and_transformers_own_norm_classes_are_not_decayed():
    """Fine-tuning applies the rule to transformers' models: torch's LayerNorm with or without a bias
    (ModernBERT's) and RMSNorm, and transformers' norm classes that subclass neither (DeBERTa's
    LayerNorm, T5's and Llama's RMS norms) keep their gains free of decay; a plain weight does not."""
    from transformers.models.deberta.modeling_deberta import DebertaLayerNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    model = torch.nn.ModuleDict(
        {
            "no_bias": torch.nn.LayerNorm(4, bias=False),
            "rms": torch.nn.RMSNorm(4),
            "deberta": DebertaLayerNorm(4),
            "t5": T5LayerNorm(4),
            "llama": LlamaRMSNorm(4),
            "dense": torch.nn.Linear(4, 4, bias=False),
        }
    )
    assert not any(isinstance(model[k], torch.nn.LayerNorm) for k in ("deberta", "t5", "llama"))
    assert no_decay_parameter_names(model) == {
        "no_bias.weight",
        "rms.weight",
        "deberta.weight",
        "deberta.bias",
        "t5.weight",
        "llama.weight",
    }


def test_frozen_parameters_are_left_out():
    model = tiny_bert()
    model.bert.embeddings.position_embeddings.weight.requires_grad_(False)
    decay, _ = param_groups(model, 0.01)
    assert all(p is not model.bert.embeddings.position_embeddings.weight for p in decay["params"])


# --- building the optimizer -------------------------------------------------------------------


def test_adamw_has_berts_settings():
    opt = build_optimizer(tiny_bert(), OptimConfig())
    assert type(opt) is torch.optim.AdamW  # a class DeepSpeed's ZeRO knows
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"]) == (1e-4, (0.9, 0.999), 1e-6)


def test_lamb_is_built_with_its_options():
    cfg = OptimConfig(name="lamb", lr=6e-3, warmup_steps=None, warmup_ratio=0.28, max_trust_ratio=10.0)
    opt = build_optimizer(tiny_bert(), cfg)
    assert isinstance(opt, Lamb)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert opt.param_groups[0]["max_trust_ratio"] == 10.0 and opt.param_groups[0]["lr"] == 6e-3


def test_lamb_with_optimizer_offload_is_a_config_error():
    with pytest.raises(ConfigError, match="DeepSpeedCPUAdam"):
        build_optimizer(tiny_bert(), OptimConfig(name="lamb"), offload_optimizer=True)


# --- LAMB -------------------------------------------------------------------------------------


def hand_lamb_step(w, g, lr, beta1, beta2, eps, wd, bias_correction=True, adapt=True):
    """One LAMB step from zero moments, in plain Python floats (the paper's Algorithm 2)."""
    m = [(1 - beta1) * gi for gi in g]
    v = [(1 - beta2) * gi * gi for gi in g]
    if bias_correction:
        m = [mi / (1 - beta1) for mi in m]
        v = [vi / (1 - beta2) for vi in v]
    u = [mi / (math.sqrt(vi) + eps) + wd * wi for mi, vi, wi in zip(m, v, w)]
    w_norm, u_norm = math.sqrt(sum(x * x for x in w)), math.sqrt(sum(x * x for x in u))
    ratio = w_norm / u_norm if adapt and w_norm > 0 and u_norm > 0 else 1.0
    return [wi - lr * ratio * ui for wi, ui in zip(w, u)], ratio


def lamb_step(w, g, **kwargs):
    p = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
    p.grad = torch.tensor(g, dtype=torch.float64)
    Lamb([p], **kwargs).step()
    return p.detach().tolist()


@pytest.mark.parametrize("bias_correction", [True, False])
def test_lamb_step_equals_the_hand_computation(bias_correction):
    w, g = [1.0, -2.0, 0.5], [0.3, 0.1, -0.4]
    expected, ratio = hand_lamb_step(
        w, g, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01, bias_correction=bias_correction
    )
    assert ratio != pytest.approx(1.0, abs=0.1)  # the trust ratio matters in this case
    got = lamb_step(w, g, lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, bias_correction=bias_correction)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_second_step_uses_the_moments():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = Lamb([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, adapt_no_decay=True)
    g1, g2 = [0.5, 0.2], [-0.1, 0.4]
    p.grad = torch.tensor(g1, dtype=torch.float64)
    opt.step()
    w1 = p.detach().tolist()
    p.grad = torch.tensor(g2, dtype=torch.float64)
    opt.step()
    m = [0.9 * 0.1 * a + 0.1 * b for a, b in zip(g1, g2)]
    v = [0.99 * 0.01 * a * a + 0.01 * b * b for a, b in zip(g1, g2)]
    u = [(mi / (1 - 0.9**2)) / (math.sqrt(vi / (1 - 0.99**2)) + 1e-8) for mi, vi in zip(m, v)]
    ratio = math.sqrt(sum(x * x for x in w1)) / math.sqrt(sum(x * x for x in u))
    assert p.detach().tolist() == pytest.approx([wi - 0.1 * ratio * ui for wi, ui in zip(w1, u)], rel=1e-12)


def test_zero_norms_fall_back_to_a_trust_ratio_of_one():
    # zero weights (a freshly initialised bias in a decayed group): plain Adam-direction step
    expected, ratio = hand_lamb_step([0.0, 0.0], [0.2, -0.3], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01)
    assert ratio == 1.0
    assert lamb_step([0.0, 0.0], [0.2, -0.3], lr=0.01, eps=1e-6, weight_decay=0.01) == pytest.approx(expected)
    # zero update (zero gradient, no decay, adaptation forced on): nothing moves, nothing is NaN
    assert lamb_step([1.0, 2.0], [0.0, 0.0], lr=0.01, weight_decay=0.0, adapt_no_decay=True) == [1.0, 2.0]
    # all zero
    assert lamb_step([0.0], [0.0], lr=0.01, weight_decay=0.01) == [0.0]


def test_no_decay_group_takes_the_plain_adam_step_unless_asked():
    w, g = [3.0, 4.0], [0.1, 0.1]
    plain, _ = hand_lamb_step(w, g, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.0, adapt=False)
    adapted, ratio = hand_lamb_step(w, g, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.0)
    assert ratio > 2
    assert lamb_step(w, g, lr=0.1, eps=1e-6, weight_decay=0.0) == pytest.approx(plain)
    assert lamb_step(w, g, lr=0.1, eps=1e-6, weight_decay=0.0, adapt_no_decay=True) == pytest.approx(adapted)


def test_trust_ratio_bounds():
    w, g = [30.0, 40.0], [0.1, 0.1]  # ||w|| = 50, ||u|| ~ 1.4: ratio ~ 35
    plain, _ = hand_lamb_step(w, g, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.0, adapt=False)
    update = [(wi - pi) / 0.1 for wi, pi in zip(w, plain)]
    capped = [wi - 0.1 * 10.0 * ui for wi, ui in zip(w, update)]  # the step with r = 10
    got = lamb_step(w, g, lr=0.1, eps=1e-6, weight_decay=0.0, adapt_no_decay=True, max_trust_ratio=10.0)
    assert got == pytest.approx(capped)
    floor = lamb_step(
        [1e-3, 0.0], [1.0, 1.0], lr=0.1, eps=1e-6, weight_decay=0.0, adapt_no_decay=True, min_trust_ratio=0.5
    )
    assert floor == pytest.approx([1e-3 - 0.05, -0.05], rel=1e-5)


def test_lamb_decreases_the_loss_of_a_small_problem():
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(256, 1)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
    )
    opt = Lamb(param_groups(model, 0.01), lr=0.02)
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.2 * losses[0]


def test_lamb_state_round_trips():
    """Resuming from a state_dict continues exactly (what a checkpoint relies on)."""

    def run(steps, opt_state=None, weights=None):
        torch.manual_seed(1)
        model = torch.nn.Linear(4, 2)
        if weights is not None:
            model.load_state_dict(weights)
        opt = Lamb(param_groups(model, 0.01), lr=0.05)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for s in steps:
            torch.manual_seed(100 + s)
            model.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
        return model, opt

    straight, _ = run(range(6))
    first, opt = run(range(3))
    resumed, _ = run(range(3, 6), opt_state=opt.state_dict(), weights=first.state_dict())
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


# --- schedules --------------------------------------------------------------------------------


def lrs_over(cfg: OptimConfig, max_steps: int, at) -> dict:
    """The learning rate a real LambdaLR gives after `step` optimizer steps, for each step in `at`."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = make_scheduler(opt, cfg, max_steps)
    out = {}
    for step in range(max(at) + 1):
        if step in at:
            out[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return out


def test_linear_schedule_points():
    cfg = OptimConfig(lr=1e-4, warmup_steps=100, schedule="linear", end_lr=0.0)
    lr = lrs_over(cfg, 1100, at={0, 50, 100, 600, 1100, 1200})
    assert lr[0] == 0.0
    assert lr[50] == pytest.approx(0.5e-4)
    assert lr[100] == pytest.approx(1e-4)  # peak at the end of warmup
    assert lr[600] == pytest.approx(0.5e-4)  # halfway through the decay
    assert lr[1100] == pytest.approx(0.0, abs=1e-15) and lr[1200] == pytest.approx(0.0, abs=1e-15)


def test_polynomial_schedule_points_with_end_lr():
    cfg = OptimConfig(
        name="lamb", lr=6e-3, warmup_steps=None, warmup_ratio=0.2, schedule="polynomial", power=0.5, end_lr=1e-4
    )
    lr = lrs_over(cfg, 1000, at={0, 100, 200, 600, 1000, 1001})
    assert lr[0] == 0.0 and lr[100] == pytest.approx(3e-3)
    assert lr[200] == pytest.approx(6e-3)  # warmup = round(0.2 * 1000)
    assert lr[600] == pytest.approx(1e-4 + (6e-3 - 1e-4) * math.sqrt(0.5))
    assert lr[1000] == pytest.approx(1e-4) and lr[1001] == pytest.approx(1e-4)


def test_no_warmup_starts_at_the_peak():
    cfg = OptimConfig(lr=1e-5, warmup_steps=0)
    assert lr_multiplier(0, cfg, 100) == 1.0
    assert lr_multiplier(50, cfg, 100) == pytest.approx(0.5)


def test_linear_ignores_power():
    cfg = OptimConfig(schedule="linear", power=2.0, warmup_steps=0)
    assert lr_multiplier(50, cfg, 100) == pytest.approx(0.5)


def test_schedule_resumes_from_its_state():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = make_scheduler(opt, cfg, 100)
    for _ in range(37):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched2 = make_scheduler(opt2, cfg, 100)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]  # what load_state_dict of the optimizer restores
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (100 - 38) / 90)


def test_resumed_with_a_longer_run_the_schedule_is_the_fresh_runs():
    """A run of 4 steps (max_steps 4: its last lr is 0.0) resumed with max_steps 8, the way
    DeepSpeed loads it (optimizer state with its param-group lr, then the scheduler's state): after
    restore_schedule_position every update runs at the rate a fresh 8-step run has at that step."""
    cfg = OptimConfig(lr=3e-3, warmup_steps=2)
    model = tiny_bert()
    opt = build_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, 4)
    for _ in range(4):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]  # the end of the 4-step schedule

    opt2 = build_optimizer(tiny_bert(), cfg)
    sched2 = make_scheduler(opt2, cfg, 8)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert restore_schedule_position(sched2, cfg, 8, 4) == [cfg.lr * lr_multiplier(4, cfg, 8)] * 2
    fresh = lrs_over(cfg, 8, at={4, 5, 6, 7})
    for step in (4, 5, 6, 7):  # the lr the update after `step` steps uses
        assert [g["lr"] for g in opt2.param_groups] == [fresh[step]] * 2, step
        assert sched2.get_last_lr() == [fresh[step]] * 2
        opt2.step()
        sched2.step()


def test_warmup_longer_than_the_run_is_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="warmup"):
        make_scheduler(opt, OptimConfig(warmup_steps=200), 100)
