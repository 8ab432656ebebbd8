"""bench/gpu_check.sh, the one script a GPU machine runs: its CUDA-test step names every test file
that skips without a CUDA device, so no GPU-only test is left out of the one run that can execute it."""

import os
import re
import shlex

from paths import REPO

NEEDS_CUDA = re.compile(r"skipif\(\s*not torch\.cuda\.is_available\(\)")
"""How a test says it needs a CUDA device (a skip whose reason names the missing GPU)."""


def cuda_step_paths() -> list[str]:
    """The test paths of gpu_check.sh's ``step cuda-tests python -m pytest ...`` line (continued lines joined)."""
    with open(os.path.join(REPO, "bench", "gpu_check.sh")) as f:
        script = f.read().replace("\\\n", " ")
    (line,) = [ln for ln in script.splitlines() if ln.startswith("step cuda-tests ")]
    return [word for word in shlex.split(line) if word.startswith("tests/")]


def files_needing_cuda() -> list[str]:
    found = []
    for root, _, files in os.walk(os.path.join(REPO, "tests")):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".py") and NEEDS_CUDA.search(open(path, encoding="utf-8").read()):
                found.append(os.path.relpath(path, REPO))
    return sorted(found)


def test_the_cuda_step_runs_every_test_file_that_needs_a_gpu():
    paths = cuda_step_paths()
    needing = files_needing_cuda()
    assert len(needing) >= 4  # the pattern still finds them: tests/integration/gpu/*, unpadded, modern
    left_out = [f for f in needing if not any(f == p or f.startswith(p.rstrip("/") + "/") for p in paths)]
    assert left_out == [], f"bench/gpu_check.sh's cuda-tests step does not run {left_out}"
    assert all(os.path.exists(os.path.join(REPO, p)) for p in paths)
