"""Experiment tracking behind a tiny interface, with a do-nothing default.

The trainer talks to a ``Tracker`` only. ``make_tracker`` gives rank 0 a ``WandbTracker`` when the
logger config asks for W&B (online or offline) and every other rank, or ``logger.backend=none``,
or ``logger.mode=disabled``, a ``NullTracker``; wandb is imported only inside ``WandbTracker``.

The API key is never stored or logged here: W&B finds it itself (WANDB_API_KEY or ~/.netrc),
``check_wandb_login`` only asks wandb's own lookup whether there is one (before anything
expensive, so a missing login fails in seconds), and the run's config passes through ``redact``
before it is logged.
"""

from __future__ import annotations

import datetime
import os
from typing import Optional

from pipeline.redaction import REDACTED, is_secret_key, redact  # noqa: F401 (this module's public names)
from training.config import ConfigError, LoggerConfig

WANDB_LOGIN_MISSING = (
    "logger=wandb needs a W&B login: run `wandb login` or set WANDB_API_KEY; or use "
    "logger=wandb_offline (sync later with `wandb sync`) or logger=disabled"
)


def wandb_login_source() -> Optional[str]:
    """Where wandb would take its credentials from (an environment variable's name, the netrc
    file, or "settings"), or None when it has none. The order of wandb 0.31's own lookup
    (``wandb.sdk.lib.wbauth.authenticate._use_system_auth``): WANDB_API_KEY or
    WANDB_IDENTITY_TOKEN_FILE, then the netrc entry for the configured host
    (``wbauth.read_netrc_auth``, which honours NETRC and the host's upstream name), then an
    api_key in wandb's settings. Nothing is sent anywhere.

    Raises ConfigError when a key is there but malformed (wandb would refuse it too)."""
    from wandb import env
    from wandb.errors import AuthenticationError
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import wbauth

    key = os.environ.get(env.API_KEY)
    if key:
        problem = wbauth.check_api_key(key)
        if problem:
            raise ConfigError(f"{env.API_KEY} is set but is not a W&B API key: {problem} {WANDB_LOGIN_MISSING}")
        return env.API_KEY
    if os.environ.get(env.IDENTITY_TOKEN_FILE):
        return env.IDENTITY_TOKEN_FILE
    settings = wandb_setup.singleton().settings
    try:
        if wbauth.read_netrc_auth(host=settings.base_url):
            return "netrc"
    except AuthenticationError as e:
        raise ConfigError(
            f"the netrc entry for {settings.base_url} is not a W&B API key ({e}): {WANDB_LOGIN_MISSING}"
        ) from None
    return "settings" if settings.api_key else None


def check_wandb_login(cfg: LoggerConfig) -> None:
    """ConfigError (``WANDB_LOGIN_MISSING``) when the logger is W&B online and wandb has no
    credentials, instead of failing inside ``wandb.init``. Cheap (no network, no DeepSpeed):
    call it first, on every rank."""
    if cfg.backend == "wandb" and cfg.mode == "online" and wandb_login_source() is None:
        raise ConfigError(WANDB_LOGIN_MISSING)


class Tracker:
    """Where the trainer sends metrics. Every method is cheap to call and safe on any rank."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at an optimizer step."""
        raise NotImplementedError

    def summary(self, metrics: dict) -> None:
        """Record end-of-run values (final evaluation, totals)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Flush and close; the tracker is not used afterwards."""
        raise NotImplementedError

    @property
    def run_id(self) -> Optional[str]:
        """Id to store in checkpoints so that a resumed run continues the same tracked run."""
        raise NotImplementedError


class NullTracker(Tracker):
    """Tracks nothing. Keeps the run id it was given, so a checkpoint written by a run without
    tracking still hands the id of an earlier tracked run to a later resume."""

    def __init__(self, run_id: Optional[str] = None):
        self._run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def finish(self) -> None:
        pass

    @property
    def run_id(self) -> Optional[str]:
        return self._run_id


class WandbTracker(Tracker):
    """One Weights & Biases run (rank 0 only), online or offline.

    ``resume_run_id`` (from a checkpoint) continues that run (``resume="allow"``); without it W&B
    draws a new id, which ``run_id`` then returns for the checkpoint. Files go to ``cfg.dir`` or ``output_dir`` (``<dir>/wandb/...``).
    """

    def __init__(self, cfg: LoggerConfig, run_config: dict, output_dir: str, resume_run_id: Optional[str] = None):
        if cfg.mode not in ("online", "offline"):
            raise ValueError(f"WandbTracker needs mode online or offline, got {cfg.mode!r}")
        import wandb  # only here: no W&B import for runs that do not track

        wandb_dir = cfg.dir or output_dir
        os.makedirs(wandb_dir, exist_ok=True)
        self._run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            name=cfg.name,
            group=cfg.group,
            tags=list(cfg.tags) or None,
            dir=wandb_dir,
            mode=cfg.mode,
            id=resume_run_id,
            resume="allow",  # None: a new id
            config=redact(run_config),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def summary(self, metrics: dict) -> None:
        self._run.summary.update(dict(metrics))

    def finish(self) -> None:
        self._run.finish()

    @property
    def run_id(self) -> Optional[str]:
        return self._run.id


def make_tracker(
    cfg: LoggerConfig, run_config: dict, output_dir: str, rank: int, resume_run_id: Optional[str] = None
) -> Tracker:
    """The tracker for this process.

    run_config: the resolved Hydra config (``OmegaConf.to_container(cfg, resolve=True)``); secrets
        are redacted before W&B sees it.
    resume_run_id: the W&B run id stored in the checkpoint being resumed, if any.
    """
    if rank != 0 or cfg.backend == "none" or cfg.mode == "disabled":
        return NullTracker(resume_run_id)
    return WandbTracker(cfg, run_config, output_dir, resume_run_id)


# --- terminal progress -------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(max(seconds, 0.0)))))


def _rate(per_s: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= scale:
            return f"{per_s / scale:.1f}{suffix}"
    return f"{per_s:.0f}"


def format_progress(
    step: int, max_steps: int, loss: float, tokens_per_s: float, seconds_elapsed: float, start_step: int = 0
) -> str:
    """One terminal line: ``step 250/1000 (25.0%) | loss 6.1234 | 12.3k tok/s | 0:01:40 elapsed, 0:05:00 left``.

    Time left extrapolates the pace of this process: (step - start_step) steps took
    ``seconds_elapsed`` (start_step is where a resumed run started, so the steps of the run it
    resumed do not count as instantaneous).
    """
    done = step - start_step
    if done > 0 and seconds_elapsed > 0:
        left = _duration(seconds_elapsed / done * max(max_steps - step, 0))
    else:
        left = "?"
    percent = 100.0 * step / max_steps if max_steps > 0 else 0.0
    return (
        f"step {step}/{max_steps} ({percent:.1f}%) | loss {loss:.4f} | {_rate(tokens_per_s)} tok/s | "
        f"{_duration(seconds_elapsed)} elapsed, {left} left"
    )
