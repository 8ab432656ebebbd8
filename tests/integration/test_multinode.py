"""The trainer beyond one machine, on one: two torchrun agents as separate processes on 127.0.0.1
(c10d and static rendezvous), the checks that make the ranks agree, and elastic restarts after
a worker or a whole node is killed with SIGKILL. Real agents, real DeepSpeed on gloo, the real
shards (``trainer_shards``), tiny model; every run is compared with one agent running 2 processes.

OMP_NUM_THREADS=1 everywhere (``launch_helpers.multinode_env``): torchrun sets it only for
nproc_per_node > 1, and another thread count changes float sums (5e-7). With it, 2 nodes x 1
process and 1 node x 2 processes give the same losses bit for bit.

Wall times measured here (2 shared cores): shards + the 1 x 2 reference 18 s, the two-agent runs
10-11 s, the disagreements 6-9 s, the worker restart 14 s, the node restart 32 s; the module
1 min 46 s.
"""

import os
import re
import signal

import pytest

from launch_helpers import (
    REPO,
    TORCHRUN,
    c10d_node_command,
    descendants,
    free_port,
    kill_with_descendants,
    multinode_env,
    port_open,
    read_steps,
    start,
    static_node_command,
    steps_written,
    stop,
    wait_for,
)
from test_trainer import SMOKE, assert_same_steps
from training import checkpoint as ckpt

STEPS = 12
CHECKPOINT_EVERY = 4
RUN_TIMEOUT = 300


def overrides(shards, output_dir, *extra):
    """2 ranks on gloo, ZeRO-2 fp32: global 8 = micro 4 x accumulation 1 x 2 ranks."""
    return (
        *SMOKE,
        f"data_dir={shards}",
        f"output_dir={output_dir}",
        "deepspeed=zero2",
        "deepspeed.precision=fp32",
        f"trainer.max_steps={STEPS}",
        f"trainer.checkpoint_every={CHECKPOINT_EVERY}",
        "trainer.eval_every=0",
        *extra,
    )


def log_tail(path, chars=4000):
    with open(path) as f:
        return f.read()[-chars:]


def finish(procs_and_logs, timeout=RUN_TIMEOUT):
    """Wait for every (process, log path); returns the exit codes. Kills what is left on a timeout."""
    procs = [p for p, _ in procs_and_logs]
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        stop(*procs)


def start_two_nodes(first, second, tmp_path, second_cwd=REPO, env=None):
    """Start node 0's agent, wait until it listens (it then hosts the store), then node 1's."""
    logs = tmp_path / "node0.log", tmp_path / "node1.log"
    node0 = start(first[0], logs[0], env=env)
    wait_for(lambda: port_open(first[1]), 120, "node 0's store", (node0,))
    node1 = start(second, logs[1], cwd=second_cwd, env=env)
    return [(node0, logs[0]), (node1, logs[1])]


@pytest.fixture(scope="module")
def one_node_two_processes(trainer_shards, tmp_path_factory):
    """torchrun --standalone --nproc_per_node=2: the uninterrupted run everything is compared with."""
    out = tmp_path_factory.mktemp("one_node")
    log = out / "torchrun.log"
    proc = start(
        [*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "training", *overrides(trainer_shards, out / "run")],
        log,
    )
    assert finish([(proc, log)]) == [0], log_tail(log)
    steps = read_steps(out / "run")
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    ONE_NODE_RUN_DIR.append(out / "run")
    return steps


ONE_NODE_RUN_DIR = []
"""Where ``one_node_two_processes`` trained (a finished run's output_dir, to resume into a copy of)."""


def test_two_c10d_agents_train_as_one_node_with_two_processes(trainer_shards, one_node_two_processes, tmp_path):
    """--nnodes=2 --nproc_per_node=1 --rdzv_backend=c10d, node 1 started elsewhere with a relative
    output_dir that names the same directory: the same losses and example ids, bit for bit. 10 s."""
    port, run_dir = free_port(), tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    node0 = c10d_node_command(port, "c10d", *overrides(trainer_shards, run_dir))
    node1 = c10d_node_command(port, "c10d", *overrides(trainer_shards, os.path.join("..", "run")))
    nodes = start_two_nodes((node0, port), node1, tmp_path, second_cwd=str(elsewhere))
    codes = finish(nodes)
    assert codes == [0, 0], log_tail(nodes[0][1]) + log_tail(nodes[1][1])
    assert_same_steps(read_steps(run_dir), one_node_two_processes)
    assert not os.listdir(elsewhere), "node 1 wrote beside its working directory"
    assert ckpt.latest_complete(os.path.join(run_dir, "checkpoints")) == ckpt.tag_for(STEPS)


def test_two_static_agents_train_as_one_node_with_two_processes(trainer_shards, one_node_two_processes, tmp_path):
    """--nnodes=2 --node_rank=0/1 --master_addr/--master_port, node 1 reaching the directory through
    a symlink: the same losses and example ids, bit for bit. 11 s."""
    port, run_dir = free_port(), tmp_path / "run"
    os.symlink(tmp_path, tmp_path / "link")
    node0 = static_node_command(0, port, *overrides(trainer_shards, run_dir))
    node1 = static_node_command(1, port, *overrides(trainer_shards, tmp_path / "link" / "run"))
    nodes = start_two_nodes((node0, port), node1, tmp_path)
    codes = finish(nodes)
    assert codes == [0, 0], log_tail(nodes[0][1]) + log_tail(nodes[1][1])
    assert_same_steps(read_steps(run_dir), one_node_two_processes)


@pytest.mark.parametrize("what", ["config", "output_dir"])
def test_ranks_that_disagree_stop_together_with_one_message(trainer_shards, tmp_path, what):
    """Node 1 started with another optim.lr, or another output_dir: every rank stops right after
    the process group is up (before the model is built), each printing the same `error:` naming
    what differs and on which ranks; the workers exit 2. 6 s (config), 8 s (output_dir: the other
    rank looks for rank 0's probe file for 3 s)."""
    port = free_port()
    node0 = c10d_node_command(port, what, *overrides(trainer_shards, tmp_path / "run"))
    other = ("optim.lr=1e-3",) if what == "config" else ()
    node1_dir = tmp_path / ("run" if what == "config" else "other_run")
    node1 = c10d_node_command(port, what, *overrides(trainer_shards, node1_dir, *other))
    nodes = start_two_nodes((node0, port), node1, tmp_path)
    codes = finish(nodes)
    logs = [log_tail(log, 100_000) for _, log in nodes]
    assert codes[0] != 0 and codes[1] != 0, logs
    for log in logs:
        assert "error: the ranks of this run disagree, so none of them starts:" in log, log[-4000:]
        assert re.search(r"exitcode\s*:\s*2\b", log), log[-3000:]  # torchrun's report of our exit code
        assert f'File "{REPO}/training' not in log, log[-4000:]  # one message, not a traceback of ours
        assert "DeepSpeed info" not in log and "Total Parameters" not in log  # no engine was built
        if what == "config":
            assert "config differs: rank 1 (host" in log and "optim.lr=0.001, where rank 0" in log, log[-4000:]
            assert "has optim.lr=0.003" in log
        else:
            assert "output_dir differs: rank 0 (host" in log and f"writes to {tmp_path / 'run'}" in log, log[-4000:]
            assert "on rank 1 (host" in log and f"it is {node1_dir}" in log
    for d in (tmp_path / "run", node1_dir):
        assert not os.path.exists(d / "checkpoints") and not os.path.exists(d / "steps.jsonl")
        assert not [n for n in os.listdir(d) if n.startswith(".rank0-probe")]


def checkpoint_then_more_steps(output_dir):
    """True once a checkpoint is complete and at least one step after it is in steps.jsonl."""
    tag = ckpt.latest_complete(os.path.join(output_dir, "checkpoints"))
    return tag is not None and steps_written(output_dir) > ckpt.step_of(tag)


def resumed_at(log_text):
    return [int(m) for m in re.findall(r"resumed from \S+ at step (\d+)", log_text)]


RESTART = ("trainer.dist_timeout_minutes=1",)  # a collective that waits on a lost peer gives up in a minute


def test_a_node_whose_config_fails_the_resume_check_stops_every_rank(trainer_shards, one_node_two_processes, tmp_path):
    """Into a copy of a finished run's output_dir, node 1 with another optim.lr: its own resume check
    fails before the process group; it still joins and says so, and node 0 stops with the same
    message instead of waiting for it until the collective timeout. 6 s."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(ONE_NODE_RUN_DIR[0], run_dir)
    port = free_port()
    node0 = c10d_node_command(port, "resume", *overrides(trainer_shards, run_dir))
    node1 = c10d_node_command(port, "resume", *overrides(trainer_shards, run_dir, "optim.lr=1e-3"))
    nodes = start_two_nodes((node0, port), node1, tmp_path)
    codes = finish(nodes, timeout=180)
    logs = [log_tail(log, 100_000) for _, log in nodes]
    assert codes[0] != 0 and codes[1] != 0, logs
    for log in logs:  # the rank that failed says why; the other names it and says the same
        assert "optim.lr: 0.003 -> 0.001" in log and re.search(r"exitcode\s*:\s*2\b", log), log[-4000:]
    failed_rank = r"error: rank 1 \(host \S+\) stopped before training: output_dir holds checkpoint \S+step00000012 "
    assert sum(bool(re.search(failed_rank, log)) for log in logs) == 1, logs
    assert sum("error: output_dir holds checkpoint" in log for log in logs) == 1, logs
    assert [s["step"] for s in read_steps(run_dir)] == list(range(1, STEPS + 1))


def test_killed_worker_restarts_the_group_and_resumes_exactly(trainer_shards, one_node_two_processes, tmp_path):
    """torchrun --max-restarts=2, 2 processes; rank 1 gets SIGKILL after a complete checkpoint,
    mid-run. The agent restarts the group, which resumes from the newest complete checkpoint; every
    step equals the uninterrupted run's. (Before the fresh store namespace of
    ``distributed.fresh_group_namespace``, the restarted group read the dead group's gloo
    addresses from torchrun's shared store: "Connection refused", then a hang in connectFullMesh
    until the collective timeout.) 14 s."""
    run_dir, log = tmp_path / "run", tmp_path / "torchrun.log"
    agent = start(
        [
            *TORCHRUN,
            "--standalone",
            "--nproc_per_node=2",
            "--max-restarts=2",
            "-m",
            "training",
            *overrides(trainer_shards, run_dir, *RESTART),
        ],
        log,
    )
    try:
        wait_for(
            lambda: checkpoint_then_more_steps(run_dir),
            RUN_TIMEOUT,
            "a checkpoint and a step after it",
            (agent,),
            period=0.02,
        )
        rank1 = [p for p in descendants(agent) if p.ppid() == agent.pid and p.environ().get("RANK") == "1"]
        assert len(rank1) == 1, descendants(agent)
        rank1[0].send_signal(signal.SIGKILL)
        killed_at = steps_written(run_dir)
        assert killed_at < STEPS
        code = agent.wait(timeout=RUN_TIMEOUT)
    finally:
        stop(agent)
    text = log_tail(log, 1_000_000)
    assert code == 0, text[-5000:]
    assert re.search(r"exitcode: -9\) local_rank: 1", text), text[-3000:]
    resumed = resumed_at(text)
    assert len(resumed) == 1 and CHECKPOINT_EVERY <= resumed[0] <= killed_at, (resumed, killed_at)
    steps = read_steps(run_dir)
    assert_same_steps(steps, one_node_two_processes)


def test_killed_node_rejoins_and_the_run_resumes_exactly(trainer_shards, one_node_two_processes, tmp_path):
    """Two c10d agents, --max-restarts=2. Node 1 (its torchrun and its worker) gets SIGKILL after
    a complete checkpoint; node 0's worker fails on the lost peer and its agent restarts it (one of
    its restarts) into a new rendezvous round, which waits for a second node; meanwhile steps.jsonl
    gets a half-written last line (as from a rank 0 killed mid-write). Node 1 is started again
    with the same command, joins the round, and the run completes with every step equal to the
    uninterrupted run's. TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 on both agents: with torch 2.13's
    shared store the new agent waits 60 s for a store address the old rank-0 agent never
    publishes, and both fail (``distributed.warn_if_nodes_cannot_rejoin``). 32 s."""
    port, run_dir = free_port(), tmp_path / "run"
    env = {**multinode_env(), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    command = c10d_node_command(port, "rejoin", *overrides(trainer_shards, run_dir, *RESTART), max_restarts=2)
    (node0, log0), (node1, log1) = start_two_nodes((command, port), command, tmp_path, env=env)
    log1_again = tmp_path / "node1_again.log"
    node1_again = None
    try:
        wait_for(
            lambda: checkpoint_then_more_steps(run_dir),
            RUN_TIMEOUT,
            "a checkpoint and a step after it",
            (node0, node1),
            period=0.02,
        )
        kill_with_descendants(node1)
        killed_at = steps_written(run_dir)
        assert killed_at < STEPS
        node1.wait(timeout=60)
        # node 0's agent stops its worker (it failed on the lost peer) and waits in the next round
        wait_for(lambda: not descendants(node0), 120, "node 0's worker to fail", (node0,))
        with open(run_dir / "steps.jsonl", "a") as f:
            f.write('{"step": 99, "loss": 7.')
        node1_again = start(command, log1_again, env=env)
        codes = [node0.wait(timeout=RUN_TIMEOUT), node1_again.wait(timeout=RUN_TIMEOUT)]
    finally:
        stop(node0, node1, *([node1_again] if node1_again else []))
    texts = [log_tail(p, 1_000_000) for p in (log0, log1_again)]
    assert codes == [0, 0], texts[0][-4000:] + texts[1][-4000:]
    # node 0's worker failed and its agent went on (one of its --max-restarts): it is the one that resumed
    assert re.search(r"failed \(exitcode: 1\) local_rank: 0", texts[0]), texts[0][-3000:]
    resumed = resumed_at("".join(texts))
    assert len(resumed) == 1 and CHECKPOINT_EVERY <= resumed[0] <= killed_at, (resumed, killed_at)
    assert "dropped a half-written last line" in "".join(texts)
    assert_same_steps(read_steps(run_dir), one_node_two_processes)
