"""The DeepSpeed engine around the network an objective built: optimizer, schedule, compile.

    engine, accumulation = build_engine(net, cfg, world_size)

The optimizer and schedule come from ``training.optim`` (at ZeRO stage 0 without fp16 the optimizer
is wrapped in ``SkipNonFiniteStep``, since DeepSpeed then steps it as given), the DeepSpeed config
from ``training.deepspeed_config``; accumulation is the micro batches per rank of one optimizer step.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import TrainConfig


def build_engine(model: nn.Module, cfg: TrainConfig, world_size: int):
    """``deepspeed.initialize`` around ``model`` with this run's optimizer, schedule and DeepSpeed
    config, compiled where trainer.compile asks; returns (engine, micro batches per rank and step)."""
    import deepspeed

    from training.deepspeed_config import build_deepspeed_config
    from training.optim import SkipNonFiniteStep, build_optimizer, make_scheduler

    optimizer = build_optimizer(model, cfg.optim, cfg.deepspeed.offload_optimizer)
    if cfg.deepspeed.zero_stage == 0 and cfg.deepspeed.precision != "fp16":
        optimizer = SkipNonFiniteStep(optimizer)  # stage 0 steps it as given: no overflow check of DeepSpeed's
    ds_config = build_deepspeed_config(
        cfg.deepspeed, cfg.trainer, cfg.data, cfg.optim, world_size, sum(p.numel() for p in model.parameters())
    )
    compile_model = cfg.trainer.compile and cfg.deepspeed.zero_stage < 3
    if compile_model:
        compile_before_deepspeed(model, cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=ds_config,
        lr_scheduler=lambda opt: make_scheduler(opt, cfg.optim, cfg.trainer.max_steps),
    )
    if cfg.trainer.compile and not compile_model:
        engine.compile()  # ZeRO-3 gathers parameters in module hooks: DeepSpeed compiles around them
    return engine, ds_config["gradient_accumulation_steps"]


def compile_before_deepspeed(model: nn.Module, cfg: TrainConfig) -> None:
    """``torch.compile`` the model's forward before DeepSpeed wraps the model: the module, its
    parameter names, checkpoints and exports are unchanged, and DeepSpeed's module hooks (which read
    its micro-step counter, a recompile for every value if traced) stay outside the graph. The padded
    path has static shapes once batches are (``data.pad_to_max_length``; the masked slots are fixed
    always): one graph, no breaks (fullgraph). The unpadded path's token count N changes every batch:
    one graph with dynamic shapes."""
    if cfg.trainer.unpad:
        model.forward = torch.compile(model.forward, fullgraph=True, dynamic=True)
    else:
        dynamic = False if cfg.data.pad_to_max_length else None  # None: lengths become dynamic at the 2nd
        model.forward = torch.compile(model.forward, fullgraph=True, dynamic=dynamic)
