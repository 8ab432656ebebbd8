"""Secrets out of a config before it is written or logged: the data job's manifest (its resolved
config) and the trainer's W&B run config both pass through ``redact``.

A secret is recognised by its key's name (``is_secret_key``), and inside lists also as a
command-line flag (``--s3_secret_access_key=...``, or the flag followed by its value), as
Beam options in ``runner.extra`` are written.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

REDACTED = "<redacted>"
"""What a secret's value becomes in a written or logged config."""

_SECRET_SUBSTRINGS = ("api_key", "apikey", "access_key", "secret", "password", "passwd", "credential")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_FLAG = re.compile(r"^--?([A-Za-z0-9_.-]+)(=(.*))?$", re.DOTALL)


def is_secret_key(name: str) -> bool:
    """A config key or flag name that names a credential: it contains api_key, apikey,
    access_key, secret, password, passwd or credential (any case, so WANDB_API_KEY and
    s3_access_key_id too), or one of its words ends in "token" (hf_token, s3_session_token, authToken).

    "token" is matched by word so that ``special_tokens`` or ``tokenizer`` settings stay visible.
    """
    lowered = str(name).lower().replace("-", "_")
    if any(s in lowered for s in _SECRET_SUBSTRINGS):
        return True
    return any(word.endswith("token") for word in _WORD_SPLIT.split(lowered))


def _redact_list(items) -> list:
    """Items redacted one by one; a secret flag's value is redacted too, whether given as
    ``--name=value`` or as ``--name`` followed by the value."""
    out: list = []
    value_is_secret = False
    for item in items:
        if value_is_secret:
            out.append(REDACTED)
            value_is_secret = False
            continue
        flag = _FLAG.match(item) if isinstance(item, str) else None
        if flag and is_secret_key(flag.group(1)):
            if flag.group(2) is None:
                out.append(item)
                value_is_secret = True
            else:
                out.append(f"{item[: item.index('=')]}={REDACTED}")
            continue
        out.append(redact(item))
    return out


def redact(config: Any) -> Any:
    """A copy of ``config`` (nested dicts and lists) with the value of every secret key, at any
    depth, replaced by ``"<redacted>"``, and likewise the values of secret flags in lists
    (``["--s3_secret_access_key=abc"]`` -> ``["--s3_secret_access_key=<redacted>"]``); the
    input is left unchanged."""
    if isinstance(config, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return _redact_list(config)
    return config
