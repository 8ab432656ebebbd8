"""One S3 client per process and settings, where Beam builds one per filesystem call.

Beam's S3 filesystem makes a new ``S3IO`` for every call (``match``, ``exists``, ``open``,
``delete``...), and each builds a boto3 session and client: ~100-160 ms of loading botocore's
service model, measured here, more than the request itself against a near endpoint. A job that
opens a few hundred objects spent most of its S3 time there (the sample's job took 16.4 s on S3
against 6.3 s on local disk).

``share_s3_clients()`` makes the boto3 module Beam's S3 wrapper calls hand out one low-level client
per distinct set of arguments (endpoint, region, credentials given as options, ...) in this
process. Only the botocore client is shared, which boto3 documents as thread-safe; Beam's wrapper
object, which keeps the state of a download in progress, is still made per call. Credentials that
boto3 finds in the environment or an instance profile are resolved by the client as before (and
refreshed by it when they expire). A forked child makes its own (the cache is keyed by process id).
Idempotent; ``storage.configure_filesystems`` calls it in every process that touches files.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_clients: dict[tuple, object] = {}
made = 0  # low-level clients built in this process (read by tests and benches)


class _SharedSession:
    """What ``boto3.session.Session()`` returns to Beam's wrapper: ``client(...)`` looks up the
    cache first."""

    boto3 = None  # the real module, as Beam's wrapper imported it (set by share_s3_clients)

    def client(self, *args, **kwargs):
        global made
        key = (os.getpid(), args, tuple(sorted(kwargs.items())))
        with _lock:
            found = _clients.get(key)
            if found is None:
                found = _clients[key] = self.boto3.session.Session().client(*args, **kwargs)
                made += 1
        return found


class _SessionModule:
    Session = _SharedSession


class _Boto3ForBeam:
    """Stands for the ``boto3`` module inside Beam's S3 wrapper, which only calls
    ``boto3.session.Session()``; any other attribute is the real module's."""

    session = _SessionModule

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)


def share_s3_clients() -> bool:
    """Install the shared clients in Beam's S3 wrapper; False when Beam's AWS extra (boto3) is
    not installed, where there is nothing to share."""
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:
        return False
    real = getattr(boto3_client, "boto3", None)
    if real is None:
        return False
    if not isinstance(real, _Boto3ForBeam):
        _SharedSession.boto3 = real
        boto3_client.boto3 = _Boto3ForBeam(real)
    return True
