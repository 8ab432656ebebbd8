"""Wire the job: inputs -> documents -> vocabulary -> tokens -> examples -> shards + manifest."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import contract
from pipeline.config import PipelineConfig, RunnerConfig
from pipeline.contract import MaskingSpec, ShardManifest, SpecialTokens
from pipeline.formats import DocumentFormat, ExampleFormat, JsonLinesFormat
from pipeline.seeding import derive_seed
from pipeline.shard_sink import ShardRecords, WriteShards, commit, complete_shards, write_text
from pipeline.stats import SumCounts, format_summary, nest
from pipeline.tokenization import is_uncased
from pipeline.transforms import (CreateExamples, PrepareDocuments, ReadSources, TokenizeDocuments,
                                 TrainVocabulary, VocabInfo, make_vocab_info)

OUTPUT_ENTRIES = ("train", "eval", "documents", "rejects", contract.VOCAB_FILE)
ROWS_PER_SIDE_SHARD = 500_000  # documents / rejects tables

# glibc malloc settings for the DirectRunner's worker processes, which inherit the environment.
# By default a process may get up to 8 malloc arenas per core and keeps large freed buffers in
# its heap, so a worker's resident memory follows the largest input it ever received (Beam's
# local runner sends a worker its whole part of a grouped input at once). Two arenas, and
# buffers of 1 MiB or more mapped on their own and unmapped when freed, keep it near what is
# live: on the benchmark's 4x input a worker's peak went from 455 to 330 MiB at the same speed.
# Variables already set by the user win. Cluster workers take these from their container image.
WORKER_MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
                     "MALLOC_TRIM_THRESHOLD_": str(1 << 20)}


class JobError(RuntimeError):
    """A problem with the job's inputs or output directory, reported before any work starts."""


def beam_options(cfg: RunnerConfig) -> PipelineOptions:
    flags = [f"--runner={cfg.runner}"]
    values = {k: getattr(cfg, k) for k in (
        "project", "region", "temp_location", "staging_location", "job_name", "machine_type",
        "max_num_workers", "setup_file", "flink_master", "spark_master_url", "environment_type",
        "environment_config", "direct_running_mode")}
    if cfg.runner == "DirectRunner" and cfg.direct_num_workers is not None:
        values["direct_num_workers"] = cfg.direct_num_workers or os.cpu_count() or 1
    flags += [f"--{k}={v}" for k, v in values.items() if v is not None]
    return PipelineOptions(flags + [str(x) for x in cfg.extra])


def make_runner(cfg: RunnerConfig, options: PipelineOptions):
    """The runner object for ``beam.Pipeline``; None lets Beam resolve ``--runner``.

    "DirectRunner" runs Beam's FnApiRunner (the DirectRunner's batch engine, with
    direct_num_workers / direct_running_mode) chosen explicitly: Beam's DirectRunner first tries
    the Prism runner, which downloads a binary at run time and fails on machines without internet.
    """
    if cfg.runner != "DirectRunner":
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=provision)


@contextlib.contextmanager
def worker_environment(cfg: RunnerConfig):
    """While the job runs, the DirectRunner's worker processes start with WORKER_MALLOC_ENV."""
    added = ({k: v for k, v in WORKER_MALLOC_ENV.items() if k not in os.environ}
             if cfg.runner == "DirectRunner" else {})
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def expand_inputs(patterns: list[str]) -> list[str]:
    if not patterns:
        raise JobError("inputs is empty: give inputs='[path-or-glob, ...]'")
    paths: set[str] = set()
    for pattern in patterns:
        result = FileSystems.match([str(pattern)])[0]
        found = [m.path for m in result.metadata_list]
        if not found:
            raise JobError(f"input {pattern!r} matched no files")
        paths.update(found)
    return sorted(paths)


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    existing = [e for e in (contract.MANIFEST_FILE,) + OUTPUT_ENTRIES
                if FileSystems.exists(FileSystems.join(output_dir, e))]
    if not existing:
        return
    if not overwrite:
        raise JobError(f"{output_dir} already holds a job's output ({', '.join(existing)}); "
                       "choose another output_dir or pass overwrite=true")
    # The manifest goes first: a directory without one is never mistaken for a finished output.
    FileSystems.delete([FileSystems.join(output_dir, e) for e in existing])


def read_vocab_file(cfg) -> VocabInfo:
    with FileSystems.open(cfg.vocab_file) as f:
        tokens = [line.rstrip("\r\n") for line in f.read().decode("utf-8").split("\n")]
    while tokens and tokens[-1] == "":
        tokens.pop()
    SpecialTokens.from_vocab(tokens)  # fails early with a clear message if [CLS] etc. are missing
    lowercase = is_uncased(tokens) if cfg.lowercase is None else cfg.lowercase
    return make_vocab_info(tokens, lowercase)


class _Finalize(beam.DoFn):
    """Runs once, after every shard is written: commit temporaries, write vocab.txt, then the
    manifest last (its presence marks a complete output)."""

    def __init__(self, cfg: PipelineConfig, config_dict: dict, temp_dir: str, example_format: ExampleFormat):
        self.cfg, self.config_dict, self.temp_dir, self.example_format = cfg, config_dict, temp_dir, example_format

    def process(self, _, examples, documents, rejects, vocab: VocabInfo, stats: dict):
        cfg, out = self.cfg, self.cfg.output_dir
        infos = commit(complete_shards(self.example_format, self.temp_dir, examples, ["train"]), out,
                       contract.SHARD_SUFFIX)
        commit(complete_shards(DocumentFormat(), self.temp_dir, documents, ["documents"]), out, contract.SHARD_SUFFIX)
        commit(complete_shards(JsonLinesFormat(), self.temp_dir, rejects, ["rejects"]), out, ".jsonl")
        write_text(FileSystems.join(out, contract.VOCAB_FILE), "\n".join(vocab.tokens) + "\n")
        special = SpecialTokens.from_vocab(vocab.tokens)
        m = cfg.masking
        manifest = ShardManifest(
            schema_version=contract.SCHEMA_VERSION, vocab_file=contract.VOCAB_FILE, vocab_sha256=vocab.sha256,
            vocab_size=len(vocab.tokens), lowercase=vocab.lowercase,
            special_tokens={k: getattr(special, k) for k in SpecialTokens.NAMES},
            max_seq_length=cfg.instances.max_seq_length, objective=cfg.instances.objective,
            masking=MaskingSpec(m.mode, m.masked_lm_prob, m.max_predictions_per_seq, m.whole_word, m.dupe_factor),
            seed=cfg.seed, shards=infos, statistics=nest(stats), config=self.config_dict)
        write_text(FileSystems.join(out, contract.MANIFEST_FILE), manifest.to_json())
        if FileSystems.exists(self.temp_dir):  # a retried finalize finds it gone
            FileSystems.delete([self.temp_dir])
        yield manifest.statistics


def build(p: beam.Pipeline, cfg: PipelineConfig, paths: list[str], config_dict: dict[str, Any],
          fixed_vocab: VocabInfo | None) -> None:
    temp_dir = FileSystems.join(cfg.output_dir, f".temp-{uuid.uuid4().hex}")
    read = p | "Inputs" >> beam.Create(paths) | "ReadSources" >> ReadSources(cfg.source)
    split_docs, rejects, stats = read.documents | "PrepareDocuments" >> PrepareDocuments(
        cfg.cleaning, cfg.instances.eval_fraction)
    rejects.insert(0, read.rejects)
    stats.insert(0, read.stats)

    if fixed_vocab is not None:
        vocab = p | "GivenVocabulary" >> beam.Create([fixed_vocab])
    else:
        vocab = split_docs | "TrainVocabulary" >> TrainVocabulary(cfg.tokenizer, cfg.cleaning.drop_duplicates)

    # The id type follows the vocabulary size, known before the job only for a given vocabulary;
    # a trained one never exceeds tokenizer.vocab_size, so that bound picks the type.
    vocab_size = len(fixed_vocab.tokens) if fixed_vocab else cfg.tokenizer.vocab_size
    schema = contract.example_schema(vocab_size, cfg.instances.objective, cfg.masking.mode)
    example_format = ExampleFormat(schema, cfg.output.rows_per_batch, cfg.seed)

    tokenized = split_docs | "Tokenize" >> TokenizeDocuments(vocab)
    create = CreateExamples(cfg.instances, cfg.masking, cfg.output, cfg.seed, vocab, schema,
                            cfg.cleaning.drop_duplicates, spill_dir=temp_dir)
    made = tokenized | "CreateExamples" >> create
    rejects.append(made.rejects)
    stats.append(made.stats)

    written_examples = made.examples | "WriteExamples" >> WriteShards(example_format, temp_dir, create.shard_counts)
    doc_keyed, doc_counts = (made.documents
                             | "NameDocuments" >> beam.Map(lambda d: ("documents", d))
                             | "ShardDocuments" >> ShardRecords(cfg.seed, lambda d: d.doc_id, ROWS_PER_SIDE_SHARD))
    written_docs = doc_keyed | "WriteDocuments" >> WriteShards(DocumentFormat(), temp_dir, doc_counts)
    reject_keyed, reject_counts = (rejects
                                   | "AllRejects" >> beam.Flatten()
                                   | "RejectsAsJson" >> beam.Map(lambda r: ("rejects", r.to_json_dict()))
                                   | "ShardRejects" >> ShardRecords(cfg.seed, lambda r: derive_seed(
                                       json.dumps(r, sort_keys=True)), ROWS_PER_SIDE_SHARD))
    written_rejects = reject_keyed | "WriteRejects" >> WriteShards(JsonLinesFormat(), temp_dir, reject_counts)
    totals = stats | "AllStats" >> beam.Flatten() | "SumStats" >> beam.CombineGlobally(SumCounts())

    _ = (p
         | "Once" >> beam.Create([None])
         | "Finalize" >> beam.ParDo(_Finalize(cfg, config_dict, temp_dir, example_format),
                                    examples=beam.pvalue.AsList(written_examples),
                                    documents=beam.pvalue.AsList(written_docs),
                                    rejects=beam.pvalue.AsList(written_rejects),
                                    vocab=beam.pvalue.AsSingleton(vocab),
                                    stats=beam.pvalue.AsSingleton(totals)))


def run(cfg: PipelineConfig, config_dict: dict[str, Any]) -> ShardManifest:
    """Run the job to completion; returns the manifest it wrote and prints the summary."""
    paths = expand_inputs(list(cfg.inputs))
    fixed_vocab = read_vocab_file(cfg.tokenizer) if cfg.tokenizer.vocab_file else None
    prepare_output_dir(cfg.output_dir, cfg.overwrite)
    start = time.perf_counter()
    options = beam_options(cfg.runner)
    with worker_environment(cfg.runner), \
            beam.Pipeline(runner=make_runner(cfg.runner, options), options=options) as p:
        build(p, cfg, paths, config_dict, fixed_vocab)
    seconds = time.perf_counter() - start
    with FileSystems.open(FileSystems.join(cfg.output_dir, contract.MANIFEST_FILE)) as f:
        manifest = ShardManifest.from_dict(json.loads(f.read().decode("utf-8")))
    print(format_summary(manifest.statistics, seconds, cfg.output_dir), flush=True)
    return manifest
