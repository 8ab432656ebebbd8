"""``trainer.init_from``: the weights a fresh run starts from, checked before anything is built.

Either a Hugging Face directory (our export, or a published BERT such as MiniLM: config.json and
weights, read by ``training.hf_checkpoint``, which checks its vocabulary and architecture against
the run's) or a model.safetensors in our own parameter names (phase 1's output_dir/hf). Not used
when the run resumes a checkpoint: the checkpoint's run record keeps saying where its first
weights came from (``saved_init_report``).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from training import checkpoint as ckpt
from training.config import ConfigError
from training.model import BertConfig, BertForPreTraining

log = logging.getLogger(__name__)


def init_weights_path(init_from: str) -> str:
    """The model.safetensors that ``trainer.init_from`` names when it is in our own names without a
    config.json (the file, or a directory holding one); ConfigError when there is none, checked
    before anything is built. A directory with a config.json is a Hugging Face checkpoint instead
    (``training.hf_checkpoint``)."""
    path = os.path.join(init_from, "model.safetensors") if os.path.isdir(init_from) else init_from
    if not os.path.exists(init_from):
        raise ConfigError(f"trainer.init_from={init_from} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"trainer.init_from={init_from} holds no model.safetensors (give phase 1's output_dir/hf)")
    return path


def check_init_from(init_from: str, bert_cfg: BertConfig, manifest) -> None:
    """Before anything is built: ``trainer.init_from`` exists, and a Hugging Face directory (our
    export or a published BERT) has the shards' vocabulary and the configured architecture
    (``hf_checkpoint.check_fits``). manifest: the shards' ``ShardManifest``. Raises ConfigError."""
    from training import hf_checkpoint

    if hf_checkpoint.is_hf_directory(init_from):
        hf_checkpoint.check_fits(hf_checkpoint.HFCheckpoint.open(init_from, "trainer.init_from"), bert_cfg, manifest)
    else:
        init_weights_path(init_from)


def load_init_weights(model: BertForPreTraining, init_from: str) -> dict:
    """Copy ``trainer.init_from``'s weights into the freshly initialised ``model``; returns what
    was done, for the log and the run's record: ``hf_checkpoint.InitReport.to_dict()``.

    A Hugging Face directory may lack the heads (a bare BertModel such as MiniLM has no MLM or NSP
    head): those keep the fresh initialisation and are listed under "fresh". A bare safetensors
    file in our names must hold every tensor of this model."""
    from training import hf_checkpoint

    if hf_checkpoint.is_hf_directory(init_from):
        return hf_checkpoint.load_into(model, hf_checkpoint.HFCheckpoint.open(init_from, "trainer.init_from")).to_dict()
    from safetensors.torch import load_file

    path = init_weights_path(init_from)
    weights = load_file(path)
    expected, bert_cfg = model.state_dict(), model.config
    wrong = [
        f"{k} {tuple(v.shape)}, this model {tuple(expected[k].shape)}"
        for k, v in weights.items()
        if k in expected and v.shape != expected[k].shape
    ]
    loaded = None if wrong else model.load_state_dict(weights, strict=False)
    if wrong or loaded.missing_keys or loaded.unexpected_keys:
        missing, unexpected = (loaded.missing_keys, loaded.unexpected_keys) if loaded else ([], [])
        raise ConfigError(
            f"trainer.init_from={init_from} does not fit this model ({bert_cfg.num_hidden_layers} "
            f"layers of {bert_cfg.hidden_size}, vocabulary {bert_cfg.vocab_size:,}): "
            f"{len(wrong)} tensors of another shape {wrong[:2]}, {len(missing)} missing {missing[:2]}, "
            f"{len(unexpected)} unexpected {unexpected[:2]}; use the model preset and shards it was trained with"
        )
    model.tie_weights()
    return {"path": init_from, "weights_file": os.path.basename(path), "fresh": [], "unused": []}


def log_init_report(report: dict) -> None:
    """Rank 0: where the weights came from and which tensors start fresh or go unused."""
    log.warning("trainer.init_from=%s: weights from %s", report["path"], report["weights_file"])
    if report["fresh"]:
        log.warning(
            "%d tensors the checkpoint lacks start from a fresh initialisation (as without init_from): %s",
            len(report["fresh"]),
            ", ".join(report["fresh"]),
        )
    if report["unused"]:
        log.warning(
            "%d tensors of the checkpoint this model has no place for are not used: %s",
            len(report["unused"]),
            ", ".join(report["unused"]),
        )


def saved_init_report(output_dir: str, tag: str) -> Optional[dict]:
    """The "init_from" entry of a checkpoint's run record: a resumed run keeps saying where its
    first weights came from. None when that run started from a random init."""
    saved = ckpt.read_run_record(os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR), tag)
    return (saved or {}).get("init_from")
