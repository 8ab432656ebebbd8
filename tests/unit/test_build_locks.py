"""A lock file left by a stopped op build is named before start-up waits on it (training.build_locks)."""

import logging
import os
import time

from torch.utils import cpp_extension

from training.build_locks import STALE_AFTER_S, extensions_root, stale_build_locks, warn_of_stale_build_locks


def lock_aged(root, op: str, age_s: float) -> str:
    os.makedirs(os.path.join(root, op), exist_ok=True)
    path = os.path.join(root, op, "lock")
    open(path, "w").close()
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_only_locks_older_than_a_build_are_stale(tmp_path):
    root = str(tmp_path)
    old = lock_aged(root, "deepspeed_shm_comm", STALE_AFTER_S + 60)
    lock_aged(root, "cpu_adam", 30)  # a build running now
    os.makedirs(os.path.join(root, "built_op"))  # a finished build: no lock
    stale = stale_build_locks(root)
    assert [path for path, _ in stale] == [old]
    assert stale[0][1] > STALE_AFTER_S


def test_no_root_no_locks(tmp_path):
    assert stale_build_locks(str(tmp_path / "never_built")) == []


def test_the_warning_names_the_file_and_the_op(tmp_path, caplog):
    old = lock_aged(str(tmp_path), "deepspeed_shm_comm", 3600)
    with caplog.at_level(logging.WARNING, logger="training.build_locks"):
        warnings = warn_of_stale_build_locks(str(tmp_path))
    assert len(warnings) == 1 and old in warnings[0] and "deepspeed_shm_comm" in warnings[0]
    assert "60 minutes old" in warnings[0] and "remove the file" in warnings[0]
    assert [r.getMessage() for r in caplog.records] == warnings


def test_the_root_is_where_torch_builds(tmp_path, monkeypatch):
    """The folder torch's loader puts an op's build (and its lock) in, with and without
    TORCH_EXTENSIONS_DIR: torch's private helper is the reference, so a change in torch fails here."""
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    op_dir = cpp_extension._get_build_directory("some_op", verbose=False)
    assert os.path.dirname(op_dir) == extensions_root()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "given"))
    op_dir = cpp_extension._get_build_directory("some_op", verbose=False)
    assert os.path.dirname(op_dir) == extensions_root() == str(tmp_path / "given")
