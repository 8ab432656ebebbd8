"""Peak memory per process and throughput per core of a local data job as the corpus grows, in one run.

    python bench/pipeline_memory.py [--work DIR] [--scales 16 64] [--baseline-rev REV] [--baseline-scales 16]

The corpus is the real Wikipedia sample's documents as pre-split text (one sentence per line,
a blank line between documents, ``source.text_format=bert_lines``), repeated ``k`` times with a
distinct first sentence per copy (so no copy is dropped as a duplicate), in two shapes: one big
file, and one file per copy. Each is run through the DirectRunner (FnApiRunner, 2 worker
processes) with bert-base-uncased's vocabulary, every process's resident memory sampled from
outside. ``--baseline-rev`` also runs a checkout of another commit (``git worktree``) on the
same inputs in the same run: "today's" throughput and memory to compare with.

Pools and shards are scaled down with the corpus (``instances.pool_size=200``,
``output.target_shard_tokens=8000000``) so both scales hold many full pools and shards: a
worker's memory is bounded by one pool and one shard, and at the defaults (2,000 documents a
pool, 64M tokens a shard) the 16x corpus would fill less than one of each, so its peak would
sit below the bound rather than at it. Goals (issue 9): peak memory per process (runner and
workers) grows at most 1.3x from 16x to 64x; throughput per core within 20% of the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline.config import CleaningConfig, SourceConfig, sample_corpus_path  # noqa: E402
from pipeline.documents import prepare_document  # noqa: E402
from pipeline.records import RawDocument  # noqa: E402
from pipeline.sources import read_source  # noqa: E402
from pipeline_throughput import run_job  # noqa: E402  (same directory: the shared job runner)

WORKERS = 2
SCALED = [
    "instances.pool_size=200",
    "output.target_shard_tokens=8000000",
    "instances.min_work_units=4",
    "source.text_format=bert_lines",
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def minilm_vocab() -> str:
    """bert-base-uncased's vocab.txt, as the published MiniLM ships it (python -m training.encoders minilm)."""
    from training.encoders import ENCODERS

    return os.path.join(ENCODERS["minilm"].directory(), "vocab.txt")


def sample_documents() -> list[list[str]]:
    """The sample's kept documents, as the job splits them into sentences."""
    path = sample_corpus_path()
    raws = [r for r in read_source(path, lambda: open(path, "rb"), SourceConfig()) if isinstance(r, RawDocument)]
    docs = [prepare_document(r, CleaningConfig())[0] for r in raws]
    return [list(d.sentences) for d in docs if d is not None]


def copy_text(docs: list[list[str]], k: int) -> str:
    return "".join(
        f"Copy {k} of the sample, document {i}.\n" + "\n".join(sents) + "\n\n" for i, sents in enumerate(docs)
    )


def make_inputs(work: str, docs: list[list[str]], scale: int) -> dict[str, list[str]]:
    """{"one file": [path], "many files": [dir]} holding ``scale`` copies of the sample."""
    big = os.path.join(work, f"x{scale}-one.txt")
    many = os.path.join(work, f"x{scale}-many")
    if not os.path.exists(big):
        with open(big + ".part", "w", encoding="utf-8") as f:
            for k in range(scale):
                f.write(copy_text(docs, k))
        os.replace(big + ".part", big)
    if not os.path.isdir(many):
        os.makedirs(many + ".part", exist_ok=True)
        for k in range(scale):
            with open(os.path.join(many + ".part", f"copy-{k:03d}.txt"), "w", encoding="utf-8") as f:
                f.write(copy_text(docs, k))
        os.replace(many + ".part", many)
    return {"one file": [big], "many files": [many]}


def checkout(rev: str, work: str) -> str:
    path = os.path.join(work, f"baseline-{rev}")
    if not os.path.isdir(path):
        subprocess.run(
            ["git", "-C", REPO, "worktree", "add", "--detach", "-f", path, rev], check=True, stdout=subprocess.DEVNULL
        )
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--scales", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--baseline-rev", default=None, help="a commit to compare with (run from a git worktree)")
    ap.add_argument("--baseline-scales", type=int, nargs="*", default=[16])
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench-memory-")
    os.makedirs(work, exist_ok=True)
    vocab = minilm_vocab()
    docs = sample_documents()
    mb = len(copy_text(docs, 0).encode("utf-8")) / 1e6
    print(
        f"# local data job memory: the sample ({len(docs)} documents, {mb:.2f} MB of pre-split text) "
        f"x {args.scales}, {WORKERS} workers, {psutil.cpu_count()} cores; {' '.join(SCALED)}\n"
    )

    runs = []
    plan = [(None, s) for s in args.scales]
    if args.baseline_rev:
        base = checkout(args.baseline_rev, work)
        plan += [(args.baseline_rev, s) for s in args.baseline_scales]
    for rev, scale in plan:
        for shape, inputs in make_inputs(work, docs, scale).items():
            r = run_job(inputs, os.path.join(work, "out"), WORKERS, vocab, SCALED, cwd=base if rev else None)
            r.update(code=rev or "this checkout", scale=scale, shape=shape, input_mb=mb * scale)
            r["mb_per_s_per_core"] = r["input_mb"] / r["job_seconds"] / WORKERS
            r["tokens_per_s_per_core"] = r["tokens"] / r["job_seconds"] / WORKERS
            runs.append(r)
            print(
                f"{r['code']:>14s} {scale:3d}x {shape:10s}: {r['input_mb']:7.1f} MB, {r['tokens']:11,} tokens in "
                f"{r['job_seconds']:6.1f} s = {r['tokens_per_s_per_core']:8,.0f} tokens/s/core "
                f"({r['mb_per_s_per_core']:.2f} MB/s/core); peak RSS: runner {r['runner_peak'] / 2**20:6,.0f} MiB, "
                f"largest worker {r['worker_peak'] / 2**20:6,.0f} MiB",
                flush=True,
            )

    def find(code, scale, shape):
        return next((r for r in runs if r["code"] == code and r["scale"] == scale and r["shape"] == shape), None)

    print("\nratios:")
    lo, hi = min(args.scales), max(args.scales)
    for code in dict.fromkeys(r["code"] for r in runs):
        for shape in ("one file", "many files"):
            a, b = find(code, lo, shape), find(code, hi, shape)
            if a and b:
                print(
                    f"  {code}, {shape}: peak memory {hi}x / {lo}x: runner {b['runner_peak'] / a['runner_peak']:.2f}, "
                    f"largest worker {b['worker_peak'] / a['worker_peak']:.2f}  (goal <= 1.3)"
                )
    if args.baseline_rev:
        for scale in args.baseline_scales:
            for shape in ("one file", "many files"):
                a, b = find("this checkout", scale, shape), find(args.baseline_rev, scale, shape)
                if a and b:
                    print(
                        f"  {scale}x {shape}: throughput per core, this checkout / {args.baseline_rev} = "
                        f"{a['tokens_per_s_per_core'] / b['tokens_per_s_per_core']:.2f}  (goal >= 0.8)"
                    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()
