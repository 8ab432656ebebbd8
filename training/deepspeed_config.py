"""The DeepSpeed config dict, built from the Hydra config: the one place batch sizes, clipping,
precision and ZeRO settings are turned into DeepSpeed's keys (no hand-kept JSON repeating them).

Keys follow DeepSpeed 0.19 (``deepspeed/runtime/config.py``, ``runtime/zero/config.py``,
``runtime/precision_config.py``); its sub-sections reject unknown keys.

Precision: fp32; bf16 with fp32 gradient sums at every ZeRO stage (``_bf16_sections``: bf16 weights
at ZeRO 1-3, fp32 weights under torch autocast at stage 0); fp16 with DeepSpeed's loss scaling.

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
            f"set data.micro_batch_size to a divisor of {global_batch_size // world_size}, or "
            f"trainer.global_batch_size to a multiple of {per_step}"
            if global_batch_size % world_size == 0
            else f"set trainer.global_batch_size to a multiple of {per_step}"
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
        "bf16": {"enabled": bf16_weights(engine)},
        "fp16": _fp16_section(engine),
        "zero_optimization": _zero_section(engine, num_parameters),
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        # The engine's throughput timer starts in forward and stops in step, synchronising the
        # device at both (DeepSpeed's default): two host syncs per micro batch for a figure the
        # trainer measures itself (training.throughput).
        "timers": {"throughput": {"enabled": False, "synchronized": False}},
        **_bf16_sections(engine),
    }


def bf16_weights(engine: EngineConfig) -> bool:
    """Whether DeepSpeed keeps the weights in bf16 (its ``bf16`` mode, with fp32 masters in the
    optimizer): ZeRO 1-3 under bf16. Stage 0 under bf16 keeps them in fp32 and runs the compute
    under torch autocast instead (``_bf16_sections``)."""
    return engine.precision == "bf16" and engine.zero_stage > 0


def _bf16_sections(engine: EngineConfig) -> dict:
    """Under bf16, gradients are summed in fp32, over the micro batches of a step and over the ranks:
    summed in bf16 (8 bits of mantissa) the small terms round away, 0.125 + 2^-13 is 0.125, a wrong
    result rather than a slow one. How, per ZeRO stage, in DeepSpeed 0.19 (measured against DeepSpeed's
    bf16 defaults on real engines: tests/integration/test_deepspeed_engine.py):

    - ZeRO 1-3: bf16 weights and ``data_types.grad_accum_dtype`` fp32. ZeRO-2 and 3 add each micro
      batch's gradient partition into an fp32 buffer. ZeRO-1 steps with DeepSpeed's BF16_Optimizer
      instead of its ZeRO optimizer: fp32 sums, reduced once per step after backward (not overlapped
      with it: ``overlap_comm`` and the bucket sizes do not apply to that optimizer), and checkpoints
      that DeepSpeed's ``zero_to_fp32`` cannot read (``training.export`` reads them). With optimizer
      offload ZeRO-1 keeps its ZeRO optimizer, with an fp32 sum per gradient.
    - ZeRO-0 (plain data parallel) refuses that mix (``unsupported mix of model_dtype=torch.bfloat16
      and grad_accum_dtype=torch.float32``). Its weights, gradients and optimizer states stay fp32
      and only the compute runs in bf16, under torch autocast (DeepSpeed's ``torch_autocast``):
      DeepSpeed then steps the optimizer as given, as in fp32 (it skips no non-finite step, see
      ``optim.SkipNonFiniteStep``), and the checkpoint's weights are the fp32 ones. ``bf16.enabled``
      stays off: DeepSpeed does not reject both, but then casts the weights to bf16 and sums the
      gradients in bf16 again.
    - ``communication_data_type`` fp32: under bf16 DeepSpeed reduces in bf16 unless told, which rounds
      ZeRO-1's fp32 sum once more (measured: 0.125977 for 0.125854, where bf16 accumulation gives
      0.125) and sums the ranks' gradients in bf16. Twice the gradient bytes of a bf16 reduction,
      as Megatron-LM and torchtitan reduce bf16 gradients.
    """
    if engine.precision != "bf16":
        return {}
    if engine.zero_stage == 0:
        return {"torch_autocast": {"enabled": True, "dtype": "bfloat16"}, "communication_data_type": "fp32"}
    return {"data_types": {"grad_accum_dtype": "fp32"}, "communication_data_type": "fp32"}


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
