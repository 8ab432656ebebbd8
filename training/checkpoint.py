"""Checkpoints of a training run: what DeepSpeed saves, plus what it does not.

Layout under ``output_dir/checkpoints``::

    step00000500/                 one tag per saved step (DeepSpeed's tag directory)
        mp_rank_00_model_states.pt   model weights + client state (written by rank 0)
        *_optim_states.pt            ZeRO partitions of the optimizer (one per rank)
        rng_state_rank00000.pt       this module: per-rank RNG states (one per rank)
        run_config.json              this module: the run's config (redacted), architecture and
                                     shard identity (rank 0, just before the marker)
        complete                     this module: written last, by rank 0, after a barrier

DeepSpeed keeps model, optimizer and scheduler state. The client state (one ``bert_trainer``
entry in DeepSpeed's model-states file, read back by every rank) holds the run's position: step,
samples consumed, the loader's ``state_dict``, the tracker's run id and a hash of the config (kept for
older readers; run_config.json is what a resume compares). RNG states differ per rank
(dropout draws), so each rank writes its own small file next to DeepSpeed's, as plain tensors,
ints, floats and strings: it loads back with ``torch.load(..., weights_only=True)``.

Before anything is built, a resuming run compares itself with the newest complete tag's
``run_config.json`` (``check_resumable``): keys outside ``training.config.RESUMABLE_KEYS``, the
shards' identity and the model's architecture must match, so that a rerun into a used output_dir
(another learning rate, another model size) stops with one message instead of silently
continuing the old run. Tags written before that file existed resume with a warning.

Only a tag with the ``complete`` marker is resumed, so a run killed mid-save falls back to the
previous checkpoint; ``checkpoints/latest`` (DeepSpeed's pointer file) is written with the marker,
so it too names only complete tags. The newest ``keep_last_k`` complete tags are kept; older ones are deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from typing import Any, Optional

import numpy as np
import torch

from training import models
from training.config import ConfigError, config_differences, objective_network_keys
from training.tracking import redact

CHECKPOINTS_SUBDIR = "checkpoints"
COMPLETE_MARKER = "complete"
RUN_CONFIG_FILE = "run_config.json"
RUN_RECORD_VERSION = 1
LATEST_FILE = "latest"
CLIENT_STATE_VERSION = 1
_TAG = re.compile(r"^step(\d{8,})$")


def tag_for(step: int) -> str:
    """DeepSpeed tag of the checkpoint taken after ``step`` optimizer steps."""
    return f"step{step:08d}"


def step_of(tag: str) -> Optional[int]:
    match = _TAG.match(tag)
    return int(match.group(1)) if match else None


def config_hash(resolved_config: dict) -> str:
    """sha256 of the resolved config (sorted JSON), kept in the client state; superseded by
    run_config.json, which names what differs."""
    text = json.dumps(resolved_config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- the run's config beside each checkpoint ---------------------------------------------------


def data_identity(manifest) -> dict:
    """What identifies a shard directory's content, whatever its path: a fingerprint (sha256) over
    the vocabulary hash, special ids, objective, length, masking and every shard's split, file,
    rows and sha256 from ``manifest`` (a ``pipeline.contract.ShardManifest``), plus a few of
    those for messages."""
    shards = sorted([s.split, s.file, s.rows, s.sha256] for s in manifest.shards)
    content = {
        "vocab_sha256": manifest.vocab_sha256,
        "special_tokens": manifest.special_tokens,
        "objective": manifest.objective,
        "max_seq_length": manifest.max_seq_length,
        "masking": manifest.masking.identity(),
        "shards": shards,
    }
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {
        "fingerprint": fingerprint,
        "vocab_sha256": manifest.vocab_sha256,
        "shards": len(shards),
        "rows": sum(s.rows for s in manifest.shards),
    }


def run_record(resolved_config: dict, model_cfg, data: dict) -> dict:
    """What ``run_config.json`` holds: the resolved config with its secrets redacted (as W&B gets
    it), the model's architecture (``training.models.Architecture.record`` of ``model_cfg``, the
    network config: its name and the fields marked ``ARCHITECTURE``) and ``data_identity`` of the shards."""
    from training.models import for_config

    return {
        "version": RUN_RECORD_VERSION,
        "config": redact(resolved_config),
        "architecture": for_config(model_cfg).record(model_cfg),
        "data": data,
    }


def write_run_record(checkpoint_dir: str, tag: str, record: dict) -> None:
    path = os.path.join(checkpoint_dir, tag, RUN_CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1, sort_keys=True, default=str)
    os.replace(path + ".tmp", path)


def read_run_record(checkpoint_dir: str, tag: str) -> Optional[dict]:
    """The tag's ``run_config.json``; None for a tag written before there was one."""
    path = os.path.join(checkpoint_dir, tag, RUN_CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _value(v: Any) -> str:
    return json.dumps(v, default=str)


def check_resumable(saved: dict, current: dict, where: str, force: bool) -> list[str]:
    """Whether the run described by ``current`` (a ``run_record``) may resume the checkpoint
    whose record is ``saved``; ``where`` names the checkpoint in messages.

    Raises ConfigError, naming every differing key with its old and new value and the ways out,
    when the architecture differs (always) or anything outside RESUMABLE_KEYS and the shards'
    identity differs (unless ``force``). Returns the differences that ``force`` let through, as
    lines for a warning (empty when the configs match).
    """
    if saved.get("version") != RUN_RECORD_VERSION:
        raise ConfigError(
            f"{where}/{RUN_CONFIG_FILE} has version {saved.get('version')!r}, this trainer "
            f"reads {RUN_RECORD_VERSION}: resume with the trainer that wrote it, or use another output_dir"
        )
    saved = models.upgraded_record(saved)  # a record from before architectures were a choice: BERT's
    differences = config_differences(saved["config"], current["config"])
    lines = [f"{key}: {_value(old)} -> {_value(new)}" for key, old, new in differences]
    old_data, new_data = saved["data"], current["data"]
    if old_data["fingerprint"] != new_data["fingerprint"]:
        old_dir, new_dir = saved["config"].get("data_dir"), current["config"].get("data_dir")
        moved = f"{_value(old_dir)} -> {_value(new_dir)}" if old_dir != new_dir else f"{_value(new_dir)} (same path)"
        lines.append(
            f"data_dir: {moved}: other shards (vocabulary sha256 {old_data['vocab_sha256'][:12]} -> "
            f"{new_data['vocab_sha256'][:12]}, {old_data['shards']} -> {new_data['shards']} shards, "
            f"{old_data['rows']} -> {new_data['rows']} rows, fingerprint {old_data['fingerprint'][:12]} -> "
            f"{new_data['fingerprint'][:12]})"
        )
    architecture = [
        f"{name} {_value(saved['architecture'].get(name))} -> {_value(value)}"
        for name, value in current["architecture"].items()
        if saved["architecture"].get(name) != value
    ]
    architecture += [  # another objective, or its networks at other sizes
        f"{key} {_value(old)} -> {_value(new)}" for key, old, new in differences if key in objective_network_keys()
    ]
    if architecture:
        raise ConfigError(
            f"output_dir holds checkpoint {where} of a run whose config differs from this one:\n  "
            + "\n  ".join(lines)
            + f"\nThe model architecture differs ({', '.join(architecture)}): the "
            "checkpoint's weights do not fit this model, so it can not be resumed, not even with "
            "trainer.force_resume=true. Use another output_dir for this run."
        )
    if lines and not force:
        raise ConfigError(
            f"output_dir holds checkpoint {where} of a run whose config differs from this one:\n  "
            + "\n  ".join(lines)
            + "\nResuming would continue that run, not start this one. Either use another "
            "output_dir for a new run, or set trainer.force_resume=true to resume that run with the new values "
            "(keys that may change on a resume without it: training.config.RESUMABLE_KEYS)."
        )
    return lines


# --- discovery and retention -------------------------------------------------------------------


def complete_tags(checkpoint_dir: str) -> list[str]:
    """Tags with the ``complete`` marker, oldest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    tags = [
        name
        for name in os.listdir(checkpoint_dir)
        if step_of(name) is not None and os.path.exists(os.path.join(checkpoint_dir, name, COMPLETE_MARKER))
    ]
    return sorted(tags, key=step_of)


def latest_complete(checkpoint_dir: str) -> Optional[str]:
    """The newest complete tag, or None when there is nothing to resume."""
    tags = complete_tags(checkpoint_dir)
    return tags[-1] if tags else None


def mark_complete(checkpoint_dir: str, tag: str, info: dict) -> None:
    """Write the marker and point ``latest`` at the tag (rank 0, after every rank has finished
    writing the tag)."""
    path = os.path.join(checkpoint_dir, tag, COMPLETE_MARKER)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # DeepSpeed's `latest` (read by its zero_to_fp32 tools) names only complete tags.
    latest = os.path.join(checkpoint_dir, LATEST_FILE)
    with open(latest + ".tmp", "w") as f:
        f.write(tag)
    os.replace(latest + ".tmp", latest)


def prune(checkpoint_dir: str, keep_last_k: int) -> list[str]:
    """Delete all but the newest ``keep_last_k`` complete tags, and incomplete tags older than the
    newest complete one (left by a crash mid-save). Returns the deleted tags. Rank 0 only."""
    complete = complete_tags(checkpoint_dir)
    if not complete:
        return []
    newest = step_of(complete[-1])
    doomed = complete[:-keep_last_k] if keep_last_k > 0 else complete
    for name in os.listdir(checkpoint_dir):
        step = step_of(name)
        if step is not None and step < newest and name not in complete:
            doomed.append(name)
    for tag in doomed:
        shutil.rmtree(os.path.join(checkpoint_dir, tag), ignore_errors=True)
    return sorted(doomed, key=step_of)


# --- RNG states --------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def rng_file(checkpoint_dir: str, tag: str, rank: int) -> str:
    return os.path.join(checkpoint_dir, tag, f"rng_state_rank{rank:05d}.pt")


def save_rng_state(checkpoint_dir: str, tag: str, rank: int) -> None:
    path = rng_file(checkpoint_dir, tag, rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(rng_state(), path)


def load_rng_state(checkpoint_dir: str, tag: str, rank: int) -> bool:
    """Restore this rank's RNG states; False when the tag has no file for this rank (the run was
    saved with fewer ranks: new ranks keep their fresh seeds)."""
    path = rng_file(checkpoint_dir, tag, rank)
    if not os.path.exists(path):
        return False
    set_rng_state(torch.load(path, weights_only=True))
    return True


# --- the client state --------------------------------------------------------------------------

CLIENT_STATE_KEY = "bert_trainer"
"""Our entry in DeepSpeed's model-states dict (one key, so it can never shadow one of DeepSpeed's)."""


def client_state(run_state: dict) -> dict:
    """What ``engine.save_checkpoint(client_state=...)`` stores beside the model: the trainer's
    ``state_dict()`` ({"step", "samples_consumed", "loader", "tracker_run_id", "config_hash"}, plain
    types) under our one key, with its version."""
    return {CLIENT_STATE_KEY: {"version": CLIENT_STATE_VERSION, **run_state}}


def check_client_state(client: Optional[dict], tag: str) -> dict:
    """Our part of what ``engine.load_checkpoint`` returned, checked."""
    state = (client or {}).get(CLIENT_STATE_KEY)
    if not state or state.get("version") != CLIENT_STATE_VERSION:
        raise RuntimeError(
            f"checkpoint {tag} has no {CLIENT_STATE_KEY!r} client state of version "
            f"{CLIENT_STATE_VERSION}: it was not written by this trainer (or by another version)"
        )
    return state


# --- saving and loading through the engine -----------------------------------------------------


def local_weights_finite(engine) -> bool:
    """Whether this rank's share of the weights is finite (ZeRO-3: its partition, else the full
    module). Combine across ranks before deciding."""
    with torch.no_grad():
        for p in engine.module.parameters():
            tensor = getattr(p, "ds_tensor", None)
            tensor = p if tensor is None else tensor
            if tensor.numel() and not torch.isfinite(tensor).all():
                return False
    return True


def save(engine, checkpoint_dir: str, step: int, state: dict, rank: int, keep_last_k: int, record: dict) -> str:
    """Collective: every rank calls it. DeepSpeed checkpoint + this rank's RNG file, then (rank 0,
    after a barrier) ``record`` (a ``run_record``) as run_config.json, the ``complete`` marker and
    pruning. Returns the tag."""
    import torch.distributed as dist

    tag = tag_for(step)
    engine.save_checkpoint(checkpoint_dir, tag=tag, client_state=state, save_latest=False)
    save_rng_state(checkpoint_dir, tag, rank)
    dist.barrier()
    if rank == 0:
        write_run_record(checkpoint_dir, tag, record)
        mark_complete(
            checkpoint_dir,
            tag,
            {
                "step": step,
                "world_size": dist.get_world_size(),
                "samples_consumed": state[CLIENT_STATE_KEY]["samples_consumed"],
            },
        )
        prune(checkpoint_dir, keep_last_k)
    dist.barrier()
    return tag


def load(engine, checkpoint_dir: str, tag: str, rank: int) -> dict:
    """Collective: model, optimizer, scheduler (DeepSpeed), then this rank's RNG states.
    Returns the client state."""
    path, state = engine.load_checkpoint(checkpoint_dir, tag=tag)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {os.path.join(checkpoint_dir, tag)}")
    state = check_client_state(state, tag)
    load_rng_state(checkpoint_dir, tag, rank)
    return state
