"""Process-group setup for every way the trainer is started.

``torchrun`` and the ``deepspeed`` launcher export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT for each process; without a launcher the trainer runs as a single process and sets
them itself (rank 0 of 1, a free localhost port), so one code path initialises DeepSpeed's
process group in all cases: NCCL on CUDA, gloo on CPU (or ``trainer.dist_backend``).

Right after the group is up, ``check_ranks_agree`` makes every rank compare notes (two small
``all_gather_object`` calls): the same output directory (a file rank 0 writes there must be
visible to every rank: a relative path, a symlink or another mount point of the same shared
directory pass; another directory, or a node-local one of the same name, fails), the same config
(a hash, then the differing keys), and no rank that already failed a check of its own. Any
disagreement is one ``ConfigError`` raised on every rank, so the whole group stops together
instead of some ranks waiting out the collective timeout for the others.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch

from training.build_locks import warn_of_stale_build_locks
from training.config import ABSENT, ConfigError

log = logging.getLogger(__name__)

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the data-parallel group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    control_group: object = None
    """A gloo group over the same ranks for small host-side agreements (the stop flag, example ids):
    a CPU collective that never waits for the device's queue. None: the default group is gloo already."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_environment() -> None:
    """Set the launcher variables for a lone process (no torchrun/deepspeed launcher).

    A partially set environment is left alone so the process group reports what is missing.
    """
    if any(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def select_local_device() -> None:
    """On a CUDA machine, make LOCAL_RANK's GPU the current device before anything touches CUDA
    (the precision check, DeepSpeed's accelerator): otherwise every rank of a node first creates a
    context on GPU 0, which costs GPU 0 memory and time. Nothing to do on a CPU machine."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, key: str = "device") -> torch.device:
    """The device of a one-process command (fine-tuning, evaluation) from its config value: auto
    (cuda if available, else cpu), cpu or cuda. key: the config key, named in the ConfigError for
    cuda without a CUDA device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}=cuda but no CUDA device is available")
    return torch.device(name)


def deepspeed_output_shown() -> bool:
    """Whether DeepSpeed's start-up output is printed: its accelerator detection warning, the op
    builder's compiler probe (the ``gcc ...`` lines distutils logs to the root logger) and
    "deepspeed_shm_comm_op built successfully" (once per rank). Only at debug level, i.e. with the
    root logger at DEBUG (``hydra.verbose=true``): nothing in them is for a user to act on."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def choose_deepspeed_accelerator() -> None:
    """Before DeepSpeed is first imported: DS_ACCELERATOR=cpu where torch sees no CUDA device, which
    is where this trainer runs on the CPU (``init_distributed``), so DeepSpeed's import does not warn
    that it fell back to the CPU. A DS_ACCELERATOR already set wins; at debug level DeepSpeed detects
    (and warns) as it would alone."""
    if not deepspeed_output_shown() and not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


@contextmanager
def deepspeed_output_held_back():
    """Around DeepSpeed's process-group setup, which probes its ops (compiling a test program) and
    builds or loads the shared-memory op on the CPU: what it writes to stdout (fd 1: its prints and
    the probe's log lines, which the console handler writes there) goes to a temporary file instead,
    logged at DEBUG afterwards; if the block raises, it is written to stderr, so a failed build
    still shows its output. At debug level (``deepspeed_output_shown``) nothing is held back."""
    if deepspeed_output_shown():
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 1)
        try:
            yield
        except BaseException:
            _restore_stdout(saved)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        _restore_stdout(saved)
        held.seek(0)
        text = held.read().decode(errors="replace").strip()
    if text:
        log.debug("DeepSpeed's output while it set up the process group:\n%s", text)


def _restore_stdout(saved: int) -> None:
    sys.stdout.flush()
    os.dup2(saved, 1)
    os.close(saved)


def init_distributed(backend: Optional[str] = None, timeout_minutes: int = 30) -> DistributedContext:
    """Initialise torch.distributed through DeepSpeed and return this process's place in it.

    backend: ``trainer.dist_backend``; None picks nccl on CUDA, gloo on CPU.
    """
    import deepspeed
    import torch.distributed as dist

    single_process_environment()
    missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(
            f"launcher environment incomplete, missing {missing}: start with torchrun, the deepspeed "
            "launcher, or no launcher at all (then none of RANK/WORLD_SIZE/LOCAL_RANK may be set)"
        )
    backend = backend or default_backend()
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ConfigError("trainer.dist_backend=nccl needs CUDA; use gloo (or null) on CPU")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if not dist.is_initialized():
        group = {"timeout": timeout, "rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"])}
        if backend == "nccl":
            # Binds the group to this rank's GPU: NCCL connects eagerly instead of guessing the device
            # at the first collective (and barrier() knows which device to use).
            group["device_id"] = device
        elastic = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        if elastic:
            # torchrun's agent keeps one store for every restart of the group: start this group's
            # keys in a namespace of its own (see fresh_group_namespace), or a restarted group reads
            # the dead group's addresses and gloo/NCCL fail to connect or hang for the timeout.
            group["store"] = fresh_group_namespace(timeout)
        dist.init_process_group(backend, **group)  # env:// (MASTER_ADDR/PORT) without a store
        if elastic:
            warn_if_nodes_cannot_rejoin()
        if local_rank == 0:
            warn_of_stale_build_locks()  # DeepSpeed builds its CPU ops next: a stale lock hangs it silently
        with deepspeed_output_held_back():  # DeepSpeed adopts the group torch.distributed holds
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, timeout=timeout)
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        device=device,
        control_group=control_group(backend),
    )


_CONTROL_GROUP: dict = {}


def control_group(backend: str):
    """A gloo group over every rank for host-side agreements, made once per process group (a sweep's
    jobs share one); None when the default group is gloo already."""
    import torch.distributed as dist

    if backend == "gloo":
        return None
    key = id(dist.group.WORLD)
    if key not in _CONTROL_GROUP:
        _CONTROL_GROUP.clear()
        _CONTROL_GROUP[key] = dist.new_group(backend="gloo")
    return _CONTROL_GROUP[key]


def warn_if_nodes_cannot_rejoin() -> None:
    """Rank 0, under torchrun with restarts over several nodes and the agent's shared store: say
    that a node whose torchrun is started again cannot rejoin unless TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1.

    Measured with torch 2.13: the agent that stays rank 0 keeps its shared store and does not
    publish its address for the next rendezvous round, so the new agent waits for it (60 s) and
    both give up. With the variable set, each round gets a fresh store hosted by rank 0."""
    if (
        os.environ.get("RANK") == "0"
        and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
        and int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1
    ):
        log.warning(
            "torchrun --max-restarts over %s nodes with the agent's shared store: workers restart, but a node "
            "whose torchrun is started again cannot rejoin; set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for "
            "torchrun on every node to allow that",
            os.environ["GROUP_WORLD_SIZE"],
        )


HANDSHAKE_PREFIX = "bert_trainer/group"
"""Keys of ``fresh_group_namespace`` in torchrun's store."""


def fresh_group_namespace(timeout: datetime.timedelta):
    """A PrefixStore over torchrun's agent store (MASTER_ADDR:MASTER_PORT) that no earlier worker
    group has written to, agreed by every rank of this group.

    torchrun (c10d rendezvous) hosts one store in the agent for the whole job and hands it to each
    restarted worker group, with the keys of the groups before it still in it (pytorch/pytorch#135712;
    TORCHELASTIC_RESTART_COUNT, which was meant to separate them, is counted per agent and restarts
    at 0 on a node whose agent was started again). So no well-known key can be trusted to be this
    group's. Instead: each rank posts a nonce of its own under ``hello/<rank>``; rank 0 picks a fresh
    namespace and answers every nonce it finds under ``reply/<nonce>``, a key only that process can
    be waiting for; each rank then acknowledges under ``<namespace>/ack/<rank>``. Rank 0 keeps
    answering (a stale hello of a dead worker gets an answer nobody reads) until every rank has
    acknowledged the new namespace.
    """
    import torch.distributed as dist

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout
    )
    root = dist.PrefixStore(HANDSHAKE_PREFIX, store)
    nonce = uuid.uuid4().hex
    if rank == 0:
        namespace = uuid.uuid4().hex
        answered: set[str] = set()
        acks = [f"{namespace}/ack/{r}" for r in range(1, world_size)]
        deadline = time.monotonic() + timeout.total_seconds()
        while not (not acks or root.check(acks)):
            for r in range(1, world_size):
                if root.check([f"hello/{r}"]):
                    hello = root.get(f"hello/{r}").decode()
                    if hello not in answered:
                        root.set(f"reply/{hello}", namespace)
                        answered.add(hello)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"process group: not every rank joined within {timeout} (torchrun store "
                    f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']})"
                )
            time.sleep(0.05)
    else:
        root.set(f"hello/{rank}", nonce)
        namespace = root.get(f"reply/{nonce}").decode()  # blocks up to the store's timeout
        root.set(f"{namespace}/ack/{rank}", "1")
    return dist.PrefixStore(f"{HANDSHAKE_PREFIX}/{namespace}", store)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group (quietly if it is already gone)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def launcher_world_size() -> int:
    """WORLD_SIZE as the launcher set it (1 without a launcher), readable before the process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


SAME_DIR_PROBE = ".rank0-probe-{token}"
"""File rank 0 writes into output_dir for the other ranks to find (removed once they looked)."""
PROBE_WAIT_S = 3.0
"""How long a rank looks for rank 0's probe file (a shared filesystem may show a new file late)."""


def _rank_names(ranks: list[int], places: list[dict]) -> str:
    hosts = sorted({places[r]["host"] for r in ranks})
    shown = ", ".join(str(r) for r in ranks[:8]) + (f", ... ({len(ranks)} ranks)" if len(ranks) > 8 else "")
    return f"rank{'s' if len(ranks) > 1 else ''} {shown} (host {', '.join(hosts[:4])})"


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_ranks_agree(
    ctx: DistributedContext, output_dir: str, config: dict, local_error: Optional[Exception] = None
) -> None:
    """Collective, right after ``init_distributed`` and before anything is built: raise the same
    ``ConfigError`` on every rank when the ranks do not write to one output directory, do not run
    the same config, or some rank already failed (``local_error``: what that rank's own checks
    raised before the process group, e.g. a resume check against its config).

    config: {dotted key: value} of what must be equal on every rank (the redacted resolved config
    without paths that may differ per node, the shards' fingerprint, the checkpoint to resume).
    With a single rank only ``local_error`` is raised.
    """
    if ctx.world_size == 1:
        if local_error is not None:
            raise local_error
        return
    import torch.distributed as dist

    text = json.dumps(config, sort_keys=True, default=str)
    token = uuid.uuid4().hex if ctx.is_main else None
    os.makedirs(output_dir, exist_ok=True)
    probe = os.path.join(output_dir, SAME_DIR_PROBE.format(token=token)) if token else None
    try:
        if probe:
            with open(probe, "w") as f:
                f.write(token)
        mine = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "output_dir": output_dir,
            "config_sha256": None if local_error else hashlib.sha256(text.encode()).hexdigest(),
            "token": token,
            "error": None if local_error is None else str(local_error),
        }
        places: list[dict] = [None] * ctx.world_size  # type: ignore[list-item]
        dist.all_gather_object(places, mine)
        sees = _sees_probe(output_dir, places[0]["token"])
        # Ranks of each config hash; the lowest rank of each hash shows its config, so the keys can be named.
        first_of_hash = {}
        for r, place in enumerate(places):
            if place["config_sha256"] is not None:  # a rank that failed its own checks has nothing to compare
                first_of_hash.setdefault(place["config_sha256"], r)
        shows_config = first_of_hash.get(mine["config_sha256"]) == ctx.rank and len(first_of_hash) > 1
        seen: list[dict] = [None] * ctx.world_size  # type: ignore[list-item]
        dist.all_gather_object(seen, {"sees_probe": sees, "config": config if shows_config else None})
    finally:
        if probe and os.path.exists(probe):
            os.remove(probe)
    problems = _output_dir_problems(places, seen) + _config_problems(places, seen, first_of_hash)
    if problems:
        raise ConfigError("the ranks of this run disagree, so none of them starts:\n  " + "\n  ".join(problems))
    failed = [r for r, place in enumerate(places) if place["error"]]
    if failed:
        if local_error is not None:
            raise local_error
        first = failed[0]
        raise ConfigError(f"{_rank_names(failed, places)} stopped before training: {places[first]['error']}")


def _sees_probe(output_dir: str, token: str) -> bool:
    path = os.path.join(output_dir, SAME_DIR_PROBE.format(token=token))
    deadline = time.monotonic() + PROBE_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _output_dir_problems(places: list[dict], seen: list[dict]) -> list[str]:
    blind = [r for r, s in enumerate(seen) if not s["sees_probe"]]
    if not blind:
        return []
    by_dir: dict[str, list[int]] = {}
    for r in blind:
        by_dir.setdefault(places[r]["output_dir"], []).append(r)
    where = "; ".join(f"on {_rank_names(ranks, places)} it is {d}" for d, ranks in by_dir.items())
    return [
        f"output_dir differs: rank 0 (host {places[0]['host']}) writes to {places[0]['output_dir']}; {where}, "
        "where the file rank 0 wrote is not visible (another directory, or one not on a filesystem shared by "
        "every node). Pass the same output_dir on every node, on a shared filesystem (a relative path resolves "
        "against each node's working directory)"
    ]


def _config_problems(places: list[dict], seen: list[dict], first_of_hash: dict[str, int]) -> list[str]:
    if len(first_of_hash) <= 1:  # one config, or none: every rank failed its own checks (said elsewhere)
        return []
    base = min(first_of_hash.values())  # rank 0, unless rank 0 failed its own checks
    reference = seen[base]["config"]
    problems = []
    for digest, first in sorted(first_of_hash.items(), key=lambda item: item[1]):
        if first == base:
            continue
        ranks = [r for r, place in enumerate(places) if place["config_sha256"] == digest]
        other = seen[first]["config"]
        keys = sorted(k for k in reference.keys() | other.keys() if reference.get(k, ABSENT) != other.get(k, ABSENT))
        theirs = ", ".join(f"{k}={_short(other.get(k, ABSENT))}" for k in keys[:10])
        ours = ", ".join(f"{k}={_short(reference.get(k, ABSENT))}" for k in keys[:10])
        more = f" (and {len(keys) - 10} more keys)" if len(keys) > 10 else ""
        problems.append(
            f"config differs: {_rank_names(ranks, places)} {theirs}{more}, where rank {base} (host "
            f"{places[base]['host']}) has {ours}. Start every node with the same command and overrides"
        )
    return problems
