"""Task kind token_classification: a tag per word (CoNLL-2003 NER), scored by entity-level F1.

Rows are word-piece windows of sentences (training/finetune/conll.py): the loss sees each word's
tag on its first piece only; a dev file's windows are decoded back to one tag per word and the
entities compared with the gold ones. The head is transformers' ``AutoModelForTokenClassification`` of
model_dir's architecture (a linear layer on every position). The interface is training/finetune/kinds.py's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from training.config import ConfigError
from training.finetune.conll import Sentence, TokenWindow, decode_windows, encode_sentences, entity_scores, read_conll
from training.finetune.kinds import TaskData, from_pretrained
from training.labels import IGNORE_INDEX

log = logging.getLogger(__name__)

METRICS = ("entity_f1", "entity_precision", "entity_recall")
"""Micro scores over all entities; evaluate also returns <TYPE>_f1 for each entity type of the file."""

_TAG = re.compile(r"^(?:O|[BI]-\S+)$")


@dataclass
class TaggedFile:
    """What evaluate needs besides the logits: the sentences (gold tags) and which words each row holds."""

    sentences: List[Sentence]
    windows: List[TokenWindow]


def check(task) -> None:
    if task.format != "conll":
        raise ConfigError(f"task.kind=token_classification reads task.format=conll, got {task.format!r}")
    if not task.labels:
        raise ConfigError(
            "task.kind=token_classification needs task.labels: the tags in id order, e.g. [O, B-PER, I-PER, ...]"
        )
    malformed = [t for t in task.labels if not _TAG.match(t)]
    if malformed or len(set(task.labels)) != len(task.labels) or "O" not in task.labels:
        raise ConfigError(
            f"task.labels must be distinct BIO tags (O, B-TYPE, I-TYPE) including O, got {list(task.labels)}"
        )
    # IOB1 files are read as BIO, so an I-X may become B-X: every type needs both.
    halves = {t[2:] for t in task.labels if t != "O"}
    lacking = sorted(f"{p}-{kind}" for kind in halves for p in "BI" if f"{p}-{kind}" not in task.labels)
    if lacking:
        raise ConfigError(f"task.labels lacks {lacking}: each entity type needs its B- and I- tag")
    unknown = [m for m in task.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"task.metrics {unknown} are not token_classification metrics {list(METRICS)}")


def load(task, path: str, tokenizer, *, split: str) -> TaskData:
    read = read_conll(path, task.labels, task.on_bad_row, task.encoding)
    if not read.sentences:
        raise ConfigError(f"{path}: no sentence to read")
    label_to_id = {tag: i for i, tag in enumerate(task.labels)}
    windows, report = encode_sentences(read.sentences, tokenizer, label_to_id, task.max_seq_length)
    log.info(
        "%s (%s): %d sentences, %d windows; %d sentences split over several windows, %d words cut to "
        "a window's length, %d words with no word piece read as [UNK], %d IOB1 entity starts read as B-; "
        "%d sentences left out for %d bad lines",
        path,
        split,
        len(read.sentences),
        report.windows,
        report.split_sentences,
        report.cut_words,
        report.empty_words,
        read.iob1_converted,
        read.dropped_sentences,
        read.skipped.total,
    )
    inputs = _padded(windows, task.max_seq_length, tokenizer.pad_token_id)
    return TaskData(
        inputs=inputs,
        examples=TaggedFile(read.sentences, windows),
        label_names=list(task.labels),
        skipped=read.skipped,
        rows_are_examples=False,
    )


def _padded(windows: List[TokenWindow], length: int, pad_id: int) -> Dict[str, torch.Tensor]:
    """(N, length) tensors: the ids, a 1/0 attention mask, segment 0 everywhere (dropped by the loop for a
    model without segments), the labels."""
    input_ids = torch.full((len(windows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(windows), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(windows), length), dtype=torch.long)
    for row, window in enumerate(windows):
        n = len(window.input_ids)
        input_ids[row, :n] = torch.tensor(window.input_ids)
        labels[row, :n] = torch.tensor(window.labels)
        mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": labels,
    }


def build_model(model_dir: str, task, label_names: Optional[List[str]]) -> tuple[torch.nn.Module, str]:
    from transformers import AutoModelForTokenClassification

    names = list(label_names or task.labels)
    return from_pretrained(
        AutoModelForTokenClassification,
        model_dir,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )


def evaluate(task, data: TaskData, outputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    tagged: TaggedFile = data.examples
    predicted = outputs["logits"].argmax(axis=-1)  # (N, T) label ids
    tags = decode_windows(tagged.windows, predicted, tagged.sentences, data.label_names or task.labels)
    scores = entity_scores([s.tags for s in tagged.sentences], tags)
    return {k: v for k, v in scores.items() if k in task.metrics or (k.endswith("_f1") and k != "entity_f1")}
