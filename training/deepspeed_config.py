"""The DeepSpeed config dict, built from the Hydra config: the one place batch sizes, clipping,
precision and ZeRO settings are turned into DeepSpeed's keys (no hand-kept JSON repeating them).

Keys follow DeepSpeed 0.19 (``deepspeed/runtime/config.py``, ``runtime/zero/config.py``,
``runtime/precision_config.py``); its sub-sections reject unknown keys.

There is deliberately no "optimizer" or "scheduler" section: the trainer builds its own torch
optimizer and LambdaLR (``training.optim``) and passes them to ``deepspeed.initialize``. That keeps
one implementation of each for every ZeRO stage and precision (LAMB included, which DeepSpeed
only offers as a CUDA-fused op) and one schedule definition that tests can evaluate directly.
"""

from __future__ import annotations

from training.config import ConfigError, DataConfig, EngineConfig, OptimConfig, TrainerConfig

STEPS_PER_PRINT = 1 << 30
"""DeepSpeed's own progress print interval: effectively never, the trainer logs itself."""


def gradient_accumulation_steps(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step on each rank: global = micro x accumulation x world."""
    if world_size < 1:
        raise ConfigError(f"world size must be positive, got {world_size}")
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step:
        hint = (
            f"set data.micro_batch_size to a divisor of {global_batch_size // world_size}"
            if global_batch_size % world_size == 0
            else "change trainer.global_batch_size"
        )
        raise ConfigError(
            f"trainer.global_batch_size {global_batch_size} is not divisible by data.micro_batch_size "
            f"{micro_batch_size} x world size {world_size} = {per_step}; {hint}"
        )
    return global_batch_size // per_step


def build_deepspeed_config(
    engine: EngineConfig, trainer: TrainerConfig, data: DataConfig, optim: OptimConfig, world_size: int
) -> dict:
    """The dict for ``deepspeed.initialize(config=...)``.

    engine: the ``deepspeed`` group; trainer: global batch; data: micro batch; optim: gradient
    clipping; world_size: data-parallel ranks (``torch.distributed`` world size).
    """
    accumulation = gradient_accumulation_steps(trainer.global_batch_size, data.micro_batch_size, world_size)
    return {
        "train_batch_size": trainer.global_batch_size,
        "train_micro_batch_size_per_gpu": data.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": float(optim.grad_clip),
        "bf16": {"enabled": engine.precision == "bf16"},
        "fp16": _fp16_section(engine),
        "zero_optimization": _zero_section(engine),
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }


def _fp16_section(engine: EngineConfig) -> dict:
    if engine.precision != "fp16":
        return {"enabled": False}
    return {
        "enabled": True,
        "loss_scale": float(engine.loss_scale),  # 0: dynamic
        "initial_scale_power": engine.initial_scale_power,
        "loss_scale_window": engine.loss_scale_window,
        "hysteresis": engine.hysteresis,
        "min_loss_scale": engine.min_loss_scale,
    }


def _zero_section(engine: EngineConfig) -> dict:
    zero = {"stage": engine.zero_stage}
    if engine.zero_stage == 0:
        return zero  # plain data parallel: the ZeRO knobs below do not apply
    zero.update(
        {
            "contiguous_gradients": engine.contiguous_gradients,
            "reduce_bucket_size": engine.reduce_bucket_size,
        }
    )
    if engine.overlap_comm is not None:
        zero["overlap_comm"] = engine.overlap_comm
    if engine.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = engine.allgather_bucket_size
    if engine.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": engine.pin_memory}
    if engine.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": engine.pin_memory}
    return zero
