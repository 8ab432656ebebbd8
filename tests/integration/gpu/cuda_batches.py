"""Batches and weights for the CUDA tests (this folder), made the trainer's way: random examples of
varying length and masked-slot count through ``training.data.Collator``, so the batches carry real
padding rows and padding slots; and a BERT whose every weight is away from its initial value (BERT's
init leaves biases at 0 and LayerNorms at 1, which would hide a missing bias or a swapped norm).
Imported by the tests and by the engine probe they start (this folder on its PYTHONPATH)."""

from __future__ import annotations

import numpy as np
import torch

from training.data import Collator, Example
from training.model import BertConfig, BertForPreTraining

CLS, SEP, PAD = 101, 102, 0
VOCAB = 1024


def small_config(**overrides) -> BertConfig:
    """4 layers of 256 (BERT-mini's shape) over a 1,024-id vocabulary: quick, and wide enough that
    flash and memory-efficient attention take it (64-wide heads)."""
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=512,
    )
    return BertConfig(**{**fields, **overrides})


def random_examples(count: int, max_len: int, max_predictions: int, seed: int) -> list[Example]:
    """``count`` examples of 8 to ``max_len`` tokens ([CLS] A [SEP] B [SEP]), 1 to ``max_predictions``
    sorted masked positions each (never a special token); the first one is ``max_len`` long."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(count):
        n = max_len if i == 0 else int(rng.integers(8, max_len + 1))
        ids = rng.integers(SEP + 1, VOCAB, size=n)
        b_start = int(rng.integers(2, n - 2))
        ids[0], ids[b_start - 1], ids[n - 1] = CLS, SEP, SEP
        candidates = np.setdiff1d(np.arange(1, n - 1), [b_start - 1])
        k = int(rng.integers(1, min(max_predictions, len(candidates)) + 1))
        positions = np.sort(rng.choice(candidates, size=k, replace=False))
        labels = rng.integers(SEP + 1, VOCAB, size=k)
        examples.append(Example(ids, b_start, positions, labels, int(rng.integers(0, 2)), i))
    return examples


def collate(examples: list[Example], length: int, predictions: int, unpad: bool = False) -> dict[str, torch.Tensor]:
    """The trainer's fixed-shape batch (data.pad_to_max_length): T = ``length``, P = ``predictions``."""
    return Collator(PAD, True, predictions_per_seq=predictions, pad_to_length=length, unpad=unpad)(examples)


@torch.no_grad()
def perturbed_model(cfg: BertConfig, seed: int = 0, **kwargs) -> BertForPreTraining:
    """A model whose weights are BERT's init plus noise, LayerNorm weights near 1, the rest near 0: the
    same weights for the same ``seed`` (whatever ``kwargs``, e.g. unpad)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForPreTraining(cfg, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen) * 0.05
        p.copy_(1.0 + noise if "LayerNorm.weight" in name else p + noise)
    return model
