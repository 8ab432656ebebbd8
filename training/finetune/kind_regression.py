"""Kind ``regression``: one score per text or text pair (GLUE's STS-B), predicted from [CLS].

transformers' ``AutoModelForSequenceClassification`` (kind_classification's head) with one output and
mean squared error
(num_labels=1, problem_type regression). The label column must hold a number; task.labels is
null. Metrics: pearson, spearman.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from training.config import ConfigError
from training.finetune import glue
from training.finetune.config import TaskConfig
from training.finetune.kind_classification import encode, read_rows
from training.finetune.kinds import RowPolicy, TaskData, from_pretrained
from training.finetune.metrics import REGRESSION_METRICS

METRICS = tuple(REGRESSION_METRICS)


def check(task: TaskConfig) -> None:
    glue.check_format(task)
    if task.labels is not None:
        raise ConfigError(f"task.labels must be null for regression (the label is a number), got {task.labels}")
    unknown = [m for m in task.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"task.metrics {unknown} are not regression metrics {METRICS}")


def load(task: TaskConfig, path: str, tokenizer, *, split: str) -> TaskData:
    def score(example: glue.TextExample, policy: RowPolicy):
        try:
            value = float(example.label)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            policy.reject(example.line, "label is not a number", repr(example.label))
            return None
        return value

    examples, scores, policy = read_rows(task, path, score)
    inputs = encode(tokenizer, examples, task.max_seq_length)
    inputs["labels"] = torch.tensor(scores, dtype=torch.float32)  # (N,)
    return TaskData(inputs=inputs, examples=examples, skipped=policy.skipped)


def build_model(model_dir: str, task: TaskConfig, label_names) -> tuple[torch.nn.Module, str]:
    from transformers import AutoModelForSequenceClassification

    return from_pretrained(AutoModelForSequenceClassification, model_dir, num_labels=1, problem_type="regression")


def evaluate(task: TaskConfig, data: TaskData, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    predictions = outputs["logits"][:, 0]  # (N,)
    gold = data.inputs["labels"].numpy()
    return {name: REGRESSION_METRICS[name](predictions, gold) for name in task.metrics}
