"""Wire the job: inputs -> documents -> vocabulary -> tokens -> examples -> shards + manifest."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import contract, storage
from pipeline.config import PipelineConfig
from pipeline.contract import ShardManifest, SpecialTokens
from pipeline.formats import ExampleFormat
from pipeline.near_duplicates import FindNearDuplicates
from pipeline.outputs import FAILURE_REPORT, WriteOutputs
from pipeline.progress import InputTotals, ProgressReporter
from pipeline.runner import beam_options, make_runner, runner_heap, worker_environment
from pipeline.spill import Spill
from pipeline.stats import format_summary
from pipeline.tokenization import decide_casing
from pipeline.transforms import (
    CreateExamples,
    PrepareDocuments,
    ReadSources,
    TokenizeDocuments,
    TrainVocabulary,
    VocabInfo,
    make_vocab_info,
)

OUTPUT_ENTRIES = ("train", "eval", "documents", "rejects", contract.VOCAB_FILE)

log = logging.getLogger(__name__)


class JobError(RuntimeError):
    """A problem with the job's inputs or output directory, reported before any work starts, or
    with its output (``pipeline.output_checks``), reported instead of a manifest."""


def _visible(paths: list[str], directory: str) -> list[str]:
    """The paths with no hidden name ('.' first) below ``directory``."""
    root = directory.rstrip("/")
    return [p for p in paths if not any(part.startswith(".") for part in p[len(root) :].split("/") if part)]


def _files_of_directory(pattern: str) -> list[str] | None:
    """The files under ``pattern`` if it names a directory (recursively, hidden names skipped),
    else None; on object stores a directory is a prefix (``pipeline.storage.is_directory``)."""
    if not storage.is_directory(pattern):
        return None
    return _visible(storage.files_under(pattern), pattern)


def expand_inputs(patterns: list[str]) -> list[str]:
    """Every input file: a path, a glob, or a directory (the files under it, recursively)."""
    if not patterns:
        raise JobError("inputs is empty: give inputs='[path-or-glob, ...]'")
    paths: set[str] = set()
    for pattern in map(str, patterns):
        found = _files_of_directory(pattern)
        if found is None:
            found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if not found:
            raise JobError(f"input {pattern!r} matched no files")
        paths.update(found)
    return sorted(paths)


def input_totals(paths: list[str]) -> InputTotals:
    """The input files and their bytes as stored (compressed sizes), for the progress line; the
    bytes are 0 (unknown) when the file system cannot list them."""
    try:
        sizes = [m.size_in_bytes for result in FileSystems.match(paths) for m in result.metadata_list]
    except OSError:  # Beam's BeamIOError among them
        sizes = []
    return InputTotals(files=len(paths), bytes=sum(sizes))


TEMP_PREFIX = ".temp-"
"""A run's working directory under output_dir (``.temp-<uuid>``), removed when the run succeeds."""


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse an output_dir that holds a job's output, or with ``overwrite`` remove all of it:
    every shard, documents and rejects file of the earlier run whatever its shard count (an
    object store's "directories" included, so no stale part-*-of-<old n> is left for a glob
    over ``train/*.arrow`` to read), vocab.txt, the manifest first, and the ``.temp-*`` working
    directories that runs which crashed left behind (without ``overwrite`` they are named in a
    warning and left alone)."""
    existing = [
        e for e in (contract.MANIFEST_FILE,) + OUTPUT_ENTRIES if storage.exists(FileSystems.join(output_dir, e))
    ]
    crashed = storage.directories_named(output_dir, TEMP_PREFIX)
    if existing and not overwrite:
        raise JobError(
            f"{output_dir} already holds a job's output ({', '.join(existing)}); "
            "choose another output_dir or pass overwrite=true"
        )
    if overwrite:
        # The manifest goes first: a directory without one is never mistaken for a finished output.
        storage.delete_all([FileSystems.join(output_dir, e) for e in existing] + crashed)
    elif crashed:
        log.warning(
            "%s holds the working directories of %d earlier runs that did not finish (%s): overwrite=true removes them",
            output_dir,
            len(crashed),
            ", ".join(crashed),
        )


def read_vocab_file(cfg) -> VocabInfo:
    """tokenizer.vocab_file, checked before the job starts: it exists, is UTF-8, holds BERT's
    special tokens; its casing decided (``decide_casing``). Raises JobError otherwise."""
    where = f"tokenizer.vocab_file={cfg.vocab_file}"
    if not FileSystems.exists(cfg.vocab_file):
        raise JobError(f"{where} does not exist")
    try:
        with FileSystems.open(cfg.vocab_file) as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise JobError(f"{where} is not UTF-8 text (byte {e.start}): a BERT vocab.txt has one piece per line") from None
    tokens = [line.rstrip("\r") for line in text.split("\n")]
    while tokens and tokens[-1] == "":
        tokens.pop()
    try:
        SpecialTokens.from_vocab(tokens)
    except contract.ContractError as e:
        raise JobError(f"{where}: {e} (a BERT vocab.txt has one piece per line, these among them)") from None
    return make_vocab_info(tokens, decide_casing(tokens, cfg.lowercase, cfg.strip_accents))


def vocabulary_note(vocab_size: int, cfg) -> str:
    """The summary's vocabulary line: its size and, for a trained vocabulary smaller than asked,
    why (BPE-style training stops when no pair of pieces occurs tokenizer.min_frequency times)."""
    if cfg.vocab_file:
        return f"{vocab_size:,} pieces from {cfg.vocab_file}"
    if vocab_size >= cfg.vocab_size:
        return f"{vocab_size:,} pieces trained on the corpus"
    return (
        f"{vocab_size:,} pieces trained on the corpus, fewer than tokenizer.vocab_size={cfg.vocab_size:,}: "
        f"no further merge occurs at least tokenizer.min_frequency={cfg.min_frequency} times in this corpus "
        "(a larger corpus fills it; a smaller min_frequency adds rarer pieces)"
    )


def example_format_for(cfg: PipelineConfig, fixed_vocab: VocabInfo | None) -> ExampleFormat:
    """How the examples are encoded. The id type follows the vocabulary size, known before the
    job only for a given vocabulary; a trained one never exceeds tokenizer.vocab_size, so that
    bound picks the type."""
    vocab_size = len(fixed_vocab.tokens) if fixed_vocab else cfg.tokenizer.vocab_size
    schema = contract.example_schema(vocab_size, cfg.instances.objective, cfg.masking.mode)
    return ExampleFormat(schema, cfg.output.rows_per_batch, cfg.seed)


def build(
    p: beam.Pipeline,
    cfg: PipelineConfig,
    paths: list[str],
    config_dict: dict[str, Any],
    fixed_vocab: VocabInfo | None,
    temp_dir: str,
) -> None:
    """The job: input paths -> documents -> vocabulary -> tokens -> examples -> output_dir. Each
    stage passes its named outputs on (``pipeline.transforms``); large intermediate data goes
    through chunk files under ``temp_dir`` (``pipeline.spill``). With ``dedup.enabled`` the
    near-duplicates found in the documents (``pipeline.near_duplicates``) are left out of the
    vocabulary's counts and of the pools, as exact duplicates are."""
    spill = Spill(
        FileSystems.join(temp_dir, "spill"), cfg.shuffle.chunk_bytes, cfg.shuffle.pool_chunk_bytes, cfg.storage
    )
    example_format = example_format_for(cfg, fixed_vocab)
    read = p | "Inputs" >> beam.Create(paths) | "ReadSources" >> ReadSources(cfg.source, spill)
    prepared = read.documents | "PrepareDocuments" >> PrepareDocuments(
        cfg.cleaning, cfg.instances.eval_fraction, spill, cfg.instances.min_eval_documents, cfg.filters
    )
    near = None
    if cfg.dedup.enabled:
        near = prepared.chunks | "NearDuplicates" >> FindNearDuplicates(cfg.dedup, cfg.seed, spill, prepared.counts)
    removed = near.removed if near else None
    if fixed_vocab is not None:
        vocab = p | "GivenVocabulary" >> beam.Create([fixed_vocab])
    else:
        vocab = prepared.chunks | "TrainVocabulary" >> TrainVocabulary(
            cfg.tokenizer, spill, prepared.counts, prepared.held_out, cfg.cleaning.drop_duplicates, removed
        )
    tokenized = prepared.chunks | "Tokenize" >> TokenizeDocuments(vocab, spill, prepared.held_out)
    made = tokenized.documents | "CreateExamples" >> CreateExamples(
        cfg.instances,
        cfg.masking,
        cfg.output,
        cfg.seed,
        vocab,
        example_format.schema,
        prepared.counts,
        spill,
        cfg.cleaning.drop_duplicates,
        near_duplicates=removed,
        held_out=prepared.held_out if near else None,
    )
    _ = made | "WriteOutputs" >> WriteOutputs(
        cfg,
        config_dict,
        temp_dir,
        example_format,
        vocab,
        tokenized.unknown_words,
        prepared.held_out,
        tokenized.split_words,
        rejects=(read.rejects, prepared.rejects),
        stats=(read.stats, prepared.stats, tokenized.stats, *((near.stats,) if near else ())),
    )


def run(cfg: PipelineConfig, config_dict: dict[str, Any]) -> ShardManifest:
    """Run the job to completion; returns the manifest it wrote and prints the summary.
    Raises JobError when the output fails a check (no manifest then, and no temporaries left)."""
    twice = storage.flags_given_twice(cfg.storage, cfg.runner.extra)
    if twice:
        raise JobError(
            f"runner.extra={twice} repeats a storage.* setting: give it once, as storage.* "
            "(which every worker applies itself)"
        )
    options = beam_options(cfg.runner, cfg.log_level, extra_flags=storage.storage_flags(cfg.storage))
    # Beam's runners configure FileSystems on their workers only; the launcher lists inputs first.
    FileSystems.set_options(options)
    paths = expand_inputs(list(cfg.inputs))
    fixed_vocab = read_vocab_file(cfg.tokenizer) if cfg.tokenizer.vocab_file else None
    prepare_output_dir(cfg.output_dir, cfg.overwrite)
    temp_dir = FileSystems.join(cfg.output_dir, f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    start = time.perf_counter()
    every_s = cfg.progress_every_s if cfg.runner.runner == "DirectRunner" else 0
    with (
        ProgressReporter(every_s, inputs=input_totals(paths) if every_s else InputTotals()) as progress,
        runner_heap(cfg.runner),
        worker_environment(cfg.runner, cfg.log_level, progress.env),
        beam.Pipeline(runner=make_runner(cfg.runner, options), options=options) as p,
    ):
        build(p, cfg, paths, config_dict, fixed_vocab, temp_dir)
    seconds = time.perf_counter() - start
    manifest_path = FileSystems.join(cfg.output_dir, contract.MANIFEST_FILE)
    if not FileSystems.exists(manifest_path):
        raise_failure(cfg.output_dir, temp_dir, seconds)
    with FileSystems.open(manifest_path) as f:
        manifest = ShardManifest.from_dict(json.loads(f.read().decode("utf-8")))
    print(
        format_summary(
            manifest.statistics,
            seconds,
            cfg.output_dir,
            casing=manifest.casing_reason,
            vocabulary=vocabulary_note(manifest.vocab_size, cfg.tokenizer),
            warnings=manifest.warnings,
        ),
        flush=True,
    )
    return manifest


def raise_failure(output_dir: str, temp_dir: str, seconds: float) -> None:
    """After a job that wrote no manifest: remove its temporaries, print the summary of what it
    counted, and raise JobError with the finalize step's message."""
    report_path = FileSystems.join(temp_dir, FAILURE_REPORT)
    report = None
    if FileSystems.exists(report_path):
        with FileSystems.open(report_path) as f:
            report = json.loads(f.read().decode("utf-8"))
    storage.delete_directory(temp_dir)
    if report is None:
        raise JobError(f"the job finished without writing {contract.MANIFEST_FILE} or a failure report in {output_dir}")
    summary = format_summary(
        report["statistics"],
        seconds,
        output_dir,
        casing=report["casing"],
        failed=True,
        warnings=report.get("warnings", ()),
    )
    print(summary, flush=True)
    raise JobError(report["message"])
