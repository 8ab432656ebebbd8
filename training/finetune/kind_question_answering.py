"""Task kind question_answering: extractive QA on SQuAD v1.1 / v2.0, scored like the official script.

Rows are strided windows over the contexts (training/finetune/squad.py); a dev file's windows are
decoded together, the best span of each question over all its windows, and scored against the
gold answers. The head is transformers' ``AutoModelForQuestionAnswering`` of model_dir's architecture
(start and end logits from a linear layer on every position). The interface is training/finetune/kinds.py's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from training.config import ConfigError
from training.finetune.kinds import TaskData, from_pretrained
from training.finetune.squad import QAExample, QAWindow, best_answers, encode_examples, read_squad, squad_scores

log = logging.getLogger(__name__)

METRICS = (
    "exact_match",
    "f1",
    "total",
    "HasAns_exact_match",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact_match",
    "NoAns_f1",
    "NoAns_total",
)
"""Percentages (and question counts); HasAns_*/NoAns_* only with version_2_with_negative."""


@dataclass
class QuestionFile:
    """What evaluate needs besides the logits: the questions (contexts, gold answers) and their windows."""

    examples: List[QAExample]
    windows: List[QAWindow]


def check(task) -> None:
    if task.format != "squad":
        raise ConfigError(f"task.kind=question_answering reads task.format=squad, got {task.format!r}")
    if task.labels is not None:
        raise ConfigError("task.kind=question_answering predicts spans: task.labels must be null")
    if task.max_query_length + 3 >= task.max_seq_length:
        raise ConfigError(
            f"task.max_query_length ({task.max_query_length}) + [CLS] and two [SEP] leave no room "
            f"for the context in task.max_seq_length ({task.max_seq_length})"
        )
    unknown = [m for m in task.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"task.metrics {unknown} are not question_answering metrics {list(METRICS)}")
    split = [m for m in task.metrics if m.startswith(("HasAns_", "NoAns_"))]
    if split and not task.version_2_with_negative:
        raise ConfigError(f"task.metrics {split} need task.version_2_with_negative=true (SQuAD 2.0)")


def load(task, path: str, tokenizer, *, split: str) -> TaskData:
    read = read_squad(path, task.version_2_with_negative, task.on_bad_row, task.encoding)
    if not read.examples:
        raise ConfigError(f"{path}: no question to read")
    windows, report = encode_examples(
        read.examples, tokenizer, task.max_seq_length, task.doc_stride, task.max_query_length
    )
    log.info(
        "%s (%s): %d questions, %d windows; %d contexts over several windows, %d questions cut to "
        "max_query_length, %d answers in no window whole; %d questions left out",
        path,
        split,
        len(read.examples),
        report.windows,
        report.multi_window_examples,
        report.cut_questions,
        report.answers_in_no_window,
        read.skipped.total,
    )
    inputs = _padded(windows, task.max_seq_length, tokenizer.pad_token_id)
    return TaskData(
        inputs=inputs,
        examples=QuestionFile(read.examples, windows),
        label_names=None,
        skipped=read.skipped,
        rows_are_examples=False,
    )


def _padded(windows: List[QAWindow], length: int, pad_id: int) -> Dict[str, torch.Tensor]:
    """(N, length) ids, attention mask and segments (dropped by the loop for a model without them);
    (N,) answer start and end positions."""
    input_ids = torch.full((len(windows), length), pad_id, dtype=torch.long)
    token_types = torch.zeros((len(windows), length), dtype=torch.long)
    mask = torch.zeros((len(windows), length), dtype=torch.long)
    for row, window in enumerate(windows):
        n = window.num_tokens
        input_ids[row, :n] = torch.tensor(window.input_ids)
        token_types[row, :n] = torch.tensor(window.token_type_ids)
        mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": token_types,
        "start_positions": torch.tensor([w.start_position for w in windows], dtype=torch.long),
        "end_positions": torch.tensor([w.end_position for w in windows], dtype=torch.long),
    }


def build_model(model_dir: str, task, label_names: Optional[List[str]]) -> tuple[torch.nn.Module, str]:
    from transformers import AutoModelForQuestionAnswering

    return from_pretrained(AutoModelForQuestionAnswering, model_dir)


def evaluate(task, data: TaskData, outputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    questions: QuestionFile = data.examples
    predictions = best_answers(
        questions.examples,
        questions.windows,
        outputs["start_logits"],
        outputs["end_logits"],
        task.n_best_size,
        task.max_answer_length,
        task.version_2_with_negative,
        task.null_score_threshold,
    )
    scores = squad_scores(questions.examples, predictions, task.version_2_with_negative)
    return {k: v for k, v in scores.items() if k in task.metrics}
