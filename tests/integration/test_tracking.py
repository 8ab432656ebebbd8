"""Tracking: redaction, the progress line, and a W&B offline run read back from its files."""

import glob
import json
import os
import struct
import sys
import time
import zlib

import pytest

from training.config import LoggerConfig
from training.tracking import REDACTED, NullTracker, WandbTracker, format_progress, is_secret_key, make_tracker, redact

# --- redaction ---------------------------------------------------------------------------------


def test_redact_replaces_secrets_at_any_depth_and_keeps_the_rest():
    config = {
        "WANDB_API_KEY": "k1",
        "seed": 1,
        "logger": {"project": "p", "api_key": "k2", "tags": ["a"]},
        "env": [{"hf_token": "t", "name": "x"}, {"authToken": "t2"}],
        "db": {"Password": "pw", "client_secret": "s", "apiKey": "k3", "token": "t3"},
        "data": {"special_tokens": {"pad": 0}, "tokenizer": "wordpiece", "max_seq_length": 128},
    }
    before = json.dumps(config, sort_keys=True)
    out = redact(config)
    assert json.dumps(config, sort_keys=True) == before  # input untouched
    assert out == {
        "WANDB_API_KEY": REDACTED,
        "seed": 1,
        "logger": {"project": "p", "api_key": REDACTED, "tags": ["a"]},
        "env": [{"hf_token": REDACTED, "name": "x"}, {"authToken": REDACTED}],
        "db": {"Password": REDACTED, "client_secret": REDACTED, "apiKey": REDACTED, "token": REDACTED},
        "data": {"special_tokens": {"pad": 0}, "tokenizer": "wordpiece", "max_seq_length": 128},
    }


def test_a_secret_whole_subtree_is_redacted():
    assert redact({"secrets": {"a": 1}}) == {"secrets": REDACTED}
    assert not is_secret_key("num_tokens") and not is_secret_key("tokenizer")


# --- terminal progress -------------------------------------------------------------------------


def test_progress_line_has_step_loss_throughput_and_time_left():
    line = format_progress(step=250, max_steps=1000, loss=6.12341, tokens_per_s=12345.0, seconds_elapsed=100.0)
    assert line == "step 250/1000 (25.0%) | loss 6.1234 | 12.3k tok/s | 0:01:40 elapsed, 0:05:00 left"


def test_progress_time_left_counts_only_this_process_steps_after_a_resume():
    # Resumed at 500: 100 steps in 50 s, 400 to go -> 200 s.
    line = format_progress(600, 1000, 2.0, 2.5e6, 50.0, start_step=500)
    assert line.endswith("| 2.5M tok/s | 0:00:50 elapsed, 0:03:20 left")
    assert format_progress(0, 10, 9.0, 0.0, 0.0).endswith("0:00:00 elapsed, ? left")


# --- trackers without W&B ----------------------------------------------------------------------


def test_other_ranks_backend_none_and_disabled_mode_get_a_null_tracker_without_importing_wandb(tmp_path):
    wandb_loaded = "wandb" in sys.modules
    offline = LoggerConfig(backend="wandb", mode="offline", dir=str(tmp_path))
    cases = [
        (offline, 1),
        (LoggerConfig(backend="none", mode="disabled"), 0),
        (LoggerConfig(backend="wandb", mode="disabled", dir=str(tmp_path)), 0),
    ]
    for cfg, rank in cases:
        tracker = make_tracker(cfg, {"seed": 1}, str(tmp_path), rank=rank, resume_run_id="abc")
        assert isinstance(tracker, NullTracker)
        tracker.log({"loss": 1.0}, step=1)
        tracker.summary({"eval/loss": 1.0})
        tracker.finish()
        assert tracker.run_id == "abc"  # handed on to the next checkpoint
    assert make_tracker(offline, {}, str(tmp_path), rank=3, resume_run_id=None).run_id is None
    assert os.listdir(tmp_path) == []
    if not wandb_loaded:
        assert "wandb" not in sys.modules


# --- a W&B offline run, read back from its transaction log -----------------------------------

_BLOCK = 32 * 1024  # the log's block size (LevelDB log format)
_HEADER = 7  # ":W&B", magic 0xBEE1 (2 bytes), version (1 byte)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_transaction_log(path):
    """The records of a ``run-<id>.wandb`` file as ``wandb_internal_pb2.Record`` messages.

    wandb 0.31 has no Python reader (its Go core writes the file): LevelDB's log format after a
    7-byte header; each chunk is crc32 (4, of type + payload), length (2), type (1), payload, and
    a record spans FIRST, MIDDLE..., LAST chunks or one FULL chunk within 32 KiB blocks.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    records, pending, pos = [], b"", _HEADER
    while pos + 7 <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero fill up to the end of a block
            pos += left_in_block
            continue
        if pos + 7 + length > len(data):  # the writer is still appending this chunk
            break
        payload = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(bytes([kind]) + payload) == crc, f"corrupt chunk at byte {pos} of {path}"
        pos += 7 + length
        pending += payload
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_run_records(path, timeout_s=30.0):
    """The records of a run's log once its ``exit`` record is there: ``run.finish()`` can return
    before wandb-core's writer has flushed and closed the file."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_transaction_log(path) if os.path.exists(path) else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def offline_run(records):
    """(run id, config dict, [{metric: value} per history row], summary dict) of one run's records."""
    run_id, config, history, summary = None, {}, [], {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run_id = r.run.run_id
            config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            summary.update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in r.summary.update})
    return run_id, config, history, summary


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """No network, nothing written outside tmp_path, no prompts."""
    for name in ("WANDB_API_KEY", "WANDB_RESUME", "WANDB_RUN_ID", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    return tmp_path


def _run_files(out_dir, run_id):
    """One per init of that id: offline-run-<time>-<id>[-n]/run-<id>.wandb (-1 when the time repeats)."""
    return sorted(glob.glob(os.path.join(str(out_dir), "wandb", f"offline-run-*-{run_id}*", f"run-{run_id}.wandb")))


def test_offline_run_holds_metrics_and_redacted_config_and_resume_continues_the_same_run(offline_env):
    out = offline_env / "output"
    cfg = LoggerConfig(backend="wandb", mode="offline", project="bert-test", tags=["ci"])
    run_config = {"seed": 7, "optim": {"lr": 1e-4}, "logger": {"api_key": "do-not-log"}}

    tracker = make_tracker(cfg, run_config, str(out), rank=0, resume_run_id=None)
    assert isinstance(tracker, WandbTracker)
    run_id = tracker.run_id
    assert run_id
    for step in (1, 2, 3):
        tracker.log({"train/loss": 10.0 / step, "train/lr": 1e-4 * step}, step=step)
    tracker.summary({"eval/mlm_accuracy": 0.25})
    tracker.finish()

    (first,) = _run_files(out, run_id)
    logged_id, config, history, summary = offline_run(finished_run_records(first))
    assert logged_id == run_id
    assert config["seed"] == 7 and config["optim"] == {"lr": 1e-4}
    assert config["logger"] == {"api_key": REDACTED}
    assert "do-not-log" not in open(first, "rb").read().decode("latin-1")
    rows = [(h["_step"], h["train/loss"], h["train/lr"]) for h in history if "train/loss" in h]
    assert rows == [(step, 10.0 / step, 1e-4 * step) for step in (1, 2, 3)]  # exact: JSON keeps doubles
    assert summary["eval/mlm_accuracy"] == 0.25

    # A resumed run (id from the checkpoint) continues the same W&B run.
    resumed = make_tracker(cfg, run_config, str(out), rank=0, resume_run_id=run_id)
    assert resumed.run_id == run_id
    resumed.log({"train/loss": 1.0}, step=4)
    resumed.finish()
    files = _run_files(out, run_id)
    assert len(files) == 2
    records = [r for f in files for r in finished_run_records(f)]
    run_ids = {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}
    assert run_ids == {run_id}
    steps = [h["_step"] for h in offline_run(records)[2] if "train/loss" in h]
    assert sorted(steps) == [1, 2, 3, 4]


# --- the W&B login check -------------------------------------------------------------------------

WANDB_AUTH_ENV = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_CONFIG_DIR")
NO_LOGIN = (
    "logger=wandb needs a W&B login: run `wandb login` or set WANDB_API_KEY; or use "
    "logger=wandb_offline (sync later with `wandb sync`) or logger=disabled"
)


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """A HOME without ~/.netrc or wandb settings, and no credentials in the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in WANDB_AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_wandb_online_without_a_login_fails_fast_with_one_message(tmp_path):
    """Before: wandb.init failed after ~28 s (DeepSpeed engine already built) with a 36-line
    traceback. Now the check comes first in train(): even before the shards are opened (this
    data_dir does not exist, and that is not what the message is about)."""
    import subprocess

    from launch_helpers import REPO, single_process_command, trainer_env

    env = {k: v for k, v in trainer_env().items() if k not in WANDB_AUTH_ENV}
    env["HOME"] = str(tmp_path)
    started = time.perf_counter()
    result = subprocess.run(
        single_process_command(
            "experiment=cpu_smoke",
            "logger=wandb",
            f"data_dir={tmp_path / 'no_shards'}",
            f"output_dir={tmp_path / 'out'}",
        ),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.strip() == f"error: {NO_LOGIN}", result.stderr[-3000:]
    assert "DeepSpeed" not in result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "out" / "checkpoints")
    assert seconds < 60, f"took {seconds:.1f} s"


def test_wandb_login_from_the_environment_or_netrc_passes(no_wandb_login, monkeypatch):
    from urllib.parse import urlsplit

    from wandb.sdk import wandb_setup

    from training.config import ConfigError
    from training.tracking import check_wandb_login, wandb_login_source

    online = LoggerConfig(backend="wandb", mode="online")
    with pytest.raises(ConfigError) as e:
        check_wandb_login(online)
    assert str(e.value) == NO_LOGIN
    for cfg in (LoggerConfig(mode="offline"), LoggerConfig(mode="disabled"), LoggerConfig(backend="none")):
        check_wandb_login(cfg)  # nothing to log in to

    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)  # fake: the check never goes online
    check_wandb_login(online)
    assert wandb_login_source() == "WANDB_API_KEY"
    monkeypatch.setenv("WANDB_API_KEY", "short")
    with pytest.raises(ConfigError, match="WANDB_API_KEY is set but is not a W&B API key: .*40"):
        check_wandb_login(online)
    monkeypatch.delenv("WANDB_API_KEY")

    # What `wandb login` writes: a netrc entry for the configured host.
    host = urlsplit(wandb_setup.singleton().settings.base_url).netloc
    netrc = no_wandb_login / ".netrc"
    netrc.write_text(f"machine {host}\n  login user\n  password {'a' * 40}\n")
    netrc.chmod(0o600)
    check_wandb_login(online)
    assert wandb_login_source() == "netrc"
