"""This rank's checks before a run builds anything, each failing with what to change.

    run = prepare_run(cfg, resolved)      # before the process group: ConfigError / DataContractError
    ... init_distributed, then check_ranks_agree(ctx, cfg.output_dir, agreement_record(...), error) ...

In order: the objective's name and what it can start from (``check_objective``: ConfigError) ->
the shards (an object store's copied to the node's cache) and their manifest, the
objective against the shards' sentence-pair task, the model's config from both, the manifest
check (``DataContractError``) -> the resume check (the newest complete checkpoint's
run_config.json against this run: ``ConfigError`` naming what differs) -> ``trainer.init_from``
(``training.init_from``) -> the precision on this machine's accelerator. What the ranks must then
hold the same is ``agreement_record``; ``eval_split_warnings`` says at start what the configured
evaluations could not measure.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

from training import checkpoint as ckpt
from training import models, objectives
from training.config import ConfigError, TrainConfig
from training.data import DataContractError, PretrainingData, RunExpectations
from training.init_from import check_init_from
from training.objectives import Objective
from training.run_log import EVALS_FILE

log = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """What this rank's checks found: everything the run is built from."""

    model_cfg: Any
    """The architecture, from the config and the shards' manifest."""
    data: PretrainingData
    """The validated shards."""
    objective: Objective
    """What the run trains, made for the shards' sentence-pair task."""
    record: dict
    """``checkpoint.run_record`` of this run, saved beside every checkpoint."""
    resume_tag: Optional[str]
    """The checkpoint to resume (``checkpoint_to_resume``), or None: a fresh run."""


def open_data(cfg: TrainConfig) -> tuple[Any, PretrainingData]:
    """The model's config (its architecture's: ``training.models``) from the manifest and the
    config, and the validated shards.
    Raises DataContractError / ConfigError with what to change, before anything is built.

    An s3:// or gs:// data_dir is first copied into the node-local cache and verified
    (``training.shard_cache``); cfg.data_dir then becomes that local directory, so everything
    downstream (manifest checks, memory-mapped shards, the export's vocab.txt) reads local files.
    The resolved config the run records keeps the data_dir as given."""
    from pipeline import contract
    from pipeline.contract import ContractError
    from training.data import open_pretraining_data
    from training.shard_cache import cached_data_dir

    cfg.data_dir = cached_data_dir(cfg.data_dir, cfg.data.cache_dir, cfg.storage, cfg.data.cache_max_gb)
    try:
        manifest = contract.read_manifest(cfg.data_dir)
    except ContractError as e:
        raise DataContractError(
            f"cannot use data_dir={cfg.data_dir} as training data: {e} (data_dir is the "
            f"data job's output_dir: python -m pipeline output_dir=...)"
        ) from e
    arch = models.of_schema(cfg.model)
    model_cfg = arch.model_config(cfg.model, manifest.vocab_size, manifest.objective, manifest.special_tokens["pad"])
    expect = RunExpectations.of_model(model_cfg, max_seq_length=cfg.data.max_seq_length)
    return model_cfg, open_pretraining_data(cfg.data_dir, cfg.data, cfg.seed, expect, unpad=cfg.trainer.unpad)


def check_objective(cfg: TrainConfig) -> None:
    """Before the shards are read: objective.name is a registered objective, and trainer.init_from
    is one it can start from. Raises ConfigError with what to change."""
    chosen = objectives.objective_class(cfg.objective.name)
    if chosen.architectures is not None and cfg.model.architecture not in chosen.architectures:
        raise ConfigError(
            f"objective={chosen.name} trains {' or '.join(chosen.architectures)} networks, not "
            f"model.architecture={cfg.model.architecture}: choose a model preset of "
            f"{' or '.join(chosen.architectures)} (e.g. model=base), or objective=mlm for this model"
        )
    if cfg.trainer.init_from and not chosen.starts_from_init_from:
        raise ConfigError(
            f"trainer.init_from={cfg.trainer.init_from} with objective={chosen.name}: init_from loads a BERT or "
            f"ModernBERT masked-LM export into the one network objective=mlm trains, and objective={chosen.name} "
            "trains another (a generator and a discriminator sharing their embeddings). Set trainer.init_from=null "
            f"to start {chosen.name} from random weights, or rerun the command of an interrupted "
            f"{chosen.name} run to resume it from its output_dir"
        )


def objective_for(cfg: TrainConfig, data: PretrainingData) -> Objective:
    """The configured objective (``cfg.objective``: its name and settings) for the shards'
    sentence-pair task; ConfigError for an unknown name, DataContractError (naming data_dir) for
    shards it does not train on."""
    chosen = cfg.objective
    try:
        return objectives.create(
            chosen.name, data.manifest.objective, sparse_head=cfg.trainer.sparse_mlm_head, settings=chosen.settings()
        )
    except DataContractError as e:
        raise DataContractError(f"data_dir={data.data_dir}: {e}") from e


def checkpoint_to_resume(cfg: TrainConfig, record: dict) -> Optional[str]:
    """The newest complete checkpoint tag in output_dir, once this run may resume it; None: a
    fresh run. Reads only small files, so a mismatch fails before anything is built.

    record: this run's ``checkpoint.run_record``. Raises ConfigError when there is a checkpoint
    but trainer.resume=false, or when ``checkpoint.check_resumable`` refuses it."""
    checkpoint_dir = os.path.join(cfg.output_dir, ckpt.CHECKPOINTS_SUBDIR)
    tag = ckpt.latest_complete(checkpoint_dir)
    if tag is None:
        return None
    where = os.path.join(checkpoint_dir, tag)
    if not cfg.trainer.resume:
        raise ConfigError(
            f"{checkpoint_dir} holds checkpoints (newest {tag}) but trainer.resume=false: a fresh "
            "run there would mix its checkpoints and steps.jsonl with the old run's; use another "
            "output_dir, or delete the old one"
        )
    saved = ckpt.read_run_record(checkpoint_dir, tag)
    main = os.environ.get("RANK", "0") == "0"  # before the process group: the launcher's rank
    if saved is None:
        if main:
            log.warning(
                "checkpoint %s has no %s (written before configs were kept with checkpoints): the config "
                "could not be compared with this run's; resuming it as it is",
                where,
                ckpt.RUN_CONFIG_FILE,
            )
        return tag
    forced = ckpt.check_resumable(saved, record, where, cfg.trainer.force_resume)
    if forced and main:
        log.warning(
            "trainer.force_resume=true: resuming %s although the config differs:\n  %s", where, "\n  ".join(forced)
        )
    return tag


def check_precision_supported(precision: str) -> None:
    """A precision the accelerator lacks (fp16 on a CPU whose oneDNN has no fp16, as most): say so
    before DeepSpeed fails deep inside engine construction."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    supported = {"fp32": True, "bf16": accelerator.is_bf16_supported(), "fp16": accelerator.is_fp16_supported()}
    if not supported.get(precision, True):
        usable = ", ".join(p for p, ok in supported.items() if ok)
        raise ConfigError(
            f"deepspeed.precision={precision} is not supported on this machine's DeepSpeed "
            f"accelerator ({accelerator.device_name()}); use one of: {usable}"
        )


def sentence_label_counts(statistics: dict, split: str) -> Optional[dict[str, int]]:
    """{label: examples} of ``split`` from a manifest's statistics (``examples/<split>`` and
    ``sentence_pair_negatives/<split>``, nested as the job writes them: label 1 is the negative);
    None where the shards do not count them."""
    examples = (statistics.get("examples") or {}).get(split)
    negatives = statistics.get("sentence_pair_negatives")
    if not isinstance(examples, int) or not isinstance(negatives, dict):
        return None
    return {"0": examples - negatives.get(split, 0), "1": negatives.get(split, 0)}


def eval_split_warnings(data: PretrainingData, eval_every: int) -> list[str]:
    """Rank 0, at start: why the evaluations this run is configured for (``trainer.eval_every`` > 0)
    would measure nothing: an eval split without examples (no evaluation runs and no evals.jsonl is
    written), or sentence-pair labels all of one class in it (its nsp_accuracy is 0 or 1 by construction)."""
    if not eval_every:
        return []
    split = data.cfg.eval_split
    rows = sum(s.rows for s in data.manifest.shards_of(split))
    if not rows:
        return [
            f"trainer.eval_every={eval_every} but {data.data_dir} has no {split!r} examples (the data job held out "
            f"no documents): this run evaluates nothing and writes no {EVALS_FILE}. Give the data job more "
            f"documents or a larger instances.eval_fraction, or set trainer.eval_every=0 to say no evaluation is wanted"
        ]
    counts = sentence_label_counts(data.manifest.statistics, split) if data.has_sentence_label else None
    present = {label: n for label, n in (counts or {}).items() if n > 0}
    if len(present) == 1:
        (label, n), task = next(iter(present.items())), data.manifest.objective.upper()
        return [
            f"every one of the {n:,} {split!r} examples has {task} label {label} (manifest statistics): the "
            f"evaluations' nsp_accuracy measures nothing; give the data job more "
            f"documents to hold out (a random B needs another document)"
        ]
    return []


AGREEMENT_EXCLUDED = ("output_dir", "data_dir")
"""Config keys that may be spelt differently per node: output_dir is compared as a directory
(``distributed.check_ranks_agree``), data_dir by the shards' fingerprint (a node may read its own copy)."""


def agreement_record(record: dict, resume_tag: Optional[str]) -> dict:
    """What every rank must hold the same, as {dotted key: value}: the redacted resolved config
    (``record``: ``checkpoint.run_record``) without ``AGREEMENT_EXCLUDED``, the shards'
    fingerprint and the checkpoint this rank would resume."""
    from training.config import flat_config

    compared = {k: v for k, v in flat_config(record["config"]).items() if k not in AGREEMENT_EXCLUDED}
    compared["data_dir (shards' fingerprint)"] = record["data"]["fingerprint"]
    compared["checkpoint to resume"] = resume_tag
    return compared


def prepare_run(cfg: TrainConfig, resolved: dict) -> PreparedRun:
    """This rank's checks before the process group: the shards (model config from their manifest),
    the objective, the run record, the checkpoint to resume (or None), init_from and the precision.
    Raises DataContractError / ConfigError with what to change."""
    check_objective(cfg)  # before the shards are read (an object store's copied)
    model_cfg, data = open_data(cfg)  # fails on a mismatch before any process group or model
    objective = objective_for(cfg, data)
    record = ckpt.run_record(resolved, model_cfg, ckpt.data_identity(data.manifest))
    resume_tag = checkpoint_to_resume(cfg, record)  # fails on another run's checkpoint, as early
    if cfg.trainer.init_from and resume_tag is None:
        check_init_from(cfg.trainer.init_from, model_cfg, data.manifest)
    check_precision_supported(cfg.deepspeed.precision)
    return PreparedRun(model_cfg, data, objective, record, resume_tag)
