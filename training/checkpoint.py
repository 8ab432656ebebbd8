"""Checkpoints of a training run: what DeepSpeed saves, plus what it does not.

Layout under ``output_dir/checkpoints``::

    step00000500/                 one tag per saved step (DeepSpeed's tag directory)
        mp_rank_00_model_states.pt   model weights + client state (written by rank 0)
        *_optim_states.pt            ZeRO partitions of the optimizer (one per rank)
        rng_state_rank00000.pt       this module: per-rank RNG states (one per rank)
        complete                     this module: written last, by rank 0, after a barrier

DeepSpeed keeps model, optimizer and scheduler state. The client state (one ``bert_trainer``
entry in DeepSpeed's model-states file, read back by every rank) holds the run's position: step,
samples consumed, the loader's ``state_dict``, the tracker's run id and a hash of the config. RNG states differ per rank
(dropout draws), so each rank writes its own small file next to DeepSpeed's, as plain tensors,
ints, floats and strings: it loads back with ``torch.load(..., weights_only=True)``.

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

CHECKPOINTS_SUBDIR = "checkpoints"
COMPLETE_MARKER = "complete"
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
    """sha256 of the resolved config (sorted JSON); a resumed run warns when it differs."""
    text = json.dumps(resolved_config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- discovery and retention -------------------------------------------------------------------

def complete_tags(checkpoint_dir: str) -> list[str]:
    """Tags with the ``complete`` marker, oldest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    tags = [name for name in os.listdir(checkpoint_dir)
            if step_of(name) is not None and os.path.exists(os.path.join(checkpoint_dir, name, COMPLETE_MARKER))]
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
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
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
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
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


def client_state(step: int, samples_consumed: int, loader_state: dict, tracker_run_id: Optional[str],
                 cfg_hash: str) -> dict:
    """What ``engine.save_checkpoint(client_state=...)`` stores beside the model (plain types)."""
    return {CLIENT_STATE_KEY: {
        "version": CLIENT_STATE_VERSION, "step": int(step), "samples_consumed": int(samples_consumed),
        "loader": dict(loader_state), "tracker_run_id": tracker_run_id, "config_hash": cfg_hash}}


def check_client_state(client: Optional[dict], tag: str) -> dict:
    """Our part of what ``engine.load_checkpoint`` returned, checked."""
    state = (client or {}).get(CLIENT_STATE_KEY)
    if not state or state.get("version") != CLIENT_STATE_VERSION:
        raise RuntimeError(f"checkpoint {tag} has no {CLIENT_STATE_KEY!r} client state of version "
                           f"{CLIENT_STATE_VERSION}: it was not written by this trainer (or by another version)")
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


def save(engine, checkpoint_dir: str, step: int, state: dict, rank: int, keep_last_k: int) -> str:
    """Collective: every rank calls it. DeepSpeed checkpoint + this rank's RNG file, then (rank 0,
    after a barrier) the ``complete`` marker and pruning. Returns the tag."""
    import torch.distributed as dist

    tag = tag_for(step)
    engine.save_checkpoint(checkpoint_dir, tag=tag, client_state=state, save_latest=False)
    save_rng_state(checkpoint_dir, tag, rank)
    dist.barrier()
    if rank == 0:
        mark_complete(checkpoint_dir, tag, {"step": step, "world_size": dist.get_world_size(),
                                            "samples_consumed": state[CLIENT_STATE_KEY]["samples_consumed"]})
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
