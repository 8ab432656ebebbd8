"""One node of a multi-node training Job: waits for the rendezvous host, runs torchrun, and tells
Kubernetes whether the run is finished.

    python train_node.py torchrun --nnodes=4 ... --rdzv_endpoint=<job>-0.<service>:29500 -m training \
        data_dir=... output_dir=... [overrides]

Mounted into the trainer container from a ConfigMap (``infra/k8s/base/kustomization.yaml``), so
changing it needs no image rebuild. It is PID 1 of the container, so it forwards SIGTERM/SIGINT to
torchrun (which forwards them to its workers).

Why a wrapper at all: the trainer answers SIGTERM by saving a checkpoint on *every* rank and
exiting 0 (``training/trainer.py``). When one pod of an Indexed Job is preempted, torchrun on the
other nodes therefore exits 0 too, and Kubernetes would count their indexes as succeeded: the
replacement pod would then wait alone at the rendezvous and the Job could never finish. So a zero
exit is only passed on when the newest complete checkpoint in output_dir (shared by every node)
has reached that run's ``trainer.max_steps``; a clean stop before that exits ``EXIT_STOPPED`` (75,
EX_TEMPFAIL), which the Job's ``podFailurePolicy`` ignores: the pod is replaced without counting
against ``backoffLimit``, and the trainer resumes exactly from that checkpoint.

A torchrun that receives the SIGTERM itself (this pod's, forwarded here) hands it to its workers,
waits for them to save and exit 0, and then exits 1 (it re-raises the signal as a SignalException).
So torchrun is given ``BERT_CLEAN_STOP_FILE``, a file the trainer's local rank 0 writes once the
checkpoint of such a stop is complete (``training/clean_stop.py``): torchrun's non-zero code with that
file written is a clean stop like a zero one.

torchrun also exits 1 when its workers exit 2 on a configuration or data-contract error (it reports
every worker failure as 1, after its restarts), which would count against ``backoffLimit`` and be
retried. So it is given ``BERT_CONFIG_ERROR_FILE`` too, a file a rank writes before it exits 2
(``training/__main__.py``): torchrun's non-zero code with that file written becomes 2, which the
Job's ``podFailurePolicy`` takes for a permanent failure.

Exit codes: torchrun's own when it fails (a preemption's is ignored by the ``DisruptionTarget``
rule; others count against ``backoffLimit``); 0 when training is finished; 75 after a clean stop
before ``max_steps`` (torchrun's code 0, or non-zero with the clean-stop file written); 2 for a
usage error: here (no ``output_dir=`` argument), torchrun's, or the trainer's configuration (its
config-error file written).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped with a checkpoint before max_steps; run the same command again
EXIT_USAGE = 2  # also the trainer's for a configuration error (training/__main__.py)
RDZV_DNS_TIMEOUT_S = float(os.environ.get("BERT_K8S_RDZV_DNS_TIMEOUT_S", "900"))
"""How long to wait for pod 0's DNS record (published once pod 0 has an IP) before torchrun starts."""
CLEAN_STOP_ENV = "BERT_CLEAN_STOP_FILE"
"""Where the trainer's local rank 0 writes {"step", "signal", "checkpoint"} after saving and stopping on a signal."""
CONFIG_ERROR_ENV = "BERT_CONFIG_ERROR_FILE"
"""Where a rank of the trainer writes {"rank"} before exiting 2 on a configuration or data-contract error."""
MARKER_WAIT_S = float(os.environ.get("BERT_K8S_MARKER_WAIT_S", "120"))
"""How long to wait, after torchrun exits 0, for rank 0 (maybe on another node) to mark the final
checkpoint complete and for the shared filesystem to show it."""


def hydra_value(argv: list[str], key: str) -> Optional[str]:
    """The value of a ``key=value`` Hydra override in the trainer's arguments (last one wins)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(key + "=")]
    return values[-1] if values else None


def rendezvous_host(argv: list[str]) -> Optional[str]:
    """The host of torchrun's ``--rdzv_endpoint`` / ``--rdzv-endpoint`` (``host:port``), if given."""
    for i, arg in enumerate(argv):
        for flag in ("--rdzv_endpoint", "--rdzv-endpoint"):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1].rsplit(":", 1)[0]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1].rsplit(":", 1)[0]
    return None


def wait_for_dns(host: str, timeout_s: float) -> bool:
    """True once ``host`` resolves. The headless Service publishes pod 0's name only after pod 0
    has an address; torchrun would fail at once on a name that does not resolve yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.getaddrinfo(host, None)
            return True
        except socket.gaierror:
            if time.monotonic() >= deadline:
                return False
            time.sleep(2.0)


def training_finished(output_dir: str) -> bool:
    """Whether the newest complete checkpoint in ``output_dir`` is at its run's ``trainer.max_steps``."""
    from training import checkpoint as ckpt  # the installed package; imports torch, so only here

    checkpoint_dir = os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR)
    tag = ckpt.latest_complete(checkpoint_dir)
    if tag is None:
        return False
    record = ckpt.read_run_record(checkpoint_dir, tag) or {}
    max_steps = record.get("config", {}).get("trainer", {}).get("max_steps")
    return max_steps is not None and ckpt.step_of(tag) >= int(max_steps)


def run(command: list[str]) -> int:
    """torchrun ``command`` with SIGTERM/SIGINT forwarded to it, given the trainer's clean-stop and
    config-error files; its exit code as ``outcome`` reads it."""
    with tempfile.TemporaryDirectory() as marks:
        stop_file = os.path.join(marks, "clean-stop.json")
        config_error_file = os.path.join(marks, "config-error.json")
        env = {**os.environ, CLEAN_STOP_ENV: stop_file, CONFIG_ERROR_ENV: config_error_file}
        child = subprocess.Popen(command, env=env)

        def forward(signum, frame):
            child.send_signal(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        return outcome(child.wait(), stop_file, config_error_file)


def outcome(code: int, stop_file: str, config_error_file: str) -> int:
    """torchrun's exit ``code``, or what it stands for when it is not 0: EXIT_USAGE when a rank
    exited on a configuration error (``config_error_file`` written), 0 when the trainer saved and
    stopped on a signal (``stop_file`` written)."""
    if code == 0:
        return 0
    if os.path.exists(config_error_file):
        print(
            f"train_node.py: the trainer rejected its configuration or data (its error: above); torchrun "
            f"exited {code}; exiting {EXIT_USAGE}, which fails the Job at once: fix the arguments, then apply again",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if os.path.exists(stop_file):
        with open(stop_file) as f:
            print(
                f"train_node.py: the trainer saved a checkpoint and stopped on a signal ({f.read().strip()}); "
                f"torchrun exited {code} because it was signalled too: a clean stop",
                file=sys.stderr,
            )
        return 0
    return code


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return EXIT_USAGE
    output_dir = hydra_value(argv, "output_dir")
    if output_dir is None:
        print("train_node.py: the trainer's arguments have no output_dir=...", file=sys.stderr)
        return EXIT_USAGE
    host = rendezvous_host(argv)
    if host and not wait_for_dns(host, RDZV_DNS_TIMEOUT_S):
        print(
            f"train_node.py: rendezvous host {host} did not resolve within {RDZV_DNS_TIMEOUT_S:.0f} s "
            f"(is the headless Service there, and the pod template's subdomain its name?)",
            file=sys.stderr,
        )
        return 1
    code = run(argv)
    if code != 0:
        return code
    deadline = time.monotonic() + MARKER_WAIT_S
    while not training_finished(output_dir):
        if time.monotonic() >= deadline:
            print(
                f"train_node.py: stopped before trainer.max_steps (newest complete checkpoint in "
                f"{output_dir}); exiting {EXIT_STOPPED} so the Job replaces this pod and resumes",
                file=sys.stderr,
            )
            return EXIT_STOPPED
        time.sleep(5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
