"""``trainer.init_from``: the weights a fresh run starts from, checked before anything is built.

Either a Hugging Face directory of the run's architecture (``training.models``: for bert our export or
a published BERT such as MiniLM, read by ``training.hf_checkpoint``; for modern our export or a
ModernBertForMaskedLM of the same shape), its vocabulary and architecture checked against the run's,
or a model.safetensors in our own parameter names (phase 1's output_dir/hf). Not used
when the run resumes a checkpoint: the checkpoint's run record keeps saying where its first
weights came from (``saved_init_report``).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from training import checkpoint as ckpt
from training.config import ConfigError
from training.models import Architecture, for_config, registered

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


def check_init_from(init_from: str, model_cfg, manifest) -> None:
    """Before anything is built: ``trainer.init_from`` exists, and a Hugging Face directory is of the
    run's architecture (``directory_architecture``) with the shards' vocabulary and the configured
    shape (``Architecture.check_init_from``). model_cfg: the run's network config; manifest: the
    shards' ``ShardManifest``. Raises ConfigError."""
    from training import hf_checkpoint

    if hf_checkpoint.is_hf_directory(init_from):
        directory_architecture(init_from, model_cfg).check_init_from(init_from, model_cfg, manifest)
    else:
        init_weights_path(init_from)


def directory_architecture(init_from: str, model_cfg) -> Architecture:
    """The run's architecture, once the config.json in ``init_from`` names its model_type; ConfigError
    naming both architectures (a BERT export for a modern run, or the reverse) otherwise."""
    import json

    from training.export import CONFIG_FILE

    with open(os.path.join(init_from, CONFIG_FILE), encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    run = for_config(model_cfg)
    if model_type != run.hf_model_type:
        theirs = next((a.name for a in registered().values() if a.hf_model_type == model_type), None)
        hint = f"start from it with a {theirs} preset (conf/train/model/)" if theirs else "this trainer builds none"
        raise ConfigError(
            f"trainer.init_from={init_from} is a {model_type!r} model (config.json model_type) but this run's "
            f"model.architecture={run.name} starts from {run.hf_model_type!r} weights: {hint}, or give a "
            f"{run.name} export"
        )
    return run


def load_init_weights(model, init_from: str) -> dict:
    """Copy ``trainer.init_from``'s weights into the freshly initialised ``model``; returns what
    was done, for the log and the run's record: ``hf_checkpoint.InitReport.to_dict()``.

    A Hugging Face directory may lack the heads (a bare BertModel such as MiniLM has no MLM or NSP
    head): those keep the fresh initialisation and are listed under "fresh". A bare safetensors
    file in our names must hold every tensor of this model."""
    from training import hf_checkpoint

    if hf_checkpoint.is_hf_directory(init_from):
        return directory_architecture(init_from, model.config).load_init_from(model, init_from)
    from safetensors.torch import load_file

    path = init_weights_path(init_from)
    weights = load_file(path)
    expected, model_cfg = model.state_dict(), model.config
    wrong = [
        f"{k} {tuple(v.shape)}, this model {tuple(expected[k].shape)}"
        for k, v in weights.items()
        if k in expected and v.shape != expected[k].shape
    ]
    loaded = None if wrong else model.load_state_dict(weights, strict=False)
    if wrong or loaded.missing_keys or loaded.unexpected_keys:
        missing, unexpected = (loaded.missing_keys, loaded.unexpected_keys) if loaded else ([], [])
        raise ConfigError(
            f"trainer.init_from={init_from} does not fit this model ({model_cfg.num_hidden_layers} "
            f"layers of {model_cfg.hidden_size}, vocabulary {model_cfg.vocab_size:,}): "
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
