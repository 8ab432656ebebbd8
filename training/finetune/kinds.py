"""Task kinds: what a fine-tuning task predicts, behind one small interface the loop calls.

A kind is the module ``training/finetune/kind_<task.kind>.py`` (classification, regression,
token_classification, question_answering), found by ``load_kind`` with importlib: adding a kind
is adding a module, there is no registry to edit. Every kind module defines the same four
functions; the loop (training/finetune/loop.py) knows nothing else about any of them:

``check(task: TaskConfig) -> None``
    Raise ConfigError for a task config this kind cannot run (an unknown format or metric, labels
    missing or given where they make no sense). Called before any file is read.

``load(task: TaskConfig, path: str, tokenizer, *, split: str) -> TaskData``
    Read one file (``path`` is data_dir joined with task.train_file or a dev file; ``split`` is
    "train" or a dev file's name) and turn it into model inputs. ``tokenizer`` is the
    ``transformers.AutoTokenizer`` of model_dir (a fast tokenizer, so offsets are available).
    Each bad row raises ``BadInputError(path, line, reason)`` under task.on_bad_row=error, or is
    recorded in ``TaskData.skipped`` under skip. Every tensor in ``inputs`` has the same first
    dimension N (the rows, or windows, the model sees), is padded to task.max_seq_length, and
    includes the label tensors the model's loss needs (``labels``, or ``start_positions`` /
    ``end_positions``), for a dev file too when its labels allow a dev loss. Padding is on the
    right: in a training batch the loop cuts every (N, T) tensor (T = attention_mask's width) to
    the batch's longest row, so a (N, T) label tensor is cut with the inputs; dev batches are
    not cut, so ``outputs`` below keep the full T. ``token_type_ids`` may be there for any model:
    the loop drops it for one whose forward takes none (ModernBERT).

``build_model(model_dir: str, task: TaskConfig, label_names: list[str] | None) -> tuple[torch.nn.Module, str]``
    The pre-trained encoder of model_dir with the kind's new head, and one line saying which
    weights start fresh and which of model_dir's are dropped (``from_pretrained`` below gives
    both, from a transformers Auto class: any architecture transformers has the head for).
    ``model(**batch)``, with ``batch`` a row slice of ``TaskData.inputs``, returns a
    transformers ``ModelOutput``: ``loss`` (when the batch has labels) and the kind's prediction
    tensors (``logits``, or ``start_logits`` and ``end_logits``). ``label_names`` is the training
    TaskData's.

``evaluate(task: TaskConfig, data: TaskData, outputs: dict[str, numpy.ndarray]) -> dict[str, float]``
    The task's metrics (the names in task.metrics) on one dev file. ``outputs`` holds every tensor
    of the model's outputs except loss (and hidden states/attentions), as float arrays concatenated
    over the rows of ``data.inputs`` in order: ``outputs["logits"]`` is (N, num_labels) for
    classification, (N, 1) for regression, (N, T, num_labels) for token classification.

Each kind also imports nothing heavy at module level beyond torch/numpy, and names its metrics in
``METRICS`` (a tuple of str) so configs can be checked against it.

A kind that predicts one class per row (classification) also defines, so that the loop can say
when a model has learnt nothing:

``majority_class(task: TaskConfig, data: TaskData) -> dict[str, float]``
    The task's metrics on ``data`` of predicting its most frequent class for every row.

``predicted_classes(outputs: dict[str, numpy.ndarray]) -> numpy.ndarray``
    The class id predicted for each row, (N,).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, BinaryIO, Optional, Sequence

from training.config import ConfigError
from training.finetune.encoder import load_pretrained

KIND_FUNCTIONS = ("check", "load", "build_model", "evaluate")
"""What every kind module defines (see this module's docstring)."""

FIRST_SKIPPED_KEPT = 5
"""How many skipped rows are kept verbatim (file:line: reason) in results.json."""


def from_pretrained(auto_class, model_dir: str, **kwargs) -> tuple[Any, str]:
    """``auto_class.from_pretrained(model_dir, **kwargs)`` (a transformers Auto class: the task head
    of model_dir's architecture, ``encoder.load_pretrained``) and one line naming the weights that start
    fresh (the new head; anything else model_dir lacks), the pre-training head's weights the task head
    takes over (ModernBERT's ``head.*``: the same dense-GELU-norm block before its classifier) and
    model_dir's weights the model has no place for (the pre-training heads: BERT's ``cls.*``, ELECTRA's
    ``discriminator_predictions.*``, ModernBERT's ``decoder.*``). transformers' own table of them (its
    LOAD REPORT) shows at log_level=DEBUG only (``loop.transformers_output``)."""
    model, info = load_pretrained(auto_class, model_dir, **kwargs)
    encoder = model.base_model_prefix + "."  # "bert.", "model.", "electra.": what is not under it is a head
    missing, dropped = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    head = [key for key in missing if not key.startswith(encoder)]
    parts = [f"new head: {', '.join(head)} start fresh" if head else "no new head weights"]
    lacking = [key for key in missing if key.startswith(encoder)]
    if lacking:
        parts.append(f"model_dir lacks {', '.join(lacking)}: they start fresh too")
    taken = [key for key in model.state_dict() if not key.startswith(encoder) and key not in info["missing_keys"]]
    kept = sorted({_prefix(key, encoder) for key in taken})
    if kept:
        parts.append(f"{', '.join(kept)} from model_dir's pre-training head")
    heads = sorted({_prefix(key, encoder) for key in dropped if not key.startswith(encoder)})
    if heads:
        parts.append(f"pre-training heads {', '.join(heads)} dropped")
    inside = sorted({_prefix(key, encoder) for key in dropped if key.startswith(encoder)})
    if inside:
        parts.append(f"model_dir's {', '.join(inside)} dropped (this model has no place for them)")
    return model, "; ".join(parts)


def _prefix(key: str, encoder: str) -> str:
    """The group a weight's name belongs to: cls.* for cls.predictions.bias, bert.pooler.* for
    bert.pooler.dense.weight (one level below the encoder's prefix)."""
    return ".".join(key.split(".")[: 2 if key.startswith(encoder) else 1]) + ".*"


def open_task_file(path: str) -> BinaryIO:
    """A task file (data_dir joined with task.train_file or a dev file) opened for reading bytes;
    ConfigError when it does not exist."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ConfigError(f"task file {path} does not exist (data_dir + task.train_file / task.dev_files)") from None


class BadInputError(ValueError):
    """A row of a task file that cannot be read: names the file, the 1-based line and why."""

    def __init__(self, path: str, line: int, reason: str):
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason} (task.on_bad_row=skip leaves such rows out and counts them)")


@dataclass
class SkippedRows:
    """Rows left out under task.on_bad_row=skip: counts by reason and the first few, for results.json."""

    counts: dict[str, int] = field(default_factory=dict)
    """Reason (a short fixed phrase, e.g. "wrong number of columns") -> rows skipped for it."""
    first: list[str] = field(default_factory=list)
    """The first FIRST_SKIPPED_KEPT skipped rows as "file:line: reason: detail"."""

    def add(self, path: str, line: int, reason: str, detail: str = "") -> None:
        self.add_at(f"{path}:{line}", reason, detail)

    def add_at(self, where: str, reason: str, detail: str = "") -> None:
        """``add`` for a row named otherwise than by file and line (``where``: e.g. a SQuAD question id)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.first) < FIRST_SKIPPED_KEPT:
            self.first.append(f"{where}: {reason}" + (f": {detail}" if detail else ""))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"total": self.total, "counts": dict(self.counts), "first": list(self.first)}


class RowPolicy:
    """What a reader does with a bad row: raise under task.on_bad_row=error, count it under skip.

    ``reject(line, reason, detail)`` raises BadInputError or records the row in ``skipped``;
    the reader then moves to the next row.
    """

    def __init__(self, on_bad_row: str, path: str):
        self.on_bad_row, self.path, self.skipped = on_bad_row, path, SkippedRows()

    def reject(self, line: int, reason: str, detail: str = "") -> None:
        if self.on_bad_row == "error":
            raise BadInputError(self.path, line, reason + (f": {detail}" if detail else ""))
        self.skipped.add(self.path, line, reason, detail)


@dataclass
class TaskData:
    """One file of a task, ready for the model and for evaluation."""

    inputs: dict[str, Any]
    """Model keyword arguments, torch tensors with the same first dimension N (labels included)."""
    examples: Any = None
    """Whatever the kind's evaluate needs besides the outputs (gold labels, offsets, answers...)."""
    label_names: Optional[list[str]] = None
    """Class names in id order (classification, token classification); None otherwise."""
    skipped: SkippedRows = field(default_factory=SkippedRows)
    """Rows left out under task.on_bad_row=skip."""
    rows_are_examples: bool = True
    """Row i of inputs is example i of ``examples`` (a sequence): rows can then be selected, e.g. into
    cross-validation folds. False for windowed kinds (a long context gives several rows)."""
    strata: Optional[list] = None
    """The class of each row, so cross-validation folds keep the class balance; None: plain folds."""

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def select(self, rows: Sequence[int]) -> "TaskData":
        """The same data restricted to ``rows`` (in that order), for cross-validation folds."""
        if not self.rows_are_examples:
            raise ConfigError("task.cv_folds needs a kind whose rows are its examples (classification or regression)")
        import torch

        index = torch.as_tensor(list(rows), dtype=torch.long)
        examples = self.examples
        if examples is not None:
            examples = [examples[i] for i in index.tolist()]
        strata = None if self.strata is None else [self.strata[i] for i in index.tolist()]
        return TaskData(
            inputs={k: v[index] for k, v in self.inputs.items()},
            examples=examples,
            label_names=self.label_names,
            skipped=self.skipped,
            rows_are_examples=True,
            strata=strata,
        )


def load_kind(kind: str) -> ModuleType:
    """The module of task kind ``kind`` (training/finetune/kind_<kind>.py), its API checked."""
    try:
        module = importlib.import_module(f"training.finetune.kind_{kind}")
    except ModuleNotFoundError as e:
        if e.name != f"training.finetune.kind_{kind}":
            raise  # the kind exists but something it imports does not
        raise ConfigError(f"task.kind {kind!r} has no module training/finetune/kind_{kind}.py") from None
    missing = [name for name in KIND_FUNCTIONS if not callable(getattr(module, name, None))]
    if missing:
        raise TypeError(f"{module.__name__} does not define {missing} (see training/finetune/kinds.py)")
    return module
