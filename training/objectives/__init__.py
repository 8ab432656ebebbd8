"""What a pre-training objective is to the trainer, and the objectives there are.

An objective builds the network it trains from the model's config, reads a batch, and returns the
loss to backpropagate with its named statistics. The trainer drives any of them the same way:

    objective = create("mlm", sentence_pair=manifest.objective, sparse_head=True)
    net = objective.build(model_cfg, unpad)                    # under DeepSpeed: the engine wraps it
    loss, stats = objective.loss(net, device_batch(batch, objective.batch_keys, device))
    # stats: {name: (numerator, denominator)} for every name in objective.statistics, 0-d device tensors

Each statistic is reported as sum(numerator) / sum(denominator) over the micro batches of a step
(or of an evaluation) and over ranks, and left out where that denominator is 0; the trainer adds
``loss`` itself (the loss it backpropagated, averaged over micro batches). The names are fixed when
the objective is made, so the trainer keeps a step's statistics in one fixed-shape device tensor and
reads it once per logging interval (``training.step_statistics``): nothing in ``loss`` may read a
device value on the host (``.item()``, ``bool(t)``, ``nonzero``, boolean-mask indexing), and its
shapes must not depend on the data, so a compiled step compiles once.

The sentence-pair task (nsp, sop, none) is a property of the shards (the manifest's "objective"):
each objective says which ones it trains on, and ``create`` refuses the others with what to change.

Adding an objective: one module here (a subclass of ``Objective``), its entry in ``registered``,
and its tests.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from training.data import DataContractError
from training.run_log import LOSS, STEP_FIELDS  # LOSS: the trainer's statistic, named with the run log's keys

Statistics = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""name -> (numerator, denominator), each a 0-d tensor on the device, summed over micro batches and ranks."""

SENTENCE_PAIR_TASKS = ("nsp", "sop", "none")
"""What the shards' manifest may say under "objective" (``pipeline.contract.OBJECTIVES``)."""


class Objective(abc.ABC):
    """A pre-training objective: the network it trains, the batch keys it reads, its loss and statistics.

    Subclasses set the class attributes and ``statistics`` (in ``__init__``) and implement
    ``build``, ``loss``, ``flops_per_token`` and ``export``."""

    name: ClassVar[str]
    """The name the run selects it by (``create``)."""
    batch_keys: ClassVar[tuple[str, ...]]
    """Collated batch keys ``loss`` reads; the trainer moves those a batch has to the device."""
    sentence_pairs: ClassVar[tuple[str, ...]]
    """The shards' sentence-pair tasks (of ``SENTENCE_PAIR_TASKS``) it trains on."""
    statistics: tuple[str, ...]
    """Names of the statistics ``loss`` returns, fixed for the run (``LOSS`` is the trainer's)."""
    architectures: ClassVar[Optional[tuple[str, ...]]] = None
    """The model architectures (``training.models.registered``) it can train; None: any."""
    statistic_labels: ClassVar[dict[str, str]] = {}
    """How plots name its statistics (``training.report``: "train <label>", "eval <label>"); a
    name without an entry is shown with spaces for underscores."""
    starts_from_init_from: ClassVar[bool] = True
    """Whether ``trainer.init_from`` (a BERT or ModernBERT masked-LM export, ``training.init_from``)
    can give the network ``build`` makes its starting weights."""

    def __init__(self, sentence_pair: str, sparse_head: bool = True, settings: Any = None):
        """sentence_pair: the shards' task (manifest "objective"); sparse_head: an MLM head on the
        masked positions only (trainer.sparse_mlm_head), for objectives that have one; settings:
        the objective's own config dataclass, for objectives that have one (None: its defaults)."""
        check_sentence_pair(self, sentence_pair)
        self.sentence_pair = sentence_pair
        self.sparse_head = sparse_head
        self.settings = settings

    @abc.abstractmethod
    def build(self, model_cfg, unpad: bool) -> nn.Module:
        """The network this objective trains, freshly initialised (the caller seeds torch first).
        unpad: the encoder runs on real tokens only (trainer.unpad)."""

    @abc.abstractmethod
    def loss(self, net, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Statistics]:
        """One micro batch: (the scalar loss to backpropagate, ``Statistics`` keyed by exactly
        ``self.statistics``). net: what ``build`` returned, or the engine wrapping it; batch: the
        collated batch's ``batch_keys`` on the device (``device_batch``). No host reads."""

    @abc.abstractmethod
    def flops_per_token(self, model_cfg, seq_len: int, sparse_fraction: float | None) -> float:
        """Training FLOPs (forward + backward) per token of the network(s) trained, for MFU.
        sparse_fraction: masked positions over tokens where the head runs on those only, else None."""

    @abc.abstractmethod
    def export(self, state_dict: dict[str, torch.Tensor], model_cfg, data_dir: str, out_dir: str) -> str:
        """Write the trained weights (fp32, our names) as transformers directories under out_dir,
        with the shards' tokenizer; returns out_dir."""


def check_sentence_pair(objective: Objective, sentence_pair: str) -> None:
    """DataContractError unless ``objective`` trains on shards of this sentence-pair task."""
    if sentence_pair not in objective.sentence_pairs:
        rebuild = " or ".join(f"instances={task}" for task in objective.sentence_pairs)
        raise DataContractError(
            f"objective {objective.name} trains on shards whose sentence-pair task is "
            f"{' or '.join(objective.sentence_pairs)}, but these shards were built with {sentence_pair!r}: "
            f"rebuild them with the data job's {rebuild}, or choose another objective"
        )


def registered() -> dict[str, type[Objective]]:
    """name -> class of every objective there is. Imported here, not at the top: each module
    imports this one for ``Objective``."""
    from training.objectives.electra import ReplacedTokenDetection
    from training.objectives.mlm import MaskedLanguageModeling

    return {cls.name: cls for cls in (MaskedLanguageModeling, ReplacedTokenDetection)}


def objective_class(name: str) -> type[Objective]:
    """The class of the objective called ``name``; ConfigError naming the registered ones otherwise."""
    from training.config import ConfigError

    objectives = registered()
    if name not in objectives:
        raise ConfigError(
            f"unknown objective {name!r} (objective.name): choose one of {sorted(objectives)} (objective=<name>)"
        )
    return objectives[name]


def create(name: str, sentence_pair: str, sparse_head: bool = True, settings: Any = None) -> Objective:
    """The objective called ``name`` for shards of ``sentence_pair`` (``Objective.__init__`` for the
    rest); ConfigError for an unknown name, DataContractError for shards it does not train on."""
    objective = objective_class(name)(sentence_pair, sparse_head, settings)
    taken = (LOSS, *STEP_FIELDS)  # a steps.jsonl line's own keys
    if set(objective.statistics) & set(taken) or len(set(objective.statistics)) != len(objective.statistics):
        raise ValueError(f"objective {name}: statistics {objective.statistics} repeat a name or use one of {taken}")
    return objective


def has_padding(batch: dict[str, torch.Tensor]) -> bool:
    """Whether any row of a collated batch is padded, from its host-side counts (no device read:
    ``.numpy()`` works on host tensors only)."""
    return int(batch["num_tokens"].numpy()) < batch["input_ids"].numel()


UNPADDED_LAYOUT_KEYS = ("attention_mask", "unpad_index", "cu_seqlens")
"""Batch keys that only say where the padding is."""


def device_batch(batch: dict[str, torch.Tensor], keys: tuple[str, ...], device: torch.device) -> dict:
    """The collated batch's ``keys`` (those it has) on ``device``. A batch without padding goes
    without its attention mask and unpadding indices: no mask lets SDPA use its flash kernel."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in keys}
    if not has_padding(batch):
        for name in UNPADDED_LAYOUT_KEYS:
            moved.pop(name, None)
    return moved
