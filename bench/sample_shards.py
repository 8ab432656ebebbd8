"""The data job on the embedded Wikipedia sample, for the benchmarks that need shards.

from sample_shards import build_sample_shards   # bench/ is the script's directory on sys.path
data_dir = build_sample_shards(os.path.join(work, "shards"), "masking=dynamic")
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from pipeline.contract import MANIFEST_FILE  # noqa: E402

IN_ONE_PROCESS = ("runner.direct_num_workers=1", "runner.direct_running_mode=in_memory")
"""The quickest way through the real runner for a sample this small."""


def build_sample_shards(out: str, *overrides: str, reuse: bool = True) -> str:
    """Run ``python -m pipeline output_dir=out <overrides>`` (one in-process worker) and return ``out``.
    reuse: keep shards a previous run left there (their manifest exists) instead of rebuilding;
    False rebuilds over them (``overwrite=true``). Exits with the job's output when it fails."""
    if reuse and os.path.exists(os.path.join(out, MANIFEST_FILE)):
        print(f"reusing shards in {out}", flush=True)
        return out
    cmd = [sys.executable, "-m", "pipeline", f"output_dir={out}", *IN_ONE_PROCESS, *overrides]
    if not reuse:
        cmd.append("overwrite=true")
    print("building shards: python", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"the data job failed (exit {done.returncode})")
    print(f"  built in {time.perf_counter() - start:.1f} s", flush=True)
    return out
