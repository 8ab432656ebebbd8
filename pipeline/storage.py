"""Object storage for the job: ``storage.*`` as Beam options, FileSystems configured with them in
every process that touches files, and the few directory operations that Beam's FileSystems does
differently on local disks and on object stores.

Beam's FileSystems reads its options from a class attribute (``FileSystems.set_options``). The
launcher must set it before its first ``match``/``exists`` (Beam's runners set it only on their
workers), and not every worker gets it either: the SDK harness that Beam's worker pool starts in
``EXTERNAL`` mode (Flink, Spark) never does. So each DoFn that touches FileSystems carries the
job's StorageConfig and calls ``configure_filesystems`` in its ``setup()``.

Object stores (s3://, gs://) have no directories: a "directory" is the set of objects whose names
start with ``path/``. ``files_under``, ``is_directory`` and ``delete_directory`` treat a local
directory and such a prefix alike; on an object store ``FileSystems.exists(prefix)`` is false
and ``FileSystems.delete([prefix])`` deletes nothing, hence these helpers.
"""

from __future__ import annotations

import os
from typing import Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import StorageConfig
from pipeline.s3_clients import share_s3_clients

_S3_FLAGS = ("s3_endpoint_url", "s3_region_name", "s3_verify")  # StorageConfig field = Beam's S3Options flag
DELETE_BATCH = 1000  # objects per delete call (S3's DeleteObjects takes at most 1,000 keys)


def storage_flags(cfg: StorageConfig) -> list[str]:
    """The Beam pipeline flags of ``cfg`` (``--s3_endpoint_url=...``), only those set. No
    credential is ever among them: Beam's S3 client passes its unset key options to boto3 as
    None, so boto3 finds the credentials in the environment, as it does for any AWS tool."""
    return [f"--{name}={getattr(cfg, name)}" for name in _S3_FLAGS if getattr(cfg, name) is not None]


def flags_given_twice(cfg: StorageConfig, runner_extra: Sequence) -> list[str]:
    """The runner.extra flags that a storage.* setting also gives (the launcher would take one,
    workers that configure themselves the other): a config should give each once."""
    ours = {flag.split("=", 1)[0] for flag in storage_flags(cfg)}
    return [str(x) for x in runner_extra if str(x).split("=", 1)[0] in ours]


def configure_filesystems(cfg: StorageConfig) -> None:
    """FileSystems in this process reach object stores with ``cfg``'s settings. Options the
    runner already gave this process (e.g. ``--project``, runner.extra) are kept and ``cfg``'s
    flags laid over them, so a worker pool serving several jobs uses the current job's.
    Cheap and idempotent: DoFns call it in ``setup()``. S3 clients are then made once per process
    and settings, not once per call (``pipeline.s3_clients``)."""
    share_s3_clients()
    current = FileSystems._pipeline_options  # Beam's own slot; it has no getter
    given = current.get_all_options(drop_default=True, retain_unknown_options=True) if current else {}
    ours = PipelineOptions(storage_flags(cfg)).get_all_options(drop_default=True)
    if current is not None and all(given.get(k) == v for k, v in ours.items()):
        return
    FileSystems.set_options(PipelineOptions([], **{**given, **ours}))


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to a new file at ``path``. Beam's S3 writer uploads in parts and cannot
    write an empty object (S3 refuses a multipart upload of no part: MalformedXML), yet an empty
    rejects shard is a valid output; such an object is put in one request through Beam's own S3
    client, with the options FileSystems has."""
    if not data and FileSystems.get_scheme(path) == "s3":
        from apache_beam.io.aws import s3io

        bucket, key = s3io.parse_s3_path(path)
        s3io.S3IO(options=FileSystems._pipeline_options).client.client.put_object(Bucket=bucket, Key=key, Body=b"")
        return
    with FileSystems.create(path) as f:
        f.write(data)


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def _prefix(directory: str) -> str:
    """``directory`` with exactly one trailing '/': the prefix of the objects under it (without
    it, ``out/train`` would also take ``out/train2/...``)."""
    return directory.rstrip("/") + "/"


def files_under(directory: str) -> list[str]:
    """Every file below ``directory``, recursively, sorted (hidden names included); [] when there
    is none. Local: os.walk. Object stores: every object named ``directory/...`` (Beam's ``**``
    matches across '/')."""
    if is_local(directory):
        return sorted(os.path.join(root, f) for root, _, files in os.walk(directory) for f in files)
    return sorted(m.path for m in FileSystems.match([_prefix(directory) + "**"])[0].metadata_list)


def directories_named(directory: str, prefix: str) -> list[str]:
    """The directories directly under ``directory`` whose names start with ``prefix`` (e.g. the
    ``.temp-*`` of earlier runs), sorted. Object stores: the first path part below ``directory``
    of every object whose name starts there."""
    if is_local(directory):
        if not os.path.isdir(directory):
            return []
        return sorted(
            os.path.join(directory, n)
            for n in os.listdir(directory)
            if n.startswith(prefix) and os.path.isdir(os.path.join(directory, n))
        )
    base = _prefix(directory)
    found = FileSystems.match([base + prefix + "*/**"])[0].metadata_list
    return sorted({base + m.path[len(base) :].split("/", 1)[0] for m in found})


def is_directory(path: str) -> bool:
    """Local: os.path.isdir. Object stores: no object has this name while at least one lies
    under ``path/`` (an object and a prefix of the same name: the object wins)."""
    if is_local(path):
        return os.path.isdir(path)
    if FileSystems.exists(path.rstrip("/")):
        return False
    return bool(FileSystems.match([_prefix(path) + "**"], limits=[1])[0].metadata_list)


def exists(path: str) -> bool:
    """A file or a directory (see ``is_directory``) at ``path``."""
    return FileSystems.exists(path) or is_directory(path)


def delete_directory(directory: str) -> None:
    """Delete ``directory`` and everything under it; nothing happens when there is none (so a
    retried step may call it again). Object stores: every object under ``directory/``."""
    if is_local(directory):
        if os.path.isdir(directory):
            FileSystems.delete([directory])  # recursive
        return
    found = files_under(directory)
    for i in range(0, len(found), DELETE_BATCH):
        FileSystems.delete(found[i : i + DELETE_BATCH])


def delete_all(paths: Sequence[str]) -> None:
    """Delete each path, a file or a directory, in the given order (a manifest first, so a
    directory is never left with a manifest and half its files); missing ones are skipped."""
    for path in paths:
        if FileSystems.exists(path) and not (is_local(path) and os.path.isdir(path)):
            FileSystems.delete([path])
        else:
            delete_directory(path)
