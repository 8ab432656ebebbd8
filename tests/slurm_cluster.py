"""A real SLURM cluster on this host for tests: munged, slurmctld and two slurmd "nodes" (n1, n2),
all in a temporary directory, on free ports, started and stopped by the test.

    with SlurmCluster(tmp_path) as cluster:
        job = cluster.sbatch(["--nodes=2", script, *args])
        cluster.wait(job, timeout=600)

Both nodes run on this machine (``NodeHostname`` this host, ``NodeAddr`` 127.0.0.1, each slurmd on
its own port); n1/n2 do not resolve as host names, so jobs must rendezvous at an address SLURM gives
(NodeAddr). No accounting daemon: a finished job is seen leaving the queue, its state is read from
its own output (``scontrol show job`` keeps it for MinJobAge seconds). Credentials expire after
10 s (``cred_expire``, default 120), which is also how long a requeued job waits to start again. Needs the Debian packages
slurm-wlm and munge (``.ci/run`` installs them); ``available()`` says whether they are here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from launch_helpers import free_port  # noqa: F401  (one helper for every test that needs a port)

DAEMONS = ("munged", "slurmctld", "slurmd")
NODES = ("n1", "n2")


def available() -> bool:
    return all(shutil.which(d) or os.path.exists(f"/usr/sbin/{d}") for d in DAEMONS) and bool(shutil.which("sbatch"))


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    def __init__(self, root: Path, cpus_per_node: int = 2):
        self.root = Path(root)
        self.cpus_per_node = cpus_per_node
        self.processes: list[subprocess.Popen] = []
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"

    # -- environment for every SLURM command --

    @property
    def env(self) -> dict:
        env = dict(os.environ, SLURM_CONF=str(self.conf))
        for name in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
            env.pop(name)  # a test run inside a SLURM job must not leak its job into ours
        return env

    def command(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    # -- start and stop --

    def __enter__(self) -> "SlurmCluster":
        try:
            self._start_munge()
            self._write_config()
            self._start(_binary("slurmctld"), "-D", "-i", log="slurmctld")
            self._wait_for(
                lambda: self.command("scontrol", "ping", check=False).stdout.count("UP") >= 1,
                30,
                "slurmctld did not answer",
            )
            for node in NODES:
                self._start(_binary("slurmd"), "-D", "-N", node, log=f"slurmd-{node}")
            self._wait_for(self._nodes_idle, 60, "the nodes did not register as idle")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        import psutil

        if self.conf.exists():
            self.command("scancel", "--user=root", "--full", check=False, timeout=30)
            try:  # let the daemons see their jobs end, so no slurmstepd outlives its slurmd
                self._wait_for(lambda: not self.command("squeue", "-h", check=False).stdout.strip(), 30, "")
            except TimeoutError:
                pass
        # Whatever the daemons started (slurmstepd, job scripts, their torchrun): stopped with them.
        descendants = []
        for p in self.processes:
            try:
                descendants += psutil.Process(p.pid).children(recursive=True)
            except psutil.Error:
                pass
        for p in reversed(self.processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in reversed(self.processes):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.processes.clear()
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(descendants, timeout=10)

    def _start(self, *argv: str, log: str) -> subprocess.Popen:
        out = open(self.root / f"{log}.out", "wb")
        p = subprocess.Popen(list(argv), env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(p)
        return p

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(parents=True, exist_ok=True)
        os.chmod(munge, 0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self._start(
            _binary("munged"),
            "--foreground",
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
            log="munged",
        )
        self._wait_for(self.munge_socket.exists, 20, "munged did not create its socket")

    def _write_config(self) -> None:
        host = socket.gethostname()
        spool = self.root / "spool"
        (spool / "ctld").mkdir(parents=True, exist_ok=True)
        for node in NODES:
            (spool / node).mkdir(parents=True, exist_ok=True)
        node_lines = "\n".join(
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={free_port()} CPUs={self.cpus_per_node} "
            "State=UNKNOWN"
            for node in NODES
        )
        self.conf.write_text(f"""\
ClusterName=test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={spool / "ctld"}
SlurmdSpoolDir={spool}/%n
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root}/slurmd-%n.pid
SlurmctldLogFile={self.root / "slurmctld.log"}
SlurmdLogFile={self.root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
MinJobAge=600
KillWait=10
{node_lines}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")

    def _nodes_idle(self) -> bool:
        states = self.command("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
        return sum(s.startswith("idle") for s in states[1::2]) == len(NODES)

    @staticmethod
    def _wait_for(condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.3)
        raise TimeoutError(message)

    # -- jobs --

    def sbatch(self, args: list[str], cwd: str | None = None, env: dict | None = None) -> str:
        r = subprocess.run(
            ["sbatch", "--parsable", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode:
            raise RuntimeError(f"sbatch failed: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def job_state(self, job_id: str) -> str:
        r = self.command("scontrol", "show", "job", job_id, check=False)
        for field in r.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return "UNKNOWN"

    def wait(self, job_id: str, timeout: float) -> str:
        """Wait until the job has left the running states; returns its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"):
                return state
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still {self.job_state(job_id)} after {timeout:.0f} s\n{self.logs()}")

    def logs(self, tail: int = 2000) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd-n1.log", "slurmd-n2.log"):
            path = self.root / name
            if path.exists():
                out.append(f"--- {name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)
