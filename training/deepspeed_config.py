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
    engine: EngineConfig,
    trainer: TrainerConfig,
    data: DataConfig,
    optim: OptimConfig,
    world_size: int,
    num_parameters: int = 0,
) -> dict:
    """The dict for ``deepspeed.initialize(config=...)``.

    engine: the ``deepspeed`` group; trainer: global batch; data: micro batch; optim: gradient
    clipping; world_size: data-parallel ranks (``torch.distributed`` world size); num_parameters:
    the model's, which sizes buckets left unset (``bucket_elements``).
    """
    accumulation = gradient_accumulation_steps(trainer.global_batch_size, data.micro_batch_size, world_size)
    return {
        "train_batch_size": trainer.global_batch_size,
        "train_micro_batch_size_per_gpu": data.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": float(optim.grad_clip),
        "bf16": {"enabled": engine.precision == "bf16"},
        "fp16": _fp16_section(engine),
        "zero_optimization": _zero_section(engine, num_parameters),
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        # The engine's throughput timer starts in forward and stops in step, synchronising the
        # device at both (DeepSpeed's default): two host syncs per micro batch for a figure the
        # trainer measures itself (training.throughput).
        "timers": {"throughput": {"enabled": False, "synchronized": False}},
        **_data_types_section(engine),
    }


def _data_types_section(engine: EngineConfig) -> dict:
    """Gradients accumulate in fp32 under bf16 where DeepSpeed can: without it they sum in bf16
    (``engine.get_data_types``), and over 8 micro batches the small terms round away (8 bits of
    mantissa: 0.125 + 0.000125 is 0.125). ZeRO-2 keeps an fp32 accumulator per gradient. Not yet the
    other stages: ZeRO-1 would step with DeepSpeed's BF16 optimizer, whose checkpoints
    ``training.export`` cannot read yet; ZeRO-0 (plain data parallel) and ZeRO-3 take no fp32
    accumulator in DeepSpeed 0.19 (stage 0 refuses the mix, stage 3 ignores it)."""
    if engine.precision == "bf16" and engine.zero_stage == 2:
        return {"data_types": {"grad_accum_dtype": "fp32"}}
    return {}


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


BUCKETS_PER_MODEL = 4
"""Buckets a model's gradients make when their size is left unset: the first reduction starts once a
quarter of backward is done, and the last waits for only a quarter's worth of gradients."""
MIN_BUCKET_ELEMENTS = 1 << 20  # a multiple of BUCKET_ALIGNMENT
DEFAULT_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's own default, for a model of unknown size
BUCKET_ALIGNMENT = 4096
"""Sized buckets are rounded up to a multiple of this: ZeRO 1-2 assert that the all-gather bucket is
a multiple of their NCCL start alignment (a few elements), and round sizes keep tensors aligned."""


def bucket_elements(given: int | None, num_parameters: int) -> int:
    """A bucket size given, or one sized to the model: DeepSpeed's 5e8 default is larger than
    BERT-Large (340M), so the whole reduction would wait for the end of backward."""
    if given is not None:
        return given
    if num_parameters <= 0:
        return DEFAULT_BUCKET_ELEMENTS
    quarter = -(-num_parameters // BUCKETS_PER_MODEL)
    return max(MIN_BUCKET_ELEMENTS, -(-quarter // BUCKET_ALIGNMENT) * BUCKET_ALIGNMENT)


def _zero_section(engine: EngineConfig, num_parameters: int = 0) -> dict:
    zero = {"stage": engine.zero_stage}
    if engine.zero_stage == 0:
        return zero  # plain data parallel: the ZeRO knobs below do not apply
    zero.update(
        {
            "contiguous_gradients": engine.contiguous_gradients,
            "reduce_bucket_size": bucket_elements(engine.reduce_bucket_size, num_parameters),
        }
    )
    if engine.overlap_comm is not None:
        zero["overlap_comm"] = engine.overlap_comm
    if engine.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = bucket_elements(engine.allgather_bucket_size, num_parameters)
    if engine.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": engine.pin_memory}
    if engine.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": engine.pin_memory}
    return zero
