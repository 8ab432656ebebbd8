"""Dataclass schemas of the fine-tuning config (``conf/finetune/finetune.yaml``).

One schema per part: the task (group ``task``, one preset per benchmark in ``conf/finetune/task``),
the optimizer and schedule (``optim``), the loop (``train``) and tracking (``logger``, the
pre-training's own schema and presets). Stored in Hydra's ConfigStore, so a misspelt key fails at
composition. Each component gets its own slice: a task kind sees ``cfg.task``, the optimizer
``cfg.optim``, the loop ``cfg.train``. Checks of one group live in its ``__post_init__``; what
only a kind knows (its formats, its metrics) is checked by the kind's ``check(task)``.

Imports neither torch nor transformers, so composing a config is fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import MISSING

from pipeline.config import PipelineConfig
from training import config as pretraining
from training.config import ConfigError, LoggerConfig, check_adam_fields

KINDS = ("classification", "regression", "token_classification", "question_answering")
ON_BAD_ROW = ("error", "skip")
DEVICES = ("auto", "cpu", "cuda")
LOG_LEVELS = PipelineConfig.LOG_LEVELS  # one list for every command's log_level


@dataclass
class TaskConfig:
    """One fine-tuning task: its files in data_dir, how to read them, its labels and metrics."""

    kind: str = MISSING
    """What the model predicts: classification, regression, token_classification or question_answering
    (the module training/finetune/kind_<kind>.py)."""
    name: str = MISSING
    """Short name of the task (sst2, mnli, polarity...), used in results.json and W&B."""
    format: str = "tsv"
    """File format, read by the kind: tsv (tab-separated, no quoting), fasttext ("__label__<label> <text>"
    per line), conll or squad."""
    train_file: str = "train.tsv"
    """Training file, relative to data_dir."""
    dev_files: Dict[str, str] = field(default_factory=dict)
    """Evaluation files by name, relative to data_dir, e.g. {dev_matched: dev_matched.tsv}; empty needs cv_folds."""
    header: bool = True
    """The tsv files start with a header line naming the columns."""
    num_columns: Optional[int] = None
    """Columns every row must have; null: as many as the header names (header: false needs it set)."""
    text_columns: List[str] = field(default_factory=list)
    """The one or two text columns (a pair is encoded [CLS] a [SEP] b [SEP]): names from the header, or
    0-based indices when header is false."""
    label_column: Optional[str] = None
    """The label column: a header name, or a 0-based index when header is false."""
    labels: Optional[List[str]] = None
    """Label values in class-id order, as written in the file; null for regression (a float label)."""
    encoding: str = "utf-8"
    """Text encoding of the files; a line that does not decode is a bad row (e.g. latin-1 reads any byte)."""
    on_bad_row: str = "error"
    """error: stop at the first bad row with file:line and why; skip: leave it out and count it by reason."""
    metrics: List[str] = field(default_factory=lambda: ["accuracy"])
    """Metrics computed on every dev file (training/finetune/metrics.py; the span kinds define their own)."""
    main_metric: str = "accuracy"
    """The metric that ranks runs of a sweep: "<metric>" on the first dev file, or "<dev name>/<metric>"."""
    max_seq_length: int = 128
    """Tokens per input including [CLS]/[SEP]; longer inputs are truncated (longest text first)."""
    cv_folds: int = 0
    """k >= 2: k-fold cross-validation on train_file (folds drawn with the run's seed); 0: train once."""
    doc_stride: int = 128
    """question_answering: tokens between the starts of two windows over a long context."""
    max_query_length: int = 64
    """question_answering: the question is cut to this many tokens."""
    max_answer_length: int = 30
    """question_answering: longest answer span, in tokens, considered when decoding."""
    n_best_size: int = 20
    """question_answering: start and end candidates kept per window when decoding."""
    version_2_with_negative: bool = False
    """question_answering: questions may have no answer (SQuAD 2.0)."""
    null_score_threshold: float = 0.0
    """question_answering (SQuAD 2.0): predict no answer when null score - best span score exceeds this."""

    def __post_init__(self):
        if self.kind == MISSING:
            return  # the schema's empty task (FinetuneConfig.task) before a preset fills it
        if self.kind not in KINDS:
            raise ConfigError(f"task.kind must be one of {KINDS}, got {self.kind!r}")
        if self.on_bad_row not in ON_BAD_ROW:
            raise ConfigError(f"task.on_bad_row must be one of {ON_BAD_ROW}, got {self.on_bad_row!r}")
        if not 8 <= self.max_seq_length <= 4096:
            raise ConfigError(f"task.max_seq_length must be in [8, 4096], got {self.max_seq_length}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ConfigError(f"task.cv_folds must be 0 (no cross-validation) or >= 2, got {self.cv_folds}")
        if "train" in (self.dev_files or {}):
            raise ConfigError(
                "task.dev_files has an entry named 'train', the name of the training file's own "
                "counts in results.json: name it otherwise (e.g. train_as_dev)"
            )
        if not self.dev_files and self.cv_folds == 0:
            raise ConfigError(f"task {self.name} has no dev_files: set task.cv_folds=k for k-fold cross-validation")
        if self.num_columns is not None and self.num_columns < 1:
            raise ConfigError(f"task.num_columns must be positive or null, got {self.num_columns}")
        if not self.metrics or self.main_metric.split("/")[-1] not in self.metrics:
            raise ConfigError(f"task.main_metric {self.main_metric!r} must be one of task.metrics {list(self.metrics)}")
        head, _, _ = self.main_metric.rpartition("/")
        if head and head not in self.dev_files:
            raise ConfigError(f"task.main_metric {self.main_metric!r} names no dev file of {list(self.dev_files)}")
        for name in ("doc_stride", "max_query_length", "max_answer_length", "n_best_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task.{name} must be positive, got {getattr(self, name)}")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and linear decay to 0 (BERT's fine-tuning recipe): pre-training's
    optimizer and schedule (training/optim.py) with these settings (``shared``)."""

    lr: Optional[float] = None
    """Peak learning rate; null: by the encoder's hidden size (training/finetune/recipe.py: 2e-5, the
    paper's, from H=768 up; 1e-4 for H 257-767; 3e-4 up to H=256). recipe=paper sets 2e-5."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never on biases and norm weights (LayerNorm, RMSNorm)."""
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam's (beta1, beta2)."""
    eps: float = 1e-6
    """Added to sqrt(v) (BERT's 1e-6)."""
    warmup_ratio: float = 0.1
    """Linear warmup over this fraction of all steps (step/warmup: the first update at lr 0), then linear
    decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""

    def __post_init__(self):
        # lr null: chosen at the start of the run (recipe.py); the other fields are checked now
        check_adam_fields(self if self.lr is not None else dataclasses.replace(self, lr=1.0))
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    def shared(self) -> pretraining.OptimConfig:
        """These settings as pre-training's optim group, which training/optim.py builds: AdamW, warmup
        over warmup_ratio of the run's steps, linear decay to 0. lr must be set (recipe.fill_in)."""
        if self.lr is None:
            raise ValueError("optim.lr is chosen (training/finetune/recipe.py) before the optimizer is built")
        return pretraining.OptimConfig(
            name="adamw",
            lr=self.lr,
            betas=list(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
            grad_clip=self.grad_clip,
            warmup_steps=None,
            warmup_ratio=self.warmup_ratio,
            schedule="linear",
            end_lr=0.0,
        )


@dataclass
class TrainLoopConfig:
    """Batches, epochs and where the loop runs."""

    batch_size: Optional[int] = None
    """Training examples per optimizer step; null: 32, or less (16, 8) so that an epoch has at least 10
    steps (training/finetune/recipe.py). recipe=paper sets 32."""
    eval_batch_size: int = 64
    """Examples per evaluation forward pass."""
    epochs: Optional[int] = None
    """Passes over the training set, the dev files evaluated after each; null: 3, or more (at most 10)
    so that training takes at least 100 steps (training/finetune/recipe.py). recipe=paper sets 3."""
    log_every: int = 50
    """Log the training loss every this many steps (and at each epoch's end)."""
    device: str = "auto"
    """auto (cuda if available, else cpu), cpu or cuda."""

    def __post_init__(self):
        for name in ("batch_size", "eval_batch_size", "epochs", "log_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.device not in DEVICES:
            raise ConfigError(f"train.device must be one of {DEVICES}, got {self.device!r}")


@dataclass
class FinetuneConfig:
    """Root of ``conf/finetune/finetune.yaml``."""

    data_dir: str = MISSING
    """The task's own directory (e.g. GLUE's SST-2/), holding task.train_file and task.dev_files."""
    model_dir: str = MISSING
    """An encoder in Hugging Face layout (config.json, weights, tokenizer): this project's BERT or ModernBERT
    export, its ELECTRA export's discriminator/, or a published one transformers' Auto classes load."""
    output_dir: str = MISSING
    """results.json (and the model if save_model) go here; a multirun job uses output_dir/<job number>."""
    seed: int = 42
    """Seeds the new head's initialisation, dropout, shuffling and the cross-validation folds."""
    log_level: str = "WARNING"
    """How much of transformers' own output shows: DEBUG all of it (its LOAD REPORT table of missing and
    unexpected weights, progress bars, warnings); otherwise its errors only, and one line of ours says
    which weights start fresh."""
    save_model: bool = False
    """Also save the fine-tuned model and tokenizer (save_pretrained) in output_dir/model."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The task preset (task=<conf/task/*.yaml>); an empty node, not a missing one, so that a sweep over
    task= still takes task.* overrides (Hydra applies them to the sweep's base config first)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def __post_init__(self):
        self.log_level = str(self.log_level).upper()
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.save_model and self.task.cv_folds:
            raise ConfigError(
                "save_model=true with task.cv_folds: cross-validation trains one model per fold, "
                "none on all the data; fine-tune without task.cv_folds to keep a model"
            )


def to_finetune_config(cfg) -> FinetuneConfig:
    """The composed Hydra config as dataclasses, every check run; keys a ``+key=value`` override
    appended are rejected (``OmegaConf.to_object`` would drop them silently)."""
    from omegaconf import OmegaConf

    from training.config import checked_object

    if OmegaConf.is_missing(cfg.task, "kind"):
        raise ConfigError("task is required: task=<preset> (python -m training.finetune --help lists them)")
    return checked_object(cfg, "training/finetune/config.py")


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore so a misspelt key fails at composition."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="finetune_schema", node=FinetuneConfig)
