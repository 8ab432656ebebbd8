"""infra/k8s/base/train_node.py as the pod runs it: a launcher process that starts the training
command as its child, forwards SIGTERM to it and exits with the code the Job's podFailurePolicy
expects (0 only when the last complete checkpoint is the final step). Each test starts processes,
so this sits in the integration layer; the launcher's pure functions are tested in
tests/unit/test_k8s_manifests.py."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from paths import REPO

LAUNCHER = os.path.join(REPO, "infra", "k8s", "base", "train_node.py")
spec = importlib.util.spec_from_file_location("train_node", LAUNCHER)
train_node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_node)


def write_checkpoint(output_dir, step, max_steps, complete=True):
    tag = os.path.join(output_dir, "checkpoints", f"step{step:08d}")
    os.makedirs(tag)
    with open(os.path.join(tag, "run_config.json"), "w") as f:
        json.dump({"version": 1, "config": {"trainer": {"max_steps": max_steps}}}, f)
    if complete:
        open(os.path.join(tag, "complete"), "w").close()


def launch(tmp_path, code: str, **popen):
    env = {**os.environ, "BERT_K8S_MARKER_WAIT_S": "0", "PYTHONPATH": REPO}
    return subprocess.Popen(
        [
            sys.executable,
            LAUNCHER,
            sys.executable,
            "-c",
            code,
            "--rdzv_endpoint=localhost:29500",
            f"output_dir={tmp_path}",
        ],
        env=env,
        **popen,
    )


@pytest.mark.parametrize(
    "checkpoints,expected",
    [
        ([], train_node.EXIT_STOPPED),  # stopped before the first checkpoint
        ([(100, 1000, True)], train_node.EXIT_STOPPED),  # stopped on request at step 100
        ([(1000, 1000, True)], 0),  # finished
        ([(500, 1000, True), (1000, 1000, False)], train_node.EXIT_STOPPED),  # final save not complete
    ],
)
def test_launcher_passes_zero_only_when_training_is_finished(tmp_path, checkpoints, expected):
    for step, max_steps, complete in checkpoints:
        write_checkpoint(str(tmp_path), step, max_steps, complete)
    assert launch(tmp_path, "pass").wait(timeout=120) == expected


def test_launcher_passes_a_failure_on(tmp_path):
    assert launch(tmp_path, "raise SystemExit(3)").wait(timeout=60) == 3


def test_launcher_forwards_sigterm(tmp_path):
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time, pathlib\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    proc = launch(tmp_path, code)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 7


def test_a_failed_torchrun_after_a_clean_stop_is_a_clean_stop(tmp_path):
    """torchrun exits 1 when it is signalled itself although its workers saved and exited 0: with
    the trainer's clean-stop file written, the launcher passes the clean stop's code on; without it,
    torchrun's 1."""
    from training.clean_stop import CLEAN_STOP_ENV

    assert train_node.CLEAN_STOP_ENV == CLEAN_STOP_ENV
    write_checkpoint(str(tmp_path), 100, 1000)
    stopped = (
        f"import json, os\njson.dump({{'step': 100}}, open(os.environ[{CLEAN_STOP_ENV!r}], 'w'))\nraise SystemExit(1)"
    )
    assert launch(tmp_path, stopped).wait(timeout=120) == train_node.EXIT_STOPPED
    assert launch(tmp_path, "raise SystemExit(1)").wait(timeout=120) == 1


def test_a_failed_torchrun_after_a_config_error_is_a_usage_error(tmp_path):
    """With the trainer's config-error file written, torchrun's 1 becomes 2 (the Job fails at once)."""
    from training.__main__ import CONFIG_ERROR_ENV, EXIT_CONFIG_ERROR

    assert (train_node.CONFIG_ERROR_ENV, train_node.EXIT_USAGE) == (CONFIG_ERROR_ENV, EXIT_CONFIG_ERROR)
    rejected = f"import os\nopen(os.environ[{CONFIG_ERROR_ENV!r}], 'w').write('{{}}')\nraise SystemExit(1)"
    assert launch(tmp_path, rejected).wait(timeout=120) == train_node.EXIT_USAGE


@pytest.mark.parametrize(
    "nproc,override,message",
    [
        # the schema's check, on every rank before the process group
        (2, "trainer.max_steps=0", "trainer.max_steps must be a positive integer"),
        # the trainer's check against the shards (length 64)
        (1, "model.max_position_embeddings=32", "max_position_embeddings"),
        (2, "model.max_position_embeddings=32", "max_position_embeddings"),  # every rank fails its own check
    ],
)
def test_a_config_error_under_torchrun_exits_2(trainer_shards, tmp_path, nproc, override, message):
    """The real thing: train_node.py runs torchrun running the trainer with an override the trainer
    rejects; each rank exits 2, torchrun exits 1, and the launcher exits 2 (podFailurePolicy: FailJob)
    instead of a 1 that the Job would retry up to backoffLimit."""
    from launch_helpers import torchrun_command, trainer_env
    from test_trainer import overrides

    command = torchrun_command(nproc, *overrides(trainer_shards, tmp_path / "run", override))
    result = subprocess.run(
        [sys.executable, LAUNCHER, *command],
        cwd=REPO,
        env={**trainer_env(), "BERT_K8S_MARKER_WAIT_S": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = result.stdout[-3000:] + result.stderr[-5000:]
    assert result.returncode == train_node.EXIT_USAGE, log
    assert "torchrun exited 1; exiting 2" in result.stderr, log
    assert "error: " in result.stderr and message in result.stderr, log  # the trainer's own line


def test_sigterm_to_a_torchrun_launched_run_stops_it_cleanly(trainer_shards, tmp_path):
    """The real thing: train_node.py runs torchrun (1 process) running the trainer, gets SIGTERM as
    the pod's PID 1 would and forwards it to torchrun, which exits 1; the run saved a checkpoint
    before max_steps, so the launcher exits 75 (replace the pod, resume), not torchrun's 1."""
    from launch_helpers import read_steps, steps_written, torchrun_command, trainer_env, wait_for
    from test_trainer import overrides

    out = tmp_path / "run"
    command = torchrun_command(1, *overrides(trainer_shards, out, "trainer.max_steps=200", "trainer.eval_every=0"))
    log = tmp_path / "launcher.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, LAUNCHER, *command],
            cwd=REPO,
            env={**trainer_env(), "BERT_K8S_MARKER_WAIT_S": "0"},
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: steps_written(out) >= 1, 300, "a first step", (proc,))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == train_node.EXIT_STOPPED, text[-4000:]
    assert "stopped on a signal" in text and "torchrun exited 1" in text, text[-4000:]
    stopped = len(read_steps(out))
    assert 0 < stopped < 200 and os.path.exists(out / "checkpoints" / f"step{stopped:08d}" / "complete")
