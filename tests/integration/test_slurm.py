"""Training on a real SLURM cluster: munged, slurmctld and two slurmd "nodes" on this host
(tests/slurm_cluster.py), started for this module and stopped after it.

- infra/slurm/train.sbatch on 2 nodes x 1 task gives the step losses and example ids of a
  `torchrun --nproc_per_node=2` run on one node (OMP_NUM_THREADS=1 for both: the thread count
  changes float sums).
- Each rank runs on the CPUs the job asked for (--cpus-per-task), read from the running rank
  processes, with srun confining steps to what they ask for (SLURM_EXACT=1: srun's --exact), where a
  step that is not told the job's --cpus-per-task gets 1 CPU (task/affinity binds the tasks here).
- A time limit coming (USR1 to the batch script, as ``--signal=B:USR1@180`` sends it): the ranks
  checkpoint, the job requeues itself, and its next run resumes; every step equals the
  uninterrupted run's.
- A signal to the job's step (``scancel --signal=TERM``): the ranks save and stop, each node's
  torchrun exits 1 (it was signalled itself), and the job still COMPLETES (the trainer's clean-stop
  file); a run that fails its config check still FAILS the job.
- A Hydra sweep of two points through hydra-submitit-launcher (``hydra/launcher=slurm``) runs each
  point as its own SLURM job in its own output_dir/<k>.

Skipped only where the SLURM binaries are absent (``.ci/run`` installs them). Wall times here
(2 cores): cluster start ~1 s; the sbatch run ~45 s; the requeue test ~60 s; the sweep ~10 s.
"""

import json
import os
import subprocess
import sys
import time

import pytest

import slurm_cluster
from launch_helpers import REPO, read_steps, run, torchrun_command, trainer_env
from test_trainer import SMOKE

pytestmark = pytest.mark.skipif(
    not slurm_cluster.available(), reason="needs SLURM (Debian packages slurm-wlm and munge; .ci/run installs them)"
)

SBATCH = os.path.join(REPO, "infra", "slurm", "train.sbatch")
CPUS_PER_TASK = 2
"""Every CPU of a test node (tests/slurm_cluster.py), asked for on each submission: the recipe's
default (32, for 8 GPUs) does not fit. More than srun's default of 1, so an unbound task would show."""
STEPS = 60
"""Long enough (a few seconds of steps) for the requeue test to signal mid-run."""
RUN = ("trainer.eval_every=0", "trainer.checkpoint_every=1000", f"trainer.max_steps={STEPS}")


class BindingCluster(slurm_cluster.SlurmCluster):
    """The test cluster with task/affinity: each task is bound to the CPUs its step was given, as
    on GPU clusters (task/affinity or task/cgroup), so a rank's CPU affinity says what SLURM gave it."""

    def _write_config(self) -> None:
        super()._write_config()
        self.conf.write_text(self.conf.read_text().replace("TaskPlugin=task/none", "TaskPlugin=task/affinity"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with BindingCluster(tmp_path_factory.mktemp("slurm")) as c:
        assert "TaskPlugin=task/affinity" in c.conf.read_text()
        yield c


def job_env(cluster) -> dict:
    """What the batch script inherits (sbatch exports the submitting environment)."""
    return dict(
        trainer_env(),
        **cluster.env,
        PYTHON=sys.executable,
        RDZV_PORT=str(slurm_cluster.free_port()),
        OMP_NUM_THREADS="1",
        SLURM_EXACT="1",  # srun --exact: a step gets only the CPUs it asks for
    )


def submit(cluster, shards, output_dir, *extra):
    return cluster.sbatch(
        [
            "--nodes=2",
            "--ntasks-per-node=1",
            f"--cpus-per-task={CPUS_PER_TASK}",
            f"--output={output_dir}.%j.out",
            SBATCH,
            *SMOKE,
            f"data_dir={shards}",
            f"output_dir={output_dir}",
            *RUN,
            *extra,
        ],
        cwd=REPO,
        env=job_env(cluster),
    )


def job_log(cluster, output_dir, job) -> str:
    path = f"{output_dir}.{job}.out"
    text = open(path).read() if os.path.exists(path) else "(no job output)"
    return text[-4000:] + "\n" + cluster.logs()


@pytest.fixture(scope="module")
def torchrun_reference(trainer_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun") / "run"
    result = run(torchrun_command(2, *SMOKE, f"data_dir={trainer_shards}", f"output_dir={out}", *RUN))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return read_steps(out)


def same_steps(a, b):
    assert [s["step"] for s in a] == [s["step"] for s in b]
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"], (x["step"], x["loss"], y["loss"])
        assert x["example_ids"] == y["example_ids"]


def rank_cpus(job: str) -> list[tuple[str, str, set[int]]]:
    """(node, RANK, CPUs) of each running process of ``job``'s ranks: the CPUs it may run on
    (os.sched_getaffinity, read from outside: both nodes are this host). A rank is a process with RANK
    in its environment (torchrun sets it for its workers only; their loader workers would count too)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            env = p.environ()
            if env.get("SLURM_JOB_ID") == job and "RANK" in env:
                found.append((env.get("SLURMD_NODENAME"), env["RANK"], set(p.cpu_affinity())))
        except psutil.Error:
            continue  # gone, or not ours to read
    return found


@pytest.fixture(scope="module")
def sbatch_run(cluster, trainer_shards, tmp_path_factory):
    """The job's output_dir, its id, and its ranks' CPUs (read once each node has trained a step)."""
    out = tmp_path_factory.mktemp("sbatch") / "run"
    job = submit(cluster, trainer_shards, out)
    wait_for_steps(cluster, job, out, 1)
    cpus = rank_cpus(job)
    state = cluster.wait(job, timeout=600)
    assert state == "COMPLETED", f"job {job} ended {state}\n{job_log(cluster, out, job)}"
    return out, job, cpus


def test_sbatch_on_two_nodes_equals_torchrun_on_one(cluster, sbatch_run, torchrun_reference):
    out, job, _ = sbatch_run
    log = open(f"{out}.{job}.out").read()
    assert "2 node(s) x 1, rendezvous 127.0.0.1:" in log  # NodeAddr, not the node name
    same_steps(read_steps(out), torchrun_reference)


def test_every_rank_runs_on_the_cpus_the_job_asked_for(sbatch_run):
    """--cpus-per-task reaches each node's task through srun (SRUN_CPUS_PER_TASK): without it, this
    SLURM (22.05) under --exact binds each node's torchrun and its ranks to 1 CPU."""
    out, job, ranks = sbatch_run
    assert sorted(node for node, _, _ in ranks) == ["n1", "n2"] and {r for _, r, _ in ranks} == {"0", "1"}, ranks
    assert [len(cpus) for _, _, cpus in ranks] == [CPUS_PER_TASK] * 2, ranks
    log = open(f"{out}.{job}.out").read()
    for node in ("n1", "n2"):
        assert f"{node}: torchrun and its 1 rank(s) run on {CPUS_PER_TASK} CPU(s)" in log, log[-3000:]


def test_time_limit_checkpoints_requeues_and_resumes(cluster, trainer_shards, sbatch_run, tmp_path):
    out = tmp_path / "run"
    job = submit(cluster, trainer_shards, out)
    steps_file = out / "steps.jsonl"
    deadline = time.monotonic() + 300
    while not (steps_file.exists() and len(steps_file.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline, job_log(cluster, out, job)
        assert cluster.job_state(job) in ("PENDING", "RUNNING", "CONFIGURING"), job_log(cluster, out, job)
        time.sleep(0.2)
    cluster.command("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@180 sends
    # The job requeues itself and starts again once its old credential expired (cred_expire=10 s here).
    state = cluster.wait(job, timeout=600)
    assert state == "COMPLETED", f"job {job} ended {state}\n{job_log(cluster, out, job)}"
    log = open(f"{out}.{job}.out").read()
    assert "time limit near: checkpointing, then requeueing" in log and "(restart 1)" in log, log[-3000:]
    saved = [int(line.rsplit("step", 1)[1]) for line in log.splitlines() if line.startswith("saved checkpoint")]
    assert saved and saved[0] < STEPS, log[-3000:]  # the signal's checkpoint came before the end
    assert f"resumed from {out / 'checkpoints'}" in log
    sbatch_out, _, _ = sbatch_run
    same_steps(read_steps(out), read_steps(sbatch_out))


def wait_for_steps(cluster, job, out, count):
    steps_file = out / "steps.jsonl"
    deadline = time.monotonic() + 300
    while not (steps_file.exists() and len(steps_file.read_text().splitlines()) >= count):
        assert time.monotonic() < deadline, job_log(cluster, out, job)
        assert cluster.job_state(job) in ("PENDING", "RUNNING", "CONFIGURING"), job_log(cluster, out, job)
        time.sleep(0.2)


def test_a_signal_to_the_job_saves_and_the_job_completes(cluster, trainer_shards, tmp_path):
    """scancel --signal=TERM reaches every process of the job's step: each node's torchrun (which
    then exits 1, re-raising the signal) and the ranks, which save and exit 0. Each node's task
    sees the trainer's clean-stop file and exits 0, so the job ends COMPLETED with the checkpoint."""
    out = tmp_path / "run"
    job = submit(cluster, trainer_shards, out)
    wait_for_steps(cluster, job, out, 3)
    cluster.command("scancel", "--signal=TERM", job)  # the job's steps, not the batch script
    state = cluster.wait(job, timeout=600)
    log = open(f"{out}.{job}.out").read()
    assert state == "COMPLETED", f"job {job} ended {state}\n{job_log(cluster, out, job)}"
    assert log.count("stopped cleanly on a signal, checkpoint saved") == 2, log[-4000:]  # one line per node
    saved = [int(line.rsplit("step", 1)[1]) for line in log.splitlines() if line.startswith("saved checkpoint")]
    assert len(saved) == 1 and saved[0] < STEPS, log[-4000:]
    assert os.path.exists(out / "checkpoints" / f"step{saved[0]:08d}" / "complete")


def test_a_failing_run_still_fails_the_job(cluster, trainer_shards, tmp_path):
    out = tmp_path / "run"
    job = submit(cluster, trainer_shards, out, "model.max_position_embeddings=32")  # shards of length 64
    state = cluster.wait(job, timeout=600)
    assert state == "FAILED", f"job {job} ended {state}\n{job_log(cluster, out, job)}"
    assert "stopped cleanly" not in open(f"{out}.{job}.out").read()


def test_hydra_sweep_runs_each_point_as_a_slurm_job(cluster, trainer_shards, tmp_path):
    out = tmp_path / "sweep"
    env = dict(trainer_env(), **cluster.env, OMP_NUM_THREADS="1")
    smoke = [o for o in SMOKE if not o.startswith("optim.lr=")]  # the sweep sets it
    command = [
        sys.executable,
        "-m",
        "training",
        "-m",
        "hydra/launcher=slurm",
        *smoke,
        "optim.lr=1e-3,2e-3",
        f"data_dir={trainer_shards}",
        f"output_dir={out}",
        "trainer.max_steps=3",
        "trainer.eval_every=0",
        "hydra.launcher.timeout_min=10",
    ]
    # submitit cannot see a failed job without SLURM accounting and would wait: bound it here.
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + cluster.logs()
    lrs = {}
    for k in (0, 1):
        steps = read_steps(out / str(k))
        assert [s["step"] for s in steps] == [1, 2, 3]
        lrs[k] = steps[1]["lr"]  # warmup 2 (cpu_smoke): step 2 trains at half the peak
    assert (lrs[0], lrs[1]) == (0.5e-3, 1e-3)
    jobs = list((out / ".submitit").iterdir())
    assert len({p.name.split("_")[0] for p in jobs}) == 2, jobs  # two SLURM jobs, not one process
    assert "SlurmLauncher" in (out / "multirun.yaml").read_text()


def test_the_sbatch_script_passes_overrides_with_spaces_and_quotes(cluster, tmp_path):
    """The overrides reach `python -m training` unsplit: a fake PYTHON prints its argv per node."""
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/bash\nprintf \'%s\\n\' "$@" > "$OUT_DIR/argv.$SLURM_NODEID"\n')
    fake.chmod(0o755)
    env = dict(job_env(cluster), PYTHON=str(fake), OUT_DIR=str(tmp_path))
    job = cluster.sbatch(
        [
            "--nodes=2",
            "--ntasks-per-node=1",
            f"--cpus-per-task={CPUS_PER_TASK}",
            f"--output={tmp_path}/job.out",
            SBATCH,
            "logger.name=my run 'one'",
            "optim.lr=1e-4",
        ],
        cwd=REPO,
        env=env,
    )
    assert cluster.wait(job, timeout=120) == "COMPLETED", open(tmp_path / "job.out").read()
    for node in (0, 1):
        argv = (tmp_path / f"argv.{node}").read_text().splitlines()
        assert argv[-2:] == ["logger.name=my run 'one'", "optim.lr=1e-4"]
        assert "--nnodes=2" in argv and "--nproc_per_node=1" in argv and "--rdzv_backend=c10d" in argv
        assert json.dumps(argv)  # plain strings
