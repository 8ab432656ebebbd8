"""Shards on an object store (``data_dir=s3://...`` or ``gs://...``), copied into a node-local
cache and verified against their manifest before training; the trainer then reads the local copy.

    data_dir = cached_data_dir(cfg.data_dir, cfg.data.cache_dir, cfg.storage, cfg.data.cache_max_gb)  # every rank

A local ``data_dir`` is returned as it is. Otherwise the cache directory for it is
``<data.cache_dir>/<scheme>/<bucket>/<prefix>`` (data.cache_dir null: ``<system temp dir>/bert-pretrain-cache``),
and it holds what the trainer reads of a data job's output: manifest.json, the vocabulary and
*every shard the manifest lists*, which are those of the train and eval splits -- the loader's global
permutation touches every training shard, evaluation reads the eval split, and the manifest check
wants every listed shard present. Rejects and statistics are not copied.

Each start (every rank, ``open_data``, before the process group exists):

1. list the objects under data_dir once and read the bucket's manifest.json (always: it says which
   bytes the shards must have now, so a rerun data job is noticed);
2. under an exclusive lock on ``<cache>/.lock`` (``fcntl.flock``, released by the kernel if the
   holder dies), so one process per node fetches while the node's other ranks wait and then find
   everything verified: for each file, keep the cached copy if its verified marker
   (``<cache>/.verified/<file>.json``: sha256, size, mtime, inode) still describes it and names the
   manifest's sha256 -- no re-hashing of a multi-GB shard on every start; otherwise hash it, and if it
   is corrupt, partial or missing fetch it again: download to ``<file>.partial`` (hashed while
   written), check size and sha256, fsync, rename over the file (a run still memory-mapping the
   old file keeps its inode), then write the marker. A file that fails its sha256
   ``FETCH_ATTEMPTS`` times in a row stops the run;
3. write manifest.json last, so a cache directory with a manifest names only verified files;
4. remove what the current manifest does not list: files of an older version of the data (a rerun
   data job with other shard names), their markers, and ``.partial`` downloads a killed run left (a
   run still memory-mapping a removed file keeps reading it: its inode lives until unmapped);
5. with ``data.cache_max_gb``, when the whole cache (every data_dir's copy under the cache
   directory) holds more, remove other data_dirs' copies, least recently used first (each start
   touches ``<cache>/.last_used``), skipping any whose lock another process holds; never this run's.

Several nodes each fill their own cache (a cache_dir on a filesystem shared by nodes also works
where flock does, e.g. NFSv4). Errors are one line each, ``DataContractError`` (what the shards
are) or ``ConfigError`` (how they are reached); credentials come only from the environment
(boto3's chain, Google's Application Default Credentials), never from the config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Iterator, Optional

from pipeline import contract
from pipeline.config import StorageConfig
from pipeline.contract import ContractError, ShardManifest
from training.config import ConfigError
from training.data import DataContractError

log = logging.getLogger(__name__)

CACHE_SUBDIR = "bert-pretrain-cache"
"""Default cache under the system temp dir (``tempfile.gettempdir()``, i.e. $TMPDIR or /tmp)."""
VERIFIED_DIR = ".verified"
LOCK_FILE = ".lock"
LAST_USED_FILE = ".last_used"
"""Touched at each start: the order in which ``data.cache_max_gb`` removes other data_dirs' copies."""
PARTIAL_SUFFIX = ".partial"
FETCH_ATTEMPTS = 3
"""Downloads of one file before a sha256 mismatch is taken to be the bucket's, not the network's."""
CHUNK = 8 << 20  # bytes per read while downloading and hashing

_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")


def remote_scheme(data_dir: str) -> Optional[str]:
    """The scheme of an object-store path (``s3``, ``gs``...); None for a local path or file://."""
    m = _URL.match(data_dir)
    return m.group(1) if m and m.group(1) != "file" else None


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), CACHE_SUBDIR)


def cache_dir_for(data_dir: str, cache_dir: Optional[str]) -> str:
    """The node-local directory that holds the copy of the object-store ``data_dir``."""
    scheme, rest = _URL.match(data_dir).groups()
    parts = [p for p in rest.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ConfigError(f"data_dir={data_dir} names no bucket and prefix (expected {scheme}://bucket/path)")
    return os.path.join(os.path.abspath(cache_dir or default_cache_dir()), scheme, *parts)


def cached_data_dir(
    data_dir: str, cache_dir: Optional[str], storage: StorageConfig, max_gb: Optional[float] = None
) -> str:
    """A local directory holding ``data_dir``'s manifest, vocabulary and shards, each verified
    against the manifest: ``data_dir`` itself when it is local, else its node-local cache, filled
    (or checked) first and pruned as the module docstring says (max_gb: ``data.cache_max_gb``).
    Raises DataContractError / ConfigError."""
    if remote_scheme(data_dir) is None:
        return data_dir
    local = cache_dir_for(data_dir, cache_dir)
    source = RemoteShards(data_dir, storage)
    manifest_bytes = source.read_manifest()
    manifest = _parse_manifest(manifest_bytes, data_dir)
    try:
        os.makedirs(local, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the shard cache {local} for data_dir={data_dir} ({e}): "
            "set data.cache_dir to a writable node-local directory"
        ) from e
    start = time.perf_counter()
    with node_lock(local):
        cache = ShardCache(local)
        files = [CachedFile(manifest.vocab_file, manifest.vocab_sha256, None)]
        files += [CachedFile(s.file, s.sha256, s.bytes) for s in manifest.shards]
        if cache.read_manifest() != manifest_bytes:
            cache.remove_manifest()  # a manifest in the cache only ever names verified files
        stale = [f for f in files if not cache.is_verified(f)]
        cache.check_free_space(stale, data_dir)
        fetched = [n for n in (cache.make_verified(f, source) for f in stale) if n]  # bytes of each download
        cache.write_manifest(manifest_bytes)
        pruned = cache.remove_unlisted({f.name for f in files})
        cache.touch_last_used()
    if pruned:
        log.info("shard cache %s: removed %d files the manifest no longer lists (%.1f MB)", local, *pruned)
    if max_gb is not None:
        limit_cache(os.path.abspath(cache_dir or default_cache_dir()), local, int(max_gb * 1e9))
    log.info(
        "shard cache %s: the %d files of %s verified, %d fetched (%.1f MB), in %.1f s",
        local,
        len(files),
        data_dir,
        len(fetched),
        sum(fetched) / 1e6,
        time.perf_counter() - start,
    )
    return local


def _parse_manifest(data: bytes, data_dir: str) -> ShardManifest:
    try:
        return ShardManifest.from_dict(json.loads(data))
    except (ContractError, ValueError, TypeError, KeyError) as e:
        raise DataContractError(
            f"cannot use data_dir={data_dir} as training data: its {contract.MANIFEST_FILE} is unreadable ({e})"
        ) from e


@contextlib.contextmanager
def node_lock(local: str) -> Iterator[None]:
    """Hold an exclusive flock on ``local/.lock``; the node's other processes wait for it."""
    with open(os.path.join(local, LOCK_FILE), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process of this node to fill the shard cache %s", local)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class CachedFile:
    """A file of the data job's output as its manifest describes it."""

    name: str  # relative to data_dir, e.g. "train/part-00000-of-00004.arrow"
    sha256: str
    size: Optional[int]  # None: the manifest records no size (the vocabulary)


class RemoteShards:
    """The objects under an object-store ``data_dir``, through Beam's FileSystems (configured
    with ``storage``), listed once."""

    def __init__(self, data_dir: str, storage: StorageConfig):
        from pipeline import storage as fs

        self.data_dir = data_dir.rstrip("/")
        try:
            fs.configure_filesystems(storage)
            self.sizes = {path[len(self.data_dir) + 1 :]: size for path, size in self._listing()}
        except ValueError as e:  # Beam: no filesystem for the scheme (gs:// without the gcp extra)
            raise ConfigError(f"cannot read data_dir={data_dir}: {_first_line(e)}") from e
        except Exception as e:  # noqa: BLE001 - BeamIOError, botocore: endpoint, credentials, bucket
            raise DataContractError(
                f"cannot list data_dir={data_dir}: {_first_line(e)} (check storage.* "
                "and the credentials in the environment)"
            ) from e

    def _listing(self) -> list[tuple[str, int]]:
        from apache_beam.io.filesystems import FileSystems

        found = FileSystems.match([self.data_dir + "/**"])[0].metadata_list
        return [(m.path, m.size_in_bytes) for m in found]

    def url(self, name: str) -> str:
        return f"{self.data_dir}/{name}"

    def read_manifest(self) -> bytes:
        if contract.MANIFEST_FILE not in self.sizes:
            what = f"{len(self.sizes)} other objects under it" if self.sizes else "nothing is stored under it"
            raise DataContractError(
                f"no {contract.MANIFEST_FILE} at data_dir={self.data_dir} ({what}): not a "
                "finished data job output (data_dir is the data job's output_dir)"
            )
        with self.open(contract.MANIFEST_FILE) as f:
            return f.read()

    def open(self, name: str):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(self.url(name), compression_type=CompressionTypes.UNCOMPRESSED)


class ShardCache:
    """The node-local copy of one ``data_dir`` (the caller holds ``node_lock``)."""

    def __init__(self, root: str):
        self.root = root

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _marker(self, name: str) -> str:
        return os.path.join(self.root, VERIFIED_DIR, name + ".json")

    def read_manifest(self) -> Optional[bytes]:
        try:
            with open(self.path(contract.MANIFEST_FILE), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def remove_manifest(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path(contract.MANIFEST_FILE))

    def write_manifest(self, data: bytes) -> None:
        if self.read_manifest() != data:
            _write_atomically(self.path(contract.MANIFEST_FILE), data)

    def is_verified(self, f: CachedFile) -> bool:
        """Whether the cached copy's marker names the manifest's sha256 and still describes the
        file (size, mtime, inode): trusted without hashing it again."""
        try:
            with open(self._marker(f.name)) as m:
                marker = json.load(m)
            st = os.stat(self.path(f.name))
        except (OSError, ValueError):
            return False
        return marker == {**_stat_record(st), "sha256": f.sha256} and f.size in (None, st.st_size)

    def make_verified(self, f: CachedFile, source: RemoteShards) -> int:
        """Hash the cached copy, or fetch it again if it is missing, partial or corrupt; returns
        the bytes downloaded. Raises DataContractError if the bucket does not hold the manifest's bytes."""
        path = self.path(f.name)
        if os.path.exists(path) and f.size in (None, os.path.getsize(path)):
            if contract.sha256_file(path) == f.sha256:
                self._mark(f)
                return 0
            log.warning("shard cache: %s does not match its sha256 in the manifest; fetching it again", path)
        elif os.path.exists(path):
            log.warning(
                "shard cache: %s has %d bytes, the manifest says %d; fetching it again",
                path,
                os.path.getsize(path),
                f.size,
            )
        url = source.url(f.name)
        remote_size = source.sizes.get(f.name)
        if remote_size is None:
            raise DataContractError(
                f"{url} is listed in its {contract.MANIFEST_FILE} but missing from the "
                "object store: upload the data job's whole output_dir, or rerun the job"
            )
        if f.size is not None and remote_size != f.size:
            raise DataContractError(
                f"{url} has {remote_size} bytes in the object store, its "
                f"{contract.MANIFEST_FILE} says {f.size}: the object was replaced or cut "
                "short; restore the data job's output or rerun the job"
            )
        for _ in range(FETCH_ATTEMPTS):
            got_sha, got_size = self._download(source, f.name)
            if got_sha == f.sha256 and f.size in (None, got_size):
                os.replace(path + PARTIAL_SUFFIX, path)
                self._mark(f)
                return got_size
            os.remove(path + PARTIAL_SUFFIX)
            log.warning(
                "shard cache: %s came with sha256 %s..., the manifest says %s...", url, got_sha[:12], f.sha256[:12]
            )
        raise DataContractError(
            f"{url} does not match its {contract.MANIFEST_FILE}: {FETCH_ATTEMPTS} downloads "
            f"had sha256 {got_sha} ({got_size} bytes), the manifest says {f.sha256}; the "
            "object store does not hold the data job's output (restore it or rerun the job)"
        )

    def _download(self, source: RemoteShards, name: str) -> tuple[str, int]:
        """``name`` copied to ``<path>.partial``, fsynced; (its sha256, its size)."""
        partial = self.path(name) + PARTIAL_SUFFIX
        os.makedirs(os.path.dirname(partial), exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with source.open(name) as src, open(partial, "wb") as dst:
            while block := src.read(CHUNK):
                digest.update(block)
                dst.write(block)
                size += len(block)
            dst.flush()
            os.fsync(dst.fileno())
        return digest.hexdigest(), size

    def _mark(self, f: CachedFile) -> None:
        record = {**_stat_record(os.stat(self.path(f.name))), "sha256": f.sha256}
        marker = self._marker(f.name)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        _write_atomically(marker, json.dumps(record, sort_keys=True).encode())

    def remove_unlisted(self, listed: set[str]) -> Optional[tuple[int, float]]:
        """Remove every file the manifest does not list (besides the manifest, the lock and the
        last-use mark), with its marker; returns (files, MB) removed, or None."""
        keep = listed | {contract.MANIFEST_FILE, LOCK_FILE, LAST_USED_FILE}
        count, size = 0, 0
        for root, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, self.root)
                marker_of = (
                    os.path.relpath(rel, VERIFIED_DIR)[: -len(".json")] if rel.startswith(VERIFIED_DIR) else None
                )
                if rel in keep or (marker_of is not None and marker_of in listed):
                    continue
                size += os.path.getsize(path)
                os.remove(path)
                count += 1
        return (count, size / 1e6) if count else None

    def touch_last_used(self) -> None:
        with open(self.path(LAST_USED_FILE), "a"):
            os.utime(self.path(LAST_USED_FILE))

    def check_free_space(self, stale: list[CachedFile], data_dir: str) -> None:
        """Fail before downloading when the cache's filesystem cannot take the files to fetch."""
        needed = sum(f.size or 0 for f in stale)
        free = shutil.disk_usage(self.root).free
        if needed > free:
            raise ConfigError(
                f"the shard cache {self.root} has {free / 1e9:.1f} GB free but the shards of "
                f"data_dir={data_dir} need {needed / 1e9:.1f} GB more: set data.cache_dir to a "
                "larger node-local disk"
            )


def limit_cache(cache_root: str, current: str, max_bytes: int) -> None:
    """``data.cache_max_gb``: while the copies under ``cache_root`` hold more than ``max_bytes``,
    remove the least recently used copy other than ``current`` whose lock nobody holds. A copy is a
    directory with a lock file (``cache_dir_for``'s layout)."""
    copies = [root for root, _, names in os.walk(cache_root) if LOCK_FILE in names]
    sizes = {c: _tree_bytes(c) for c in copies}
    total = sum(sizes.values())

    def last_used(copy: str) -> float:
        with contextlib.suppress(OSError):
            return os.path.getmtime(os.path.join(copy, LAST_USED_FILE))
        return 0.0

    for copy in sorted((c for c in copies if c != current), key=last_used):
        if total <= max_bytes:
            break
        with open(os.path.join(copy, LOCK_FILE), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("shard cache: %s is in use by another process; not removed", copy)
                continue
            shutil.rmtree(copy)
        total -= sizes[copy]
        log.info("shard cache: removed %s (%.1f MB, least recently used; data.cache_max_gb)", copy, sizes[copy] / 1e6)
    if total > max_bytes:
        log.warning(
            "shard cache %s holds %.1f GB, more than data.cache_max_gb=%.1f, after removing what it could "
            "(this run's shards alone may need more)",
            cache_root,
            total / 1e9,
            max_bytes / 1e9,
        )


def _tree_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, names in os.walk(root) for f in names)


def _stat_record(st: os.stat_result) -> dict:
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _write_atomically(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
