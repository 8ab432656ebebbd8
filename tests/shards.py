"""Reading a job's output back in tests: whole splits as Arrow tables."""

import glob
import os

import pyarrow as pa

from pipeline import contract


def read_split(output_dir, split) -> pa.Table:
    files = sorted(glob.glob(os.path.join(str(output_dir), split, "*.arrow")))
    return pa.concat_tables([contract.open_shard(f) for f in files])


def shard_hashes(output_dir) -> dict:
    """sha256 of every shard, vocabulary and side table (everything but the manifest)."""
    out = {}
    for root, _, files in os.walk(str(output_dir)):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), str(output_dir))
            if rel != contract.MANIFEST_FILE:
                out[rel] = contract.sha256_file(os.path.join(root, f))
    return out
