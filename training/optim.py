"""Optimizers and learning-rate schedules of the trainer.

- ``param_groups``: BERT's weight-decay rule (none on norm weights and biases), for our models and
  transformers' alike.
- ``build_optimizer``: AdamW (torch's, or DeepSpeed's CPU Adam under ZeRO-Offload) or ``Lamb``.
- ``Lamb``: layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep
  Learning: Training BERT in 76 minutes"), written from the paper.
- ``make_scheduler``: linear warmup, then linear or polynomial decay, as a torch ``LambdaLR``.
- ``restore_schedule_position``: after a resume, the rates of a fresh run with this run's settings;
  ``schedule_change`` says so when they are not the checkpoint's.
- ``SkipNonFiniteStep``: an optimizer that skips a step whose gradients are not all finite, where
  DeepSpeed steps the optimizer as given (ZeRO stage 0) and so has no overflow check of its own.

The optimizer and scheduler are plain torch objects handed to ``deepspeed.initialize`` (see
``training.deepspeed_config`` for why DeepSpeed's own optimizer section is not used). Fine-tuning
builds the same two from its own settings (``training.finetune.config.OptimConfig.shared``), so a
model gets the same weight-decay groups and the same warmup and decay in either.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from training.config import ConfigError, OptimConfig

NORM_TYPES = (nn.LayerNorm, nn.RMSNorm)
"""torch's normalisation layers (and their subclasses: with or without a bias, as ModernBERT's)."""
NORM_CLASS_SUFFIXES = ("LayerNorm", "RMSNorm")
"""transformers names each norm class of its own ``<Model>LayerNorm`` or ``<Model>RMSNorm``; those that
do not subclass torch's (DeBERTa's, T5's, every RMSNorm of a decoder) are known by that name."""


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer, whose gain (and bias) BERT's rule never decays."""
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith(NORM_CLASS_SUFFIXES)


def _is_no_decay(module: nn.Module, param_name: str) -> bool:
    """BERT's rule: no decay for norm weights (LayerNorm, with or without bias; RMSNorm) and every bias;
    embeddings are decayed. Fine-tuning applies it to transformers' task models (training/finetune/loop.py)."""
    return is_norm(module) or param_name == "bias"


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Qualified names (as in ``named_parameters()``) of the parameters kept free of weight decay."""
    names = set()
    for name, _param in _owned_parameters(model):
        module_name, _, param_name = name.rpartition(".")
        if _is_no_decay(model.get_submodule(module_name), param_name):
            names.add(name)
    return names


def _owned_parameters(model: nn.Module) -> Iterable[tuple[str, nn.Parameter]]:
    """(qualified name, parameter) once per trainable tensor; tied tensors under their first name."""
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: decayed parameters, then LayerNorm weights and biases at decay 0.

    Tied tensors (the MLM decoder shares the word embeddings and its bias) appear once.
    """
    no_decay = no_decay_parameter_names(model)
    decay_params, no_decay_params = [], []
    for name, param in _owned_parameters(model):
        (no_decay_params if name in no_decay else decay_params).append(param)
    return [{"params": decay_params, "weight_decay": weight_decay}, {"params": no_decay_params, "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    """LAMB: an Adam step rescaled per tensor by the trust ratio ||w|| / ||update||.

    For each parameter tensor w with gradient g, at step t (paper, Algorithm 2):

        m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t)            v_hat = v / (1 - beta2^t)      (if bias_correction)
        u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w
        r = clamp(||w|| / ||u||, min_trust_ratio, max_trust_ratio), or 1 if either norm is 0
        w = w - lr * r * u

    A group with weight_decay 0 (LayerNorm, biases) takes the plain Adam step (r = 1) unless
    ``adapt_no_decay`` is set, as BERT's LAMB exempts those tensors from layer adaptation.
    Moments are kept in the parameter's dtype (fp32 master weights under DeepSpeed). The trust
    ratio stays a tensor, so a step causes no host-device synchronisation.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
        adapt_no_decay: bool = False,
        min_trust_ratio: float = 0.0,
        max_trust_ratio: float | None = None,
    ):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid betas {betas}")
        if not eps > 0.0 or weight_decay < 0.0:
            raise ValueError(f"invalid eps {eps} or weight_decay {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            adapt_no_decay=adapt_no_decay,
            min_trust_ratio=min_trust_ratio,
            max_trust_ratio=max_trust_ratio,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            adapt = group["weight_decay"] != 0.0 or group["adapt_no_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                update = self._adam_direction(p, state, beta1, beta2, group)
                if adapt:
                    ratio = self._trust_ratio(p, update, group)  # 0-d tensor
                    p.add_(update * ratio, alpha=-group["lr"])
                else:
                    p.add_(update, alpha=-group["lr"])
        return loss

    @staticmethod
    def _adam_direction(p: torch.Tensor, state: dict, beta1: float, beta2: float, group: dict) -> torch.Tensor:
        """Bias-corrected Adam direction plus decoupled weight decay, same shape as p."""
        grad = p.grad
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if group["bias_correction"]:
            t = state["step"]
            m_scale = 1.0 / (1.0 - beta1**t)
            v_scale = 1.0 / (1.0 - beta2**t)
        else:
            m_scale = v_scale = 1.0
        denom = (exp_avg_sq * v_scale).sqrt_().add_(group["eps"])
        update = (exp_avg * m_scale).div_(denom)
        if group["weight_decay"] != 0.0:
            update.add_(p, alpha=group["weight_decay"])
        return update

    @staticmethod
    def _trust_ratio(p: torch.Tensor, update: torch.Tensor, group: dict) -> torch.Tensor:
        """||p|| / ||update|| clamped to the group's bounds; 1 where either norm is zero
        (a zero-initialised tensor, or a tensor with nothing to update)."""
        acc = torch.promote_types(p.dtype, torch.float32)  # norms of bf16/fp16 tensors in fp32
        w_norm = torch.linalg.vector_norm(p, dtype=acc)
        u_norm = torch.linalg.vector_norm(update, dtype=acc)
        ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
        ratio = ratio.clamp(min=group["min_trust_ratio"], max=group["max_trust_ratio"])
        return ratio.to(p.dtype)


def build_optimizer(model: nn.Module, optim: OptimConfig, offload_optimizer: bool = False) -> torch.optim.Optimizer:
    """The optimizer of ``optim`` over ``param_groups(model, optim.weight_decay)``.

    offload_optimizer: ZeRO-Offload is on (``deepspeed.offload_optimizer``); DeepSpeed then steps
    on the CPU and requires its vectorised ``DeepSpeedCPUAdam`` (whose first use compiles a C++
    op, about two minutes, cached in ~/.cache/torch_extensions).
    """
    groups = param_groups(model, optim.weight_decay)
    betas = tuple(optim.betas)
    if optim.name == "lamb":
        if offload_optimizer:
            raise ConfigError(
                "optim.name=lamb cannot run with deepspeed.offload_optimizer: "
                "ZeRO-Offload steps on the CPU with DeepSpeedCPUAdam only; use optim=adamw"
            )
        return Lamb(
            groups,
            lr=optim.lr,
            betas=betas,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
            bias_correction=optim.bias_correction,
            adapt_no_decay=optim.trust_ratio_for_no_decay,
            min_trust_ratio=optim.min_trust_ratio,
            max_trust_ratio=optim.max_trust_ratio,
        )
    if offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(
            groups,
            lr=optim.lr,
            betas=betas,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
            bias_correction=True,
            adamw_mode=True,
        )
    return torch.optim.AdamW(groups, lr=optim.lr, betas=betas, eps=optim.eps, weight_decay=optim.weight_decay)


def lr_multiplier(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning rate at `step` (optimizer steps taken so far) as a fraction of optim.lr.

    Warmup: step / warmup, from 0 at the first update to 1 at step `warmup`. Decay over
    [warmup, max_steps]: end + (1 - end) * (1 - progress) ** power, where end = end_lr / lr and
    power is 1 for the linear schedule. From max_steps on: end.
    """
    warmup = optim.resolved_warmup_steps(max_steps)
    if step < warmup:
        return step / warmup
    end = optim.end_lr / optim.lr
    if step >= max_steps:
        return end
    progress = (step - warmup) / (max_steps - warmup)
    power = optim.power if optim.schedule == "polynomial" else 1.0
    return end + (1.0 - end) * (1.0 - progress) ** power


def make_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over ``lr_multiplier``; call ``step()`` once per optimizer step (DeepSpeed does).

    Every group's initial lr must be optim.lr (``build_optimizer`` sets it so).
    """
    if max_steps < 1:
        raise ConfigError(f"max_steps must be positive, got {max_steps}")
    if optim.resolved_warmup_steps(max_steps) > max_steps:
        raise ConfigError(f"warmup of {optim.resolved_warmup_steps(max_steps)} steps exceeds max_steps {max_steps}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, optim, max_steps))


def restore_schedule_position(
    scheduler: torch.optim.lr_scheduler.LambdaLR, optim: OptimConfig, max_steps: int, step: int
) -> list[float]:
    """Put the schedule (and every param group's lr) where a fresh run with *these* settings is
    after ``step`` optimizer steps; call it right after loading a checkpoint. Returns the rates.

    Loading restores the saved run's state: the param groups' lr (e.g. 0.0, the end of a
    schedule that ended at the old max_steps), the scheduler's last_epoch and base_lrs. LambdaLR
    only writes a new lr at its next ``step()``, i.e. after the first resumed update, so without
    this that update would run at the old run's rate. ``scheduler`` is ``make_scheduler``'s (its
    lambda already follows this run's max_steps)."""
    groups = scheduler.optimizer.param_groups
    rates = [optim.lr * lr_multiplier(step, optim, max_steps) for _ in groups]
    for group, rate in zip(groups, rates):
        group["initial_lr"] = optim.lr
        group["lr"] = rate
    scheduler.base_lrs = [optim.lr] * len(groups)
    scheduler.last_epoch = step
    scheduler._last_lr = list(rates)  # what get_last_lr() reports; torch has no public setter
    return rates


class SkipNonFiniteStep(torch.optim.Optimizer):
    """``optimizer``, except that a step whose gradients are not all finite is skipped.

    DeepSpeed's ZeRO 1-3 and its bf16/fp16 optimizers check the gradients' norm at the step and
    skip a non-finite one (setting ``overflow``); at ZeRO stage 0 in fp32 (or under torch autocast)
    it steps the optimizer it was given as it is. This wrapper gives that path the same rule: the
    engine reads ``overflow`` after the step, counts the step as skipped and leaves the schedule
    where it was, as on the other paths. One host read per optimizer step (the finiteness flag),
    where DeepSpeed's own checks read the norm.

    Groups, state and the state dict are the wrapped optimizer's (a checkpoint is the same as
    without the wrapper)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        # Not Optimizer.__init__: the wrapped optimizer owns the groups and state; these are views.
        self.optimizer = optimizer
        self.overflow = False
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self) -> dict:
        return self.optimizer.defaults

    def __repr__(self) -> str:
        return f"SkipNonFiniteStep({self.optimizer!r})"

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("SkipNonFiniteStep does not take a closure")
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        # (G,) per-tensor norms; a NaN or inf anywhere makes its tensor's norm non-finite.
        self.overflow = bool(grads) and not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())
        if self.overflow:
            self.zero_grad(set_to_none=True)
            return None
        return self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)


def schedule_change(
    step: int,
    saved_max_steps: Optional[int],
    max_steps: int,
    last_lr: Optional[float],
    saved_next_lr: float,
    next_lr: float,
) -> Optional[str]:
    """The line a resume prints when its schedule is not the checkpoint's: ``trainer.max_steps``
    changed (``saved_max_steps``: the checkpoint's run_config.json), or the rate of the next step
    differs (optim.* changed under force_resume). last_lr: the rate step ``step`` trained at
    (steps.jsonl); saved_next_lr / next_lr: step + 1's under the checkpoint's schedule / this run's.
    None when nothing changed."""
    if saved_max_steps not in (None, max_steps):
        what = f"with max_steps {max_steps} (was {saved_max_steps}): the schedule is recomputed for {max_steps} steps"
    elif abs(saved_next_lr - next_lr) > 1e-6 * abs(next_lr):
        what = "with other optim settings: the schedule is recomputed with them"
    else:
        return None
    before = f"{last_lr:.1e} at step {step}" if last_lr is not None else f"{saved_next_lr:.1e}"
    return (
        f"resuming at step {step} {what} (as in a fresh run); learning rate "
        f"{before} -> {next_lr:.1e} at step {step + 1} (the checkpoint's schedule would give {saved_next_lr:.1e})"
    )
