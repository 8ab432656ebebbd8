"""Kind ``classification``: one label per text or text pair, predicted from [CLS].

The head is transformers' ``AutoModelForSequenceClassification`` of model_dir's architecture
(``BertForSequenceClassification``: dropout and one linear layer on the pooled [CLS] state;
``ModernBertForSequenceClassification``: a dense-GELU-norm block on [CLS], then the linear layer;
``ElectraForSequenceClassification``: two layers on [CLS]), cross-entropy loss. Texts come from the
readers in training/finetune/glue.py (task.format tsv or fasttext); a label that is not one of
task.labels is a bad row. Metrics: accuracy, f1 (class 1 of two), matthews.
"""

from __future__ import annotations

import numpy as np
import torch

from training.config import ConfigError
from training.finetune import glue
from training.finetune.config import TaskConfig
from training.finetune.kinds import RowPolicy, TaskData, from_pretrained
from training.finetune.metrics import CLASSIFICATION_METRICS

METRICS = tuple(CLASSIFICATION_METRICS)


def check(task: TaskConfig) -> None:
    glue.check_format(task)
    if not task.labels or len(set(task.labels)) != len(task.labels) or len(task.labels) < 2:
        raise ConfigError(f"task.labels must list two or more distinct labels for classification, got {task.labels}")
    unknown = [m for m in task.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"task.metrics {unknown} are not classification metrics {METRICS}")
    if "f1" in task.metrics and len(task.labels) != 2:
        raise ConfigError(f"task.metrics f1 is the F1 of class 1 of two; task.labels has {len(task.labels)}")


def encode(tokenizer, examples: list[glue.TextExample], max_seq_length: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids (when the tokenizer returns them: not ModernBERT's), attention_mask,
    each (N, max_seq_length): [CLS] a [SEP] (b [SEP]), the longer text cut first."""
    first = [e.texts[0] for e in examples]
    second = [e.texts[1] for e in examples] if len(examples[0].texts) == 2 else None
    encoded = tokenizer(
        first, second, truncation="longest_first", max_length=max_seq_length, padding="max_length", return_tensors="pt"
    )
    return {k: v for k, v in encoded.items() if k in ("input_ids", "token_type_ids", "attention_mask")}


def read_rows(task: TaskConfig, path: str, label_value) -> tuple[list[glue.TextExample], list, RowPolicy]:
    """The file's rows whose label ``label_value(row)`` accepts (it returns None after rejecting
    the row through the policy), with the accepted label values."""
    policy = RowPolicy(task.on_bad_row, path)
    kept, values = [], []
    for example in glue.READERS[task.format](path, task, policy):
        value = label_value(example, policy)
        if value is not None:
            kept.append(example)
            values.append(value)
    if not kept:
        raise ConfigError(f"{path} holds no usable rows ({policy.skipped.total} skipped: {policy.skipped.counts})")
    return kept, values, policy


def load(task: TaskConfig, path: str, tokenizer, *, split: str) -> TaskData:
    ids = {label: i for i, label in enumerate(task.labels)}

    def label_id(example: glue.TextExample, policy: RowPolicy):
        if example.label not in ids:
            policy.reject(
                example.line, "unknown label", f"{example.label!r} is not one of task.labels {list(task.labels)}"
            )
            return None
        return ids[example.label]

    examples, label_ids, policy = read_rows(task, path, label_id)
    inputs = encode(tokenizer, examples, task.max_seq_length)
    inputs["labels"] = torch.tensor(label_ids, dtype=torch.long)  # (N,)
    return TaskData(
        inputs=inputs, examples=examples, label_names=list(task.labels), skipped=policy.skipped, strata=label_ids
    )


def build_model(model_dir: str, task: TaskConfig, label_names) -> tuple[torch.nn.Module, str]:
    from transformers import AutoModelForSequenceClassification

    return from_pretrained(
        AutoModelForSequenceClassification,
        model_dir,
        num_labels=len(label_names),
        problem_type="single_label_classification",
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )


def predicted_classes(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return outputs["logits"].argmax(axis=-1)  # (N,)


def evaluate(task: TaskConfig, data: TaskData, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    gold = data.inputs["labels"].numpy()
    return {name: CLASSIFICATION_METRICS[name](predicted_classes(outputs), gold) for name in task.metrics}


def majority_class(task: TaskConfig, data: TaskData) -> dict[str, float]:
    """The metrics of predicting data's most frequent class (the lowest id of a tie) for every row:
    what a model that learnt nothing scores (for accuracy, that class's share)."""
    gold = data.inputs["labels"].numpy()
    constant = np.full_like(gold, np.bincount(gold).argmax())
    return {name: CLASSIFICATION_METRICS[name](constant, gold) for name in task.metrics}
