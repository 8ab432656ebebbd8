"""What every command line shares: one clear line for a user's mistake, logging set up once.

A misspelt key or a value of the wrong type fails while Hydra composes the config, with
Hydra's own short message. What is left for the entry points is a missing required key
(``???``) and a value that a schema's ``__post_init__`` rejects: both surface as exceptions
when the composed config becomes dataclasses, and ``user_error`` turns them into one line
instead of a traceback through Hydra and OmegaConf.

Each entry point (``python -m pipeline``, ``training``, ``training.finetune``,
``training.evaluate``) is then: ``config_or_exit`` (the schema object, or exit 2 with that line),
and the run inside ``exit_on(<errors a user can fix>)`` (their message on one line, exit 2 or
the code given); anything else keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NoReturn, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def user_error(exc: BaseException, usage: str) -> Optional[str]:
    """The one-line message for a configuration mistake, or None if ``exc`` is not one.

    usage: the command's synopsis, shown when a required key is missing.
    """
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", None) or "a required key"
        return f"{key} is required (it has no default): {usage}"
    if isinstance(exc, OmegaConfBaseException):
        # A value rejected while building the dataclasses: OmegaConf wraps the schema's own
        # message and appends its object dump; the first line is the message.
        return str(exc).strip().splitlines()[0]
    if isinstance(exc, ValueError):  # a schema's __post_init__ check
        return str(exc)
    return None


def exit_with(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def config_or_exit(
    cfg: DictConfig, usage: str, to_object: Callable[[DictConfig], Any] = OmegaConf.to_object
) -> tuple[Any, dict]:
    """The composed config as its schema's object, and as a plain dict with every value resolved
    (what a run records); a configuration mistake (``user_error``) exits 2 with its one line.

    to_object: the command's conversion (``OmegaConf.to_object``, or one that runs more checks);
    usage: the command's synopsis, shown when a required key is missing. Any other exception is
    raised as it is.
    """
    try:
        return to_object(cfg), OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - anything that is not a user error is re-raised
        message = user_error(e, usage)
        if message is None:
            raise
        exit_with(message)


@contextmanager
def exit_on(*errors: type[BaseException], code: int = 2) -> Iterator[None]:
    """Errors a user can fix, raised inside the block: their message on one line
    (``error: ...`` on stderr) and exit ``code``, without a traceback; other exceptions pass."""
    try:
        yield
    except errors as e:
        exit_with(str(e), code)


class BeamImportNoise(logging.Filter):
    """Drops warnings that Beam's modules send to the root logger while they are imported
    (e.g. "apitools not found" when the gcp extra is not installed): nothing a user can act on,
    printed once per process. Beam's own loggers (``apache_beam.*``) are not affected."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_beam = record.name == "root" and f"{os.sep}apache_beam{os.sep}" in record.pathname
        return not (from_beam and record.levelno < logging.ERROR)


def configure_logging(level: str, beam_level: Optional[str] = None) -> None:
    """The process's logging: ``level`` for everything, to stderr (stdout carries the results).

    beam_level: the level of Beam's own loggers (``apache_beam.*``), if not ``level``.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(BeamImportNoise())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("apache_beam").setLevel(beam_level or level)
