"""Dataclass schemas of the trainer's Hydra config (``conf/train/train.yaml``).

One schema per swappable group (model, objective, data, optim, deepspeed, trainer, logger), each stored in
Hydra's ConfigStore, so a misspelt key or a bad value fails when the config is composed, not an
hour into a run. Each component receives its own slice (``cfg.optim``, ``cfg.deepspeed``...).
Checks that involve a single group live in that group's ``__post_init__``; checks across groups
live in ``TrainConfig.__post_init__``. The world size is not known at composition: batch
arithmetic that depends on it is checked by ``training.deepspeed_config``.

Imports neither torch nor DeepSpeed, so composing a config is fast.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.config import StorageConfig
from pipeline.masking import MaskingParams

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("linear", "polynomial")
PRECISIONS = ("fp32", "bf16", "fp16")
LOGGER_BACKENDS = ("wandb", "none")
WANDB_MODES = ("online", "offline", "disabled")
DIST_BACKENDS = ("nccl", "gloo")


class ConfigError(ValueError):
    """A configuration that cannot run (raised while composing or when the run starts)."""


def check_adam_fields(optim) -> None:
    """The checks every optimizer schema (pre-training's and fine-tuning's ``OptimConfig``) shares:
    lr, Adam's betas and eps, weight_decay and grad_clip, named under ``optim.``."""
    if not optim.lr > 0:
        raise ConfigError(f"optim.lr must be positive, got {optim.lr}")
    if len(optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in optim.betas):
        raise ConfigError(f"optim.betas must be two values in [0, 1), got {list(optim.betas)}")
    if not optim.eps > 0 or optim.weight_decay < 0 or optim.grad_clip < 0:
        raise ConfigError("optim.eps must be positive, optim.weight_decay and optim.grad_clip >= 0")


def _positive(group: str, **values) -> None:
    for name, value in values.items():
        if value is None or value < 1:
            raise ConfigError(f"{group}.{name} must be a positive integer, got {value!r}")


@dataclass
class ModelConfig:
    """The ``model`` group: which architecture, and the fields every architecture's schema has.

    Each architecture's schema subclasses this (``training.models``: ``bert_model_schema``,
    ``modern_model_schema``); a preset YAML names its schema in its defaults list, so Hydra validates the
    node against that architecture's fields and refuses any other key."""

    architecture: str = "bert"
    """The architecture (``training.models.registered``): bert or modern. Must be its schema's."""
    max_position_embeddings: int = 512
    """Longest sequence the model takes; must cover the shards' max_seq_length."""
    vocab_size: Optional[int] = None
    """Vocabulary size; null: the shards' manifest's. If set, it must equal the manifest's."""


def check_model_fields(model: ModelConfig, positive: tuple[str, ...], fractions: tuple[str, ...]) -> None:
    """The checks every architecture's schema shares, named under ``model.``: ``positive`` fields are
    positive integers, ``fractions`` in [0, 1), hidden_size divisible by num_attention_heads."""
    _positive("model", **{name: getattr(model, name) for name in positive})
    if model.vocab_size is not None:
        _positive("model", vocab_size=model.vocab_size)
    if model.hidden_size % model.num_attention_heads:
        raise ConfigError(
            f"model.hidden_size {model.hidden_size} is not divisible by "
            f"model.num_attention_heads {model.num_attention_heads}"
        )
    for name in fractions:
        if not 0.0 <= getattr(model, name) < 1.0:
            raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(model, name)!r}")


def check_schema_is_the_architectures(model: ModelConfig, schema_name: str) -> None:
    """ConfigError unless ``model.architecture`` is the architecture ``schema_name`` is the schema of."""
    from training.models import architecture

    architecture(model.architecture)  # a registered one, or the list of them
    if model.architecture != schema_name:
        raise ConfigError(
            f"model.architecture={model.architecture} but the model preset is a {schema_name} one (its "
            f"defaults name /{schema_name}_model_schema@_here_): choose a {model.architecture} preset with model=<name> "
            f"(conf/train/model/) instead of setting model.architecture"
        )


@dataclass
class MaskingOverride:
    """The dynamic masking rule the run trains with, field by field over the one the shards' manifest
    records (``pipeline.masking.MaskingParams``'s names); null keeps the manifest's. Only for shards the
    data job left unmasked (masking=dynamic or span): static shards' masks are stored. Evaluation keeps
    the manifest's rule, so runs trained at different rates are scored on the same task (training.data)."""

    masked_lm_prob: Optional[float] = None
    """Fraction of each example's tokens to predict, in (0, 1): BERT 0.15, MosaicBERT and ModernBERT 0.3."""
    max_predictions_per_seq: Optional[int] = None
    """P, the fixed width of a batch's masked_lm_positions; null: the manifest's, or with masked_lm_prob
    set, the data job's cap for that rate (rate x length rounded up to a multiple of 4: 40 for 0.3 at 128)."""
    mask_prob: Optional[float] = None
    """Share of the chosen positions replaced by [MASK]: BERT 0.8, ELECTRA 0.85."""
    random_prob: Optional[float] = None
    """Share of the chosen positions replaced by a random id: BERT 0.1, ELECTRA 0; the rest stay as they are."""
    whole_word: Optional[bool] = None
    """Predict whole words: ## pieces with the word they continue."""
    spans: Optional[bool] = None
    """Predict SpanBERT's spans of whole words, lengths as the manifest's span_p and max_span_words say."""

    def __post_init__(self):
        # Each value alone, against MaskingParams' own checks; the sum mask_prob + random_prob is
        # checked once the manifest's values are known (training.data.training_masking).
        try:
            MaskingParams(**{"mask_prob": 0.0, "random_prob": 0.0, **self.given()})
        except ValueError as e:
            raise ConfigError(f"data.masking.{e}") from None

    def given(self) -> dict:
        """{field: value} of the fields set (not null)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass
class DataConfig:
    """Reading the shard directory (``data_dir``); the masking rule comes from its manifest, where
    ``masking`` overrides it for training on dynamic shards."""

    micro_batch_size: int = 32
    """Sequences per forward/backward pass on each GPU (DeepSpeed's train_micro_batch_size_per_gpu)."""
    eval_micro_batch_size: Optional[int] = None
    """Sequences per evaluation batch on each GPU; null: micro_batch_size."""
    max_seq_length: Optional[int] = None
    """Expected length of the shards (128 in phase 1, 512 in phase 2); null accepts the manifest's."""
    train_split: str = "train"
    """Split of the shard directory to train on."""
    eval_split: str = "eval"
    """Held-out split evaluated every trainer.eval_every steps."""
    num_workers: int = 2
    """DataLoader worker processes per rank; 0 loads in the training process."""
    prefetch_factor: int = 4
    """Batches each worker prepares ahead (ignored when num_workers is 0)."""
    pin_memory: bool = True
    """Page-locked batches for faster host-to-GPU copies (ignored on CPU)."""
    shuffle: bool = True
    """Shuffle the training examples per (seed, epoch); false reads them in shard order."""
    pad_to_multiple_of: int = 8
    """Pad each batch's length T up to a multiple of this (8 suits tensor cores; 1: the longest
    sequence of the batch). Padding is masked out: it changes shapes, not losses."""
    pad_to_max_length: bool = False
    """Pad every batch to the shards' max_seq_length instead: one shape for the whole run, so
    ``trainer.compile`` compiles once and CUDA graphs can replay (the GPU presets set it)."""
    cache_dir: Optional[str] = None
    """Node-local directory into which an s3:// or gs:// data_dir is copied and verified (sha256)
    before training, and reused by later runs (training/shard_cache.py); null: <system temp
    dir>/bert-pretrain-cache. Unused for a local data_dir."""
    cache_max_gb: Optional[float] = None
    """Most the whole shard cache (every data_dir's copy under data.cache_dir) may hold: at start, other
    data_dirs' copies are removed, least recently used first, until it fits; null: no limit. Files
    the current manifest no longer lists are removed either way."""
    masking: MaskingOverride = field(default_factory=MaskingOverride)
    """Training batches' dynamic masking over the manifest's rule (``MaskingOverride``); all null: the manifest's."""

    def __post_init__(self):
        _positive(
            "data",
            micro_batch_size=self.micro_batch_size,
            prefetch_factor=self.prefetch_factor,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        if self.eval_micro_batch_size is not None:
            _positive("data", eval_micro_batch_size=self.eval_micro_batch_size)
        if self.max_seq_length is not None and not 8 <= self.max_seq_length <= 65535:
            raise ConfigError(f"data.max_seq_length must be in [8, 65535] or null, got {self.max_seq_length}")
        if self.cache_max_gb is not None and not self.cache_max_gb > 0:
            raise ConfigError(f"data.cache_max_gb must be positive or null, got {self.cache_max_gb}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.train_split == self.eval_split:
            raise ConfigError(f"data.train_split and data.eval_split are both {self.train_split!r}")


@dataclass
class OptimConfig:
    """Optimizer, gradient clipping and learning-rate schedule (one peak lr for every group)."""

    name: str = "adamw"
    """adamw (torch.optim.AdamW; DeepSpeedCPUAdam under optimizer offload) or lamb (training.optim.Lamb)."""
    lr: float = 1e-4
    """Peak learning rate, reached at the end of warmup."""
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam's (beta1, beta2)."""
    eps: float = 1e-6
    """Added to sqrt(v) in the denominator (BERT's 1e-6)."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to LayerNorm weights or biases."""
    bias_correction: bool = True
    """LAMB: divide the moments by (1 - beta^t) as Adam does (AdamW always does)."""
    trust_ratio_for_no_decay: bool = False
    """LAMB: also scale the LayerNorm and bias updates by their trust ratio (BERT's LAMB exempts them)."""
    min_trust_ratio: float = 0.0
    """LAMB: lower bound of the trust ratio ||w|| / ||update|| (the paper's clipping function)."""
    max_trust_ratio: Optional[float] = None
    """LAMB: upper bound of the trust ratio; null leaves it unbounded."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (DeepSpeed's gradient_clipping); 0 turns clipping off."""
    warmup_steps: Optional[int] = 10000
    """Steps of linear warmup from 0 to lr; null when warmup_ratio is given."""
    warmup_ratio: Optional[float] = None
    """Warmup as a fraction of trainer.max_steps; null when warmup_steps is given."""
    schedule: str = "linear"
    """Decay after warmup: linear, or polynomial with exponent `power`, from lr to end_lr at max_steps."""
    power: float = 1.0
    """Exponent of the polynomial decay (1.0 is linear; NVIDIA's LAMB recipe uses 0.5)."""
    end_lr: float = 0.0
    """Learning rate at trainer.max_steps (and after)."""

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        check_adam_fields(self)
        if self.min_trust_ratio < 0 or (
            self.max_trust_ratio is not None and self.max_trust_ratio < max(self.min_trust_ratio, 1e-12)
        ):
            raise ConfigError(
                "optim.min_trust_ratio must be >= 0 and optim.max_trust_ratio positive and >= min_trust_ratio (or null)"
            )
        if (self.warmup_steps is None) == (self.warmup_ratio is None):
            raise ConfigError(
                "set exactly one of optim.warmup_steps and optim.warmup_ratio "
                f"(the other null); got {self.warmup_steps} and {self.warmup_ratio}"
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.power > 0:
            raise ConfigError(f"optim.power must be positive, got {self.power}")
        if not 0.0 <= self.end_lr <= self.lr:
            raise ConfigError(f"optim.end_lr must be in [0, optim.lr], got {self.end_lr}")

    def resolved_warmup_steps(self, max_steps: int) -> int:
        """Warmup length in steps: warmup_steps, or warmup_ratio of max_steps rounded."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(round(self.warmup_ratio * max_steps))


@dataclass
class EngineConfig:
    """The DeepSpeed engine (group ``deepspeed``): ZeRO stage, offload, precision, communication."""

    zero_stage: int = 2
    """ZeRO stage: 0 plain data parallel, 1 shards optimizer states, 2 also gradients, 3 also parameters."""
    offload_optimizer: bool = False
    """Keep optimizer states in CPU memory and step there with DeepSpeedCPUAdam (ZeRO 1-3, adamw only)."""
    offload_param: bool = False
    """Keep parameters in CPU memory between uses (ZeRO 3 only)."""
    pin_memory: bool = True
    """Page-locked CPU buffers for offloaded states (faster copies, more host memory)."""
    precision: str = "bf16"
    """fp32; bf16 (no loss scaling needed); fp16 (dynamic loss scaling below)."""
    loss_scale: float = 0.0
    """fp16: a static loss scale, or 0 for dynamic loss scaling."""
    initial_scale_power: int = 16
    """fp16 dynamic scaling: start at a loss scale of 2**initial_scale_power."""
    loss_scale_window: int = 1000
    """fp16 dynamic scaling: raise the scale after this many steps without overflow."""
    hysteresis: int = 2
    """fp16 dynamic scaling: overflows tolerated before the scale is lowered."""
    min_loss_scale: int = 1
    """fp16 dynamic scaling: never go below this scale."""
    overlap_comm: Optional[bool] = True
    """Overlap gradient reduction with backward (ZeRO 1-3): buckets are reduced while backward runs; null: DeepSpeed's default (off for stages 1-2)."""
    contiguous_gradients: bool = True
    """Copy gradients into one buffer as they are produced (less fragmentation, ZeRO 1-3)."""
    reduce_bucket_size: Optional[int] = None
    """Elements reduced at once (ZeRO 1-3); null: a quarter of the model's parameters (at least 2**20), so reduction overlaps backward."""
    allgather_bucket_size: Optional[int] = None
    """Elements all-gathered at once after the step (ZeRO 1-2); null: sized as reduce_bucket_size."""

    def __post_init__(self):
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"deepspeed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage < 1:
            raise ConfigError(
                "deepspeed.offload_optimizer needs ZeRO stage 1, 2 or 3 "
                "(DeepSpeed offloads the optimizer states it partitions)"
            )
        if self.offload_param and self.zero_stage != 3:
            raise ConfigError("deepspeed.offload_param needs ZeRO stage 3 (only stage 3 partitions parameters)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"deepspeed.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.loss_scale < 0:
            raise ConfigError("deepspeed.loss_scale must be >= 0 (0 = dynamic)")
        _positive(
            "deepspeed",
            loss_scale_window=self.loss_scale_window,
            hysteresis=self.hysteresis,
            min_loss_scale=self.min_loss_scale,
        )
        for name in ("reduce_bucket_size", "allgather_bucket_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"deepspeed.{name} must be positive or null (sized to the model)")
        if self.initial_scale_power < 0:
            raise ConfigError("deepspeed.initial_scale_power must be >= 0")


@dataclass
class TrainerConfig:
    """Length of the run, batch, cadence of logging, evaluation and checkpoints, start weights."""

    max_steps: int = 900_000
    """Optimizer steps of this run (BERT: 900k at length 128, then 100k at 512)."""
    global_batch_size: int = 256
    """Sequences per optimizer step over all ranks = micro_batch_size x accumulation x world size."""
    log_every: int = 100
    """Log training metrics every this many steps."""
    eval_every: int = 10_000
    """Evaluate on the held-out split every this many steps (and at the end); 0: only at the end."""
    eval_steps: Optional[int] = 100
    """Batches per evaluation on each rank; null: the whole eval split."""
    checkpoint_every: int = 5_000
    """Save a DeepSpeed checkpoint every this many steps (and at the end)."""
    keep_last_k: int = 3
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    resume: bool = True
    """Resume from the latest complete checkpoint in output_dir if there is one."""
    force_resume: bool = False
    """Resume even when the config differs from the checkpoint's in keys outside RESUMABLE_KEYS
    (the model's architecture still has to match)."""
    max_nonfinite_in_a_row: int = 10
    """Stop the run after this many consecutive non-finite losses (each one skips its update)."""
    init_from: Optional[str] = MISSING
    """Weights to start from (optimizer, schedule and step start fresh): null (random init); for phase 2,
    phase 1's output_dir/hf (or a model.safetensors in our names); for continued pre-training, a
    published BERT in Hugging Face layout (config.json, model.safetensors or pytorch_model.bin,
    vocab.txt; BertForPreTraining or a bare BertModel), whose architecture must be model.*'s and whose
    vocab.txt the shards' (tokenizer=vocab_file tokenizer.vocab_file=<dir>/vocab.txt); tensors it
    lacks (MLM/NSP heads) start fresh, listed in the log and run_config.json. Every trainer preset
    sets it, so phase2 fails to compose without it. Ignored when resuming."""
    sparse_mlm_head: bool = True
    """Run the MLM head on masked positions only; false runs it on every token (transformers' layout)."""
    compile: bool = False
    """torch.compile the model before DeepSpeed wraps it."""
    record_example_ids: bool = True
    """Write each step's example ids (all ranks) to steps.jsonl: a record of what every step trained
    on. About 5 KB a step at a global batch of 256 (5 GB over 1M steps): the phase presets leave it off."""
    unpad: bool = False
    """Run the encoder's dense layers on real tokens only, padding removed around attention
    (training.model.Unpadded): pays when batches carry much padding, e.g. phase 2 at 512."""
    export_hf: bool = True
    """Write a Hugging Face export (config.json, model.safetensors, vocabulary) to output_dir/hf at the end."""
    peak_tflops: Optional[float] = None
    """Peak dense TFLOP/s of one device for MFU; null: from the known-GPU table, or no MFU."""
    dist_backend: Optional[str] = None
    """torch.distributed backend: nccl or gloo; null: nccl on CUDA, gloo on CPU."""
    dist_timeout_minutes: int = 30
    """Timeout of collective operations (raise for slow checkpoint saves on shared filesystems)."""
    deterministic: bool = False
    """Deterministic kernels (``torch.use_deterministic_algorithms``, cuBLAS workspace config): on a GPU
    a resumed run then repeats the uninterrupted one bit for bit, slower; on CPU it already does."""

    def __post_init__(self):
        _positive(
            "trainer",
            max_steps=self.max_steps,
            global_batch_size=self.global_batch_size,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            keep_last_k=self.keep_last_k,
            max_nonfinite_in_a_row=self.max_nonfinite_in_a_row,
            dist_timeout_minutes=self.dist_timeout_minutes,
        )
        if self.eval_every < 0:
            raise ConfigError(f"trainer.eval_every must be >= 0, got {self.eval_every}")
        if self.eval_steps is not None:
            _positive("trainer", eval_steps=self.eval_steps)
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"trainer.peak_tflops must be positive or null, got {self.peak_tflops}")
        if self.dist_backend is not None and self.dist_backend not in DIST_BACKENDS:
            raise ConfigError(f"trainer.dist_backend must be one of {DIST_BACKENDS} or null, got {self.dist_backend!r}")


RESUMABLE_KEYS: dict[str, str] = {
    "output_dir": "where the run lives: a moved output_dir holds the same run",
    "data_dir": "compared by the shards' identity (vocabulary and shard sha256s, masking), not by path",
    "trainer.max_steps": "the run's length; the schedule is recomputed for it (optim.restore_schedule_position)",
    "trainer.log_every": "when metrics are reported, not what is trained",
    "trainer.eval_every": "evaluation reads the eval split under fork_rng: it never moves training",
    "trainer.eval_steps": "as eval_every: how much of the eval split is read",
    "trainer.checkpoint_every": "when the state is saved; a resume restores it exactly",
    "trainer.keep_last_k": "how many saved checkpoints are kept on disk",
    "trainer.resume": "whether to resume at all",
    "trainer.force_resume": "the override of this very check",
    "trainer.max_nonfinite_in_a_row": "when a diverging run gives up; every step taken is the same",
    "trainer.record_example_ids": "what steps.jsonl records",
    "trainer.export_hf": "whether the final weights are also exported",
    "trainer.peak_tflops": "only the MFU figure",
    "trainer.dist_timeout_minutes": "how long a collective may wait",
    "trainer.deterministic": "which kernels compute the steps, not what they compute (the order of a sum on a GPU)",
    "data.num_workers": "how batches are loaded, not which (the order is index arithmetic, tested equal)",
    "data.prefetch_factor": "as num_workers",
    "data.pin_memory": "as num_workers",
    "data.eval_micro_batch_size": "evaluation batching; its means are weighted by counts",
    "data.cache_dir": "where a node keeps its verified copy of object-store shards (compared as data_dir)",
    "data.cache_max_gb": "how much of other data_dirs' copies a node keeps, not which shards are read",
    "storage": "how object-store shards are reached, not which: their content is compared as data_dir",
    "logger": "tracking only (every logger.* key); a resume continues the checkpoint's W&B run",
}
"""Config keys (dotted; a group name covers all its keys) that may differ between a checkpoint's
run and the run resuming it, each with why that is safe: none changes what the resumed steps
compute. Any other difference stops the resume (``training.checkpoint.check_resumable``) unless
``trainer.force_resume=true``."""


def is_resumable_key(key: str) -> bool:
    """Whether a dotted config key is in RESUMABLE_KEYS or in a group listed there."""
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config dict as {dotted key: value}; lists are values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


ABSENT = "<absent>"
"""The value shown for a key that one of two compared configs does not have."""


def objective_compared(flat: dict) -> dict:
    """A flat config (``flat_config``) as a resume compares it: ``objective.name`` filled in where
    the record predates the objective group (``OBJECTIVE_BEFORE_THE_GROUP``), and the settings of
    the objectives not chosen left out (they change nothing the run computes)."""
    name = flat.get("objective.name", OBJECTIVE_BEFORE_THE_GROUP)
    unused = tuple(f"objective.{field_name}." for field_name in objective_settings_fields() - {name})
    compared = {k: v for k, v in flat.items() if not k.startswith(unused)}
    compared["objective.name"] = name
    return compared


@functools.lru_cache(maxsize=1)
def schema_defaults() -> dict:
    """{dotted key: default} of ``TrainConfig`` as the schema declares it (required keys as "???")."""
    return flat_config(OmegaConf.to_container(OmegaConf.structured(TrainConfig), throw_on_missing=False))


def with_added_keys(saved: dict, current: dict) -> dict:
    """A saved flat config with the keys only ``current`` has filled in with their schema default.
    A key added to the schema after a run was recorded defaults to what runs did before it existed
    (``data.masking.*`` null: the manifest's masking; ``model.architecture`` bert; ``objective.name``
    mlm), so a record without it reads as that default; a key the schema does not know stays absent."""
    defaults = schema_defaults()
    added = {k: defaults[k] for k in current.keys() - saved.keys() if k in defaults}
    return {**saved, **added}


def config_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every dotted key outside RESUMABLE_KEYS whose
    values differ between two resolved configs (nested dicts), sorted by key. A key the saved config
    lacks reads as its schema default (``with_added_keys``); of the objective group, only the name
    and the chosen objective's settings count (``objective_compared``)."""
    new = objective_compared(flat_config(current))
    old = objective_compared(with_added_keys(flat_config(saved), new))
    return [
        (key, old.get(key, ABSENT), new.get(key, ABSENT))
        for key in sorted(old.keys() | new.keys())
        if not is_resumable_key(key) and old.get(key, ABSENT) != new.get(key, ABSENT)
    ]


SHAPES_NETWORK = {"shapes_network": True}
"""dataclasses.field metadata of an objective's setting that changes the shapes of the network it
trains: a checkpoint differing in one never resumes (``objective_network_keys``)."""


@dataclass
class ElectraConfig:
    """The ELECTRA objective (``training.objectives.electra``); the discriminator's architecture is the model's."""

    generator_size_fraction: float = field(default=0.25, metadata=SHAPES_NETWORK)
    """Generator width (hidden, heads, feed-forward) over the discriminator's; paper: 1/4 Small, Large; 1/3 Base."""
    discriminator_weight: float = 50.0
    """lambda: weight of the discriminator's binary cross-entropy against the generator's MLM loss (paper: 50)."""
    temperature: float = 1.0
    """Softmax temperature of the generator's samples (1: its own distribution, as in the paper)."""
    embedding_size: Optional[int] = field(default=None, metadata=SHAPES_NETWORK)
    """Width E of the shared embedding tables; None: the discriminator's hidden size (Base, Large); Small: 128."""

    def __post_init__(self) -> None:
        if not 0.0 < self.generator_size_fraction <= 1.0:
            raise ConfigError(
                f"objective.electra.generator_size_fraction={self.generator_size_fraction} must be in (0, 1] "
                "(the paper found 1/4 to 1/2 best)"
            )
        if not self.discriminator_weight > 0.0:
            raise ConfigError(
                f"objective.electra.discriminator_weight={self.discriminator_weight} must be positive (paper: 50)"
            )
        if not self.temperature > 0.0:
            raise ConfigError(
                f"objective.electra.temperature={self.temperature} must be positive (1.0 samples the softmax)"
            )
        if self.embedding_size is not None and (
            not isinstance(self.embedding_size, int) or isinstance(self.embedding_size, bool) or self.embedding_size < 1
        ):
            raise ConfigError(
                f"objective.electra.embedding_size={self.embedding_size!r} must be a positive int or null"
            )


@dataclass
class ObjectiveConfig:
    """What the run trains (group ``objective``): one of ``training.objectives.registered()`` by name,
    checked before anything is built (``training.preflight.objective_for``). The settings of the
    objective called X, where it has any, are the field named X (a dataclass); only the chosen
    objective's are read, compared on a resume and shown as the run's."""

    name: str = "mlm"
    """mlm (BERT's masked LM, with the shards' NSP/SOP head if any) or electra (replaced-token detection)."""
    electra: ElectraConfig = field(default_factory=ElectraConfig)
    """ELECTRA's settings (objective=electra): generator size, loss weight, sampling temperature, embedding width."""

    def settings(self):
        """The chosen objective's settings dataclass, None for an objective without settings (mlm)."""
        return getattr(self, self.name) if self.name in objective_settings_fields() else None


def objective_settings_fields() -> set[str]:
    """The fields of ``ObjectiveConfig`` that hold an objective's settings, each named as its objective."""
    return {f.name for f in dataclasses.fields(ObjectiveConfig)} - {"name"}


def objective_network_keys() -> set[str]:
    """Objective keys that shape the network trained (the name, and each objective's settings marked
    ``SHAPES_NETWORK``): a checkpoint that differs in one can not be resumed at all, not even with
    trainer.force_resume (``training.checkpoint.check_resumable``)."""
    keys = {"objective.name"}
    for settings in dataclasses.fields(ObjectiveConfig):
        if settings.name != "name":
            keys |= {
                f"objective.{settings.name}.{f.name}"
                for f in dataclasses.fields(settings.default_factory)
                if f.metadata.get("shapes_network")
            }
    return keys


OBJECTIVE_BEFORE_THE_GROUP = "mlm"
"""What every run trained before the config chose its objective: a run record without ``objective`` keys."""


@dataclass
class LoggerConfig:
    """Experiment tracking on rank 0. No API key here: W&B reads WANDB_API_KEY or ~/.netrc."""

    backend: str = "wandb"
    """wandb, or none (metrics only in the terminal; wandb is not imported)."""
    mode: str = "online"
    """W&B mode: online, offline (synced later with `wandb sync`) or disabled."""
    project: str = "bert-pretraining"
    """W&B project."""
    entity: Optional[str] = None
    """W&B team or user; null: the account's default."""
    name: Optional[str] = None
    """Run name shown in W&B; null: W&B picks one."""
    group: Optional[str] = None
    """W&B group, e.g. to put phase 1 and phase 2 side by side."""
    tags: List[str] = field(default_factory=list)
    """W&B tags."""
    dir: Optional[str] = None
    """Where W&B writes its files; null: output_dir."""

    def __post_init__(self):
        if self.backend not in LOGGER_BACKENDS:
            raise ConfigError(f"logger.backend must be one of {LOGGER_BACKENDS}, got {self.backend!r}")
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode must be one of {WANDB_MODES}, got {self.mode!r}")


@dataclass
class TrainConfig:
    """Root of ``conf/train/train.yaml``."""

    data_dir: str = MISSING
    """The Beam job's output directory (manifest.json, vocab.txt, train/ and eval/ shards)."""
    output_dir: str = MISSING
    """Checkpoints, Hugging Face export and W&B files; a run resumes from what it finds here.
    Also Hydra's run directory, so every rank resolves the same one (no timestamp in it); a
    multirun job uses Hydra's job directory output_dir/<job number> instead."""
    seed: int = 1234
    """Seeds initialisation, dropout, shuffling and dynamic masking (with rank, epoch and sample)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The architecture and its size: a preset of conf/train/model/, validated by its architecture's schema."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: EngineConfig = field(default_factory=EngineConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """What the run trains and that objective's settings (conf/train/objective/)."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """How an s3:// data_dir is reached (endpoint, region, CA bundle); credentials only from the environment."""

    def __post_init__(self):
        check_consistency(self)


def check_consistency(cfg: TrainConfig) -> None:
    """Checks across groups that need no knowledge of the world size or the shards."""
    if cfg.optim.name == "lamb" and cfg.deepspeed.zero_stage != 0:
        # ZeRO 1-3 hand the optimizer one flat fp32 buffer per param group (a rank's partition),
        # so LAMB's per-tensor trust ratio ||w|| / ||update|| would be taken over that buffer.
        offload = " (and ZeRO-Offload steps with DeepSpeedCPUAdam only)" if cfg.deepspeed.offload_optimizer else ""
        raise ConfigError(
            f"optim.name=lamb needs deepspeed.zero_stage=0, got {cfg.deepspeed.zero_stage}: ZeRO flattens "
            f"parameters into per-rank partitions, so LAMB's per-tensor trust ratio cannot be taken{offload}; "
            "use deepspeed=zero0, or optim=adamw with ZeRO"
        )
    if cfg.trainer.global_batch_size % cfg.data.micro_batch_size:
        raise ConfigError(
            f"trainer.global_batch_size {cfg.trainer.global_batch_size} is not a multiple "
            f"of data.micro_batch_size {cfg.data.micro_batch_size}"
        )
    warmup = cfg.optim.resolved_warmup_steps(cfg.trainer.max_steps)
    if warmup > cfg.trainer.max_steps:
        raise ConfigError(f"optim.warmup_steps {warmup} exceeds trainer.max_steps {cfg.trainer.max_steps}")
    if cfg.data.max_seq_length is not None and cfg.data.max_seq_length > cfg.model.max_position_embeddings:
        raise ConfigError(
            f"data.max_seq_length {cfg.data.max_seq_length} exceeds "
            f"model.max_position_embeddings {cfg.model.max_position_embeddings}"
        )


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """The composed Hydra config as dataclasses, every check run.

    Besides ``OmegaConf.to_object`` (types, ``__post_init__`` checks, missing values), rejects keys
    that a ``+key=value`` override appended: Hydra lets those past the schema and
    ``to_object`` would drop them silently (a misspelt ``+optim.lr_peak`` would do nothing).
    """
    train_cfg = checked_object(cfg, "training/config.py")
    check_model_schema(train_cfg.model)
    return train_cfg


def train_config_from_record(config: dict) -> TrainConfig:
    """The TrainConfig of a run from its record's resolved config (``run_config.json``'s "config",
    as ``training.models.upgraded_record`` reads it): the model node validated by its
    architecture's schema, keys a newer schema added at their defaults, every check of
    ``to_train_config`` run; ConfigError for a key this schema does not have."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    from training.models import NAME_KEY, architecture

    base = OmegaConf.structured(TrainConfig)
    model = config.get("model") or {}
    base.model = OmegaConf.structured(architecture(model.get(NAME_KEY, ModelConfig.architecture)).schema)
    try:
        merged = OmegaConf.merge(base, config)
    except (ConfigKeyError, ValidationError) as e:
        raise ConfigError(f"the run's recorded config does not fit this trainer's schema: {e.msg}") from e
    return to_train_config(merged)


def check_model_schema(model: ModelConfig) -> None:
    """ConfigError unless the ``model`` node was validated by its architecture's schema: a preset
    YAML without ``defaults: [/<architecture>_model_schema@_here_, _self_]`` composes against the common fields only."""
    from training.models import architecture

    schema = architecture(model.architecture).schema
    if type(model) is not schema:
        raise ConfigError(
            f"the model preset was validated as {type(model).__name__}, not model.architecture="
            f"{model.architecture}'s {schema.__name__}: begin its YAML with 'defaults: "
            f"[/{model.architecture}_model_schema@_here_, _self_]' (as conf/train/model/base.yaml)"
        )


def checked_object(cfg: DictConfig, schema_file: str):
    """``OmegaConf.to_object(cfg)``, refusing keys outside the schema (``schema_file`` is named in
    the error): Hydra lets a ``+key=value`` override past the schema and ``to_object`` drops it."""
    extra = _keys_outside_schema(cfg, "")
    if extra:
        raise ConfigError(f"unknown config keys {extra} (added with '+'?); see {schema_file} for the schema")
    return OmegaConf.to_object(cfg)


def _keys_outside_schema(node: DictConfig, prefix: str) -> list[str]:
    schema = OmegaConf.get_type(node)
    names = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    extra = []
    for key, child in node.items_ex(resolve=False):
        if names is not None and key not in names:
            extra.append(f"{prefix}{key}")
        elif isinstance(child, DictConfig):
            extra += _keys_outside_schema(child, f"{prefix}{key}.")
    return extra


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore so a misspelt key fails at composition."""
    from hydra.core.config_store import ConfigStore

    from training.models import SCHEMA_SUFFIX, registered

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, arch in registered().items():  # each preset YAML names its architecture's schema
        # outside the model group, so --help lists presets only; a preset pulls it in at its own package
        cs.store(name=f"{name}{SCHEMA_SUFFIX}", node=arch.schema)
