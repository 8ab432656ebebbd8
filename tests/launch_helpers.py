"""Start the trainer as a subprocess the way users do, and read what it wrote.

Also runnable as ``python tests/launch_helpers.py <training overrides>``: the trainer with a
fault injected for tests -- the loss of the forward calls listed in ``INJECT_NAN_AT_CALLS``
(comma-separated, 1-based, training-mode calls only) is replaced by NaN, on every rank or only
on rank ``INJECT_NAN_RANK`` if set. Under torchrun: ``torchrun ... tests/launch_helpers.py ...``.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time

from paths import REPO


def trainer_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a lone process must not inherit a launcher's environment
    return env


def one_rank_env() -> dict:
    """The environment of a one-process group on a free port, CPU only, this checkout importable:
    for a script that builds DeepSpeed engines itself (``deepspeed.init_distributed``)."""
    return dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
    )


def fault_injecting_command(*overrides: str, nproc: int = 1) -> list[str]:
    """The trainer under this module's NaN injection (see the module docstring)."""
    script = os.path.join(REPO, "tests", "launch_helpers.py")
    if nproc == 1:
        return [sys.executable, script, *overrides]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        script,
        *overrides,
    ]


def single_process_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "training", *overrides]


def export_command(output_dir, *args: str) -> list[str]:
    """``python -m training.export <output_dir> [--tag T] [--out DIR] [--data-dir DIR]``."""
    return [sys.executable, "-m", "training.export", str(output_dir), *args]


def torchrun_command(nproc: int, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "training",
        *overrides,
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multinode_env() -> dict:
    """trainer_env with OMP_NUM_THREADS=1 forced: torchrun sets it only when nproc_per_node > 1,
    and the thread count changes float sums (5e-7 apart), so runs of 1 and 2 processes per node
    are compared at the same count."""
    return {**trainer_env(), "OMP_NUM_THREADS": "1"}


TORCHRUN = (sys.executable, "-m", "torch.distributed.run")


def c10d_node_command(
    port: int,
    rdzv_id: str,
    *overrides: str,
    max_restarts: int = 0,
    rdzv_conf: str = "",
    monitor_interval: float | None = None,
) -> list[str]:
    """One of two torchrun agents (1 process each) meeting through a c10d rendezvous on 127.0.0.1:port
    (hosted by the agent that starts first)."""
    extra = [f"--rdzv_conf={rdzv_conf}"] if rdzv_conf else []
    extra += [f"--monitor-interval={monitor_interval}"] if monitor_interval is not None else []
    return [
        *TORCHRUN,
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        f"--rdzv_id={rdzv_id}",
        f"--max-restarts={max_restarts}",
        *extra,
        "-m",
        "training",
        *overrides,
    ]


def static_node_command(node_rank: int, port: int, *overrides: str) -> list[str]:
    """Node ``node_rank`` of 2 (1 process each) with static rendezvous: node 0 hosts the store at 127.0.0.1:port."""
    return [
        *TORCHRUN,
        "--nnodes=2",
        f"--node_rank={node_rank}",
        "--nproc_per_node=1",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        "training",
        *overrides,
    ]


def start(command: list[str], log_path, cwd: str = REPO, env: dict | None = None) -> subprocess.Popen:
    """Start ``command`` in a session of its own (so ``stop`` can end it and whatever it left),
    stdout and stderr to ``log_path``."""
    log = open(log_path, "w")
    try:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env or multinode_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    finally:
        log.close()


def descendants(proc: subprocess.Popen) -> list:
    """psutil.Process of every living descendant of ``proc`` (torchrun's workers, their loader workers)."""
    import psutil

    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_with_descendants(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Send ``sig`` to ``proc`` and every descendant: a whole node lost at once (torchrun starts
    each worker in a session of its own, so killing the agent alone would leave them running)."""
    import psutil

    for p in [*descendants(proc), psutil.Process(proc.pid)]:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def stop(*procs: subprocess.Popen) -> None:
    """SIGKILL what is still running of ``procs`` and their descendants (test cleanup)."""
    for proc in procs:
        if proc.poll() is None:
            kill_with_descendants(proc)
        for p in descendants(proc):
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        proc.wait(timeout=60)


def wait_for(condition, timeout: float, what: str, procs: tuple = (), period: float = 0.2):
    """Poll ``condition()`` until it returns something truthy (returned); AssertionError after
    ``timeout`` seconds, or as soon as one of ``procs`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        ended = [p.returncode for p in procs if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}"
                if not ended
                else f"a process exited ({ended}) while waiting for {what}"
            )
        time.sleep(period)


def steps_written(output_dir) -> int:
    """Lines in output_dir/steps.jsonl so far (0 before the file exists)."""
    try:
        with open(os.path.join(output_dir, "steps.jsonl")) as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=trainer_env(), capture_output=True, text=True, timeout=timeout)


def read_steps(output_dir) -> list[dict]:
    """The per-step records of ``output_dir/steps.jsonl``."""
    with open(os.path.join(output_dir, "steps.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _run_with_injected_nan() -> None:
    import torch

    from training import model as model_module

    calls = {int(c) for c in os.environ.get("INJECT_NAN_AT_CALLS", "").split(",") if c}
    only_rank = os.environ.get("INJECT_NAN_RANK")
    if only_rank is not None and only_rank != os.environ.get("RANK", "0"):
        calls = set()
    original = model_module.BertForPreTraining.forward
    count = [0]

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            count[0] += 1
            if count[0] in calls:
                out.loss = out.loss * torch.tensor(float("nan"))
        return out

    model_module.BertForPreTraining.forward = forward
    sys.argv = ["training", *sys.argv[1:]]
    sys.path.insert(0, REPO)
    runpy.run_path(os.path.join(REPO, "training", "__main__.py"), run_name="__main__")


if __name__ == "__main__":
    _run_with_injected_nan()
