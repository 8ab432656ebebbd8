"""The trainer with every host read of tensor data recorded: ``torchrun ... tests/sync_probe.py <overrides>``.

On a GPU each of these waits for the device to finish everything queued before it (a host sync):
``Tensor.item`` and anything else that becomes ``aten._local_scalar_dense`` (``int(t)``, ``bool(t)``,
``if t:``), ``nonzero``, boolean-mask indexing and ``masked_select`` (their result's size is data),
and ``Tensor.tolist`` / ``Tensor.cpu``. On this CPU machine they cost nothing, so the probe records
them instead of timing them. ``Tensor.numpy()`` is not recorded: it fails on a device tensor, so
code that uses it reads host data only (the collated batch, the gloo control group's flags).

Each record says where it happened: the trainer's phase (``forward``, ``backward``, ``step`` of a
micro batch, with whether DeepSpeed stepped the optimizer there, or ``flush``/``log``/``eval``/
``save``/``other``), the optimizer step it belongs to, and whose code asked (``ours``: a frame under
training/ other than the loader's modules, which hold host data only; ``loader``; ``deepspeed``;
the innermost of these on the stack). Written as JSON lines to
``$SYNC_PROBE_DIR/rank<r>.jsonl`` at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import traceback

from paths import REPO

LOADER_MODULES = ("data.py", "sampler.py")
PHASE = {"name": "other", "step": 0, "boundary": False}
RECORDS: list[dict] = []


def _origin() -> tuple[str, str]:
    """("ours" | "deepspeed" | "other", the innermost frame of that code as file:line function)."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = frame.filename
        if path.startswith(os.path.join(REPO, "training")):
            where = f"{os.path.relpath(path, REPO)}:{frame.lineno} {frame.name}"
            # The loader builds batches from host data (memory-mapped shards, numpy); it never holds a device tensor.
            return ("loader" if os.path.basename(path) in LOADER_MODULES else "ours"), where
        if f"{os.sep}deepspeed{os.sep}" in path:
            return (
                "deepspeed",
                f"deepspeed/{path.split(os.sep + 'deepspeed' + os.sep, 1)[1]}:{frame.lineno} {frame.name}",
            )
    return "other", ""


def _record(what: str) -> None:
    who, where = _origin()
    RECORDS.append({**PHASE, "what": what, "who": who, "where": where})


def _install() -> None:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    data_dependent = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default}

    class SyncRecorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in data_dependent:
                _record(str(func))
            elif func is aten.index.Tensor and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
            ):
                _record("boolean-mask indexing")
            return func(*args, **(kwargs or {}))

    for name in ("tolist", "cpu"):
        original = getattr(torch.Tensor, name)

        def patched(self, *a, _original=original, _name=name, **k):
            _record(f"Tensor.{_name}")
            return _original(self, *a, **k)

        setattr(torch.Tensor, name, patched)
    SyncRecorder().__enter__()  # for the whole process: every aten op of this thread passes through it

    from deepspeed.runtime.engine import DeepSpeedEngine

    from training import trainer

    def phase(name, method, boundary_of=None):
        def wrapped(self, *a, **k):
            saved = dict(PHASE)
            PHASE["name"] = name
            if boundary_of is not None:
                PHASE["boundary"] = bool(self.is_gradient_accumulation_boundary())
            try:
                return method(self, *a, **k)
            finally:
                PHASE.update(saved)

        return wrapped

    DeepSpeedEngine.forward = phase("forward", DeepSpeedEngine.forward)
    DeepSpeedEngine.backward = phase("backward", DeepSpeedEngine.backward)
    DeepSpeedEngine.step = phase("step", DeepSpeedEngine.step, boundary_of=True)
    trainer.Trainer.flush_steps = phase("flush", trainer.Trainer.flush_steps)
    trainer.Trainer.evaluate = phase("eval", trainer.Trainer.evaluate)
    trainer.Trainer.save = phase("save", trainer.Trainer.save)
    trainer.Trainer._log_interval = phase("log", trainer.Trainer._log_interval)
    train_step = trainer.Trainer.train_step

    def counted_train_step(self, *a, **k):
        PHASE["step"] += 1
        PHASE["name"] = "train_step"
        try:
            return train_step(self, *a, **k)
        finally:
            PHASE["name"] = "other"

    trainer.Trainer.train_step = counted_train_step


MAIN_PID = os.getpid()


def _write() -> None:
    if os.getpid() != MAIN_PID:
        return  # a forked data-loader worker: its copy of the records is not the trainer's
    out = os.environ["SYNC_PROBE_DIR"]
    with open(os.path.join(out, f"rank{os.environ.get('RANK', '0')}.jsonl"), "w") as f:
        for record in RECORDS:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    _install()
    atexit.register(_write)
    sys.argv = ["training", *sys.argv[1:]]
    runpy.run_path(os.path.join(REPO, "training", "__main__.py"), run_name="__main__")
