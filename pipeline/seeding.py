"""Data-derived randomness: every random choice is seeded from (seed, document id, pass...).

Never a process-global generator: Beam may run a DoFn on an element more than once
(bundle retries) and on any worker, so only seeds derived from the data give the same
output whatever the runner, the number of workers or the retries.
"""

from __future__ import annotations

import hashlib

import numpy as np

MASK63 = (1 << 63) - 1  # ids are positive int64


def derive_seed(*parts: int | str) -> int:
    """A 64-bit seed from any mix of ints and strings (stable across processes and platforms)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(repr(p).encode("utf-8"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little")


def rng_for(*parts: int | str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(*parts)))


def stable_id(text: str) -> int:
    """A compact positive int64 id of a string (documents are identified by their cleaned text)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") & MASK63


def unit_interval(*parts: int | str) -> float:
    """A deterministic number in [0, 1) from the parts (for hash-based splits and sampling)."""
    return derive_seed(*parts) / float(1 << 64)


def mix64(values: np.ndarray, seed: int) -> np.ndarray:
    """(N,) uint64: a seeded, vectorised hash of int64 values (splitmix64's finaliser), for
    ordering many records at once by a pseudo-random but reproducible key."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) ^ np.uint64(derive_seed("mix64", seed))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_interval_of(values: np.ndarray, seed: int, salt: str) -> np.ndarray:
    """(N,) float64 in [0, 1): ``unit_interval`` for many int64 values at once (by ``mix64``)."""
    return (mix64(values, derive_seed(salt, seed)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
