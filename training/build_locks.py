"""Stale lock files of torch's extension builds, named before a start-up that would wait on them.

DeepSpeed compiles its CPU ops (``deepspeed_shm_comm`` when the process group starts on the CPU,
``cpu_adam`` for an offloaded optimizer) on first use, through ``torch.utils.cpp_extension.load``.
That build holds ``<extensions root>/<op>/lock`` while it runs (about two minutes here) and removes
it at the end. A process killed mid-build leaves the file behind, and every later start waits for it
to vanish, forever and without a word (DeepSpeed's output is held back during start-up: see
``training.distributed.deepspeed_output_held_back``). A lock much older than a build is named here
with what to do; it is not removed, since another job on a shared home directory may be building.

The root is torch's: ``$TORCH_EXTENSIONS_DIR`` as given, or ``~/.cache/torch_extensions`` (torch's
default build root) with one folder per Python version and accelerator, ``py311_cpu``, ``py311_cu128``.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
from typing import Optional

import torch

log = logging.getLogger(__name__)

# A build takes minutes; a lock older than this is from a build that will not finish.
STALE_AFTER_S = 15 * 60


def extensions_root() -> str:
    """Where ``torch.utils.cpp_extension.load`` builds an op of this Python and accelerator: its
    folders, one per op, hold the lock files."""
    given = os.environ.get("TORCH_EXTENSIONS_DIR")
    if given:
        return given
    from torch.utils.cpp_extension import get_default_build_root

    if torch.version.hip is not None:
        accelerator = "rocm" + torch.version.hip.replace(".", "")
    elif torch.version.cuda is not None:
        accelerator = "cu" + torch.version.cuda.replace(".", "")
    else:
        accelerator = "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return os.path.join(get_default_build_root(), f"{python}_{accelerator}")


def stale_build_locks(root: Optional[str] = None, older_than_s: float = STALE_AFTER_S) -> list[tuple[str, float]]:
    """[(lock path, age in seconds)] of the op builds under ``root`` whose lock is older than
    ``older_than_s``; [] where there is no root or no such lock."""
    now = time.time()
    stale = []
    for path in sorted(glob.glob(os.path.join(root or extensions_root(), "*", "lock"))):
        try:
            age = now - os.stat(path).st_mtime
        except FileNotFoundError:  # a build that just finished
            continue
        if age > older_than_s:
            stale.append((path, age))
    return stale


def warn_of_stale_build_locks(root: Optional[str] = None) -> list[str]:
    """Log a warning for each stale lock (the caller does it on one rank per node: the root is local
    to a node, or shared by all); returns the warnings."""
    warnings = [
        f"{path} is {age / 60:.0f} minutes old: a build of DeepSpeed's op {os.path.basename(os.path.dirname(path))} "
        "was stopped midway, and torch waits for this file to go before it builds or loads that op: "
        "a run that needs it hangs without a word. If no other process is building it now, remove the file."
        for path, age in stale_build_locks(root)
    ]
    for warning in warnings:
        log.warning(warning)
    return warnings
