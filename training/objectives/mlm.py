"""Masked language modelling, with the shards' sentence-pair task (NSP or SOP) where they have one:
BERT's pre-training objective (Devlin et al. 2018), and RoBERTa's MLM alone on shards built with
instances=none.

    loss = mlm_loss + nsp_loss        # each the mean cross-entropy of its micro batch; nsp_loss only with pairs

Statistics (``training.objectives``): mlm_loss and mlm_accuracy over the predicted tokens (masked
slots with a label), nsp_loss and nsp_accuracy over the sequences with a sentence label (only when
the shards have them; reported under the nsp_ names for SOP too). The network is the model
architecture's (``training.models``: ``BertForPreTraining`` for bert, ``ModernBertForMaskedLM`` for
modern, which has no sentence head); the losses are computed inside its forward (so a compiled
forward includes them) and returned with their counts, on the device.
"""

from __future__ import annotations

import torch
from torch import nn

from training.data import MODEL_INPUTS, dense_mlm_labels
from training.models import for_config
from training.objectives import SENTENCE_PAIR_TASKS, Objective, Statistics, device_batch

MLM_STATISTICS = ("mlm_loss", "mlm_accuracy")
SENTENCE_STATISTICS = ("nsp_loss", "nsp_accuracy")


class MaskedLanguageModeling(Objective):
    """MLM over the shards' masked positions, plus the 2-way sentence head when the shards carry
    a sentence-pair label."""

    name = "mlm"
    batch_keys = MODEL_INPUTS
    sentence_pairs = SENTENCE_PAIR_TASKS
    statistic_labels = {
        "mlm_loss": "MLM loss",
        "mlm_accuracy": "MLM accuracy",
        "nsp_loss": "NSP loss",  # SOP shards' too: one head, one name
        "nsp_accuracy": "NSP accuracy",
    }

    def __init__(self, sentence_pair: str, sparse_head: bool = True, settings: None = None):
        if settings is not None:
            raise ValueError(f"objective {self.name} has no settings, got {settings!r}")
        super().__init__(sentence_pair, sparse_head)
        self.with_sentence_head = sentence_pair != "none"
        self.statistics = MLM_STATISTICS + (SENTENCE_STATISTICS if self.with_sentence_head else ())

    def build(self, model_cfg, unpad: bool) -> nn.Module:
        if model_cfg.with_nsp_head != self.with_sentence_head:
            raise ValueError(
                f"the model's with_nsp_head={model_cfg.with_nsp_head} does not match the shards' "
                f"sentence-pair task {self.sentence_pair!r}"
            )
        return for_config(model_cfg).build_mlm(model_cfg, unpad)

    def loss(self, net, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Statistics]:
        out = net(**network_inputs(batch, self.sparse_head))
        # Losses are means over their counts: weighted back by them, so sums over micro batches
        # and ranks give the mean over every predicted token (sequence), in float64.
        stats = {
            "mlm_loss": (out.mlm_loss.detach().double() * out.mlm_count, out.mlm_count),
            "mlm_accuracy": (out.mlm_correct, out.mlm_count),
        }
        if self.with_sentence_head:
            stats["nsp_loss"] = (out.nsp_loss.detach().double() * out.nsp_count, out.nsp_count)
            stats["nsp_accuracy"] = (out.nsp_correct, out.nsp_count)
        return out.loss, stats

    def flops_per_token(self, model_cfg, seq_len: int, sparse_fraction: float | None) -> float:
        return for_config(model_cfg).flops_per_token(model_cfg, seq_len, sparse_fraction)

    def export(self, state_dict: dict[str, torch.Tensor], model_cfg, data_dir: str, out_dir: str) -> str:
        return for_config(model_cfg).export_mlm(state_dict, model_cfg, data_dir, out_dir)


def network_inputs(batch: dict[str, torch.Tensor], sparse_head: bool) -> dict[str, torch.Tensor]:
    """``BertForPreTraining``'s keyword arguments from a device batch: as they are with the sparse
    head; with a dense head, the (B, P) positions and labels become (B, T) labels."""
    if sparse_head:
        return batch
    inputs = {k: v for k, v in batch.items() if k not in ("masked_lm_positions", "masked_lm_labels")}
    inputs["dense_mlm_labels"] = dense_mlm_labels(batch)
    return inputs


def forward_inputs(batch: dict[str, torch.Tensor], device: torch.device, sparse_head: bool) -> dict:
    """``BertForPreTraining``'s keyword arguments on ``device`` from a collated batch (host
    tensors), as the trainer passes them: without the attention mask where nothing is padded
    (``device_batch``), with dense (B, T) labels where ``sparse_head`` is False."""
    return network_inputs(device_batch(batch, MODEL_INPUTS, device), sparse_head)
