"""The job's last stage: every output as temporary shards, then one finalize step that checks the
output and commits it, vocab.txt, and the manifest last (its presence marks a complete output)."""

from __future__ import annotations

import heapq
import json
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import contract, storage
from pipeline.config import MaskingConfig, PipelineConfig
from pipeline.contract import MaskingSpec, ShardManifest
from pipeline.formats import DocumentFormat, ExampleFormat, JsonLinesFormat
from pipeline.heldout import HeldOutRule, split_warnings
from pipeline.output_checks import (
    FIRST_REJECTS,
    accent_merge_warning,
    check_train_split,
    check_unk_rate,
    check_vocabulary_fit,
)
from pipeline.redaction import redact
from pipeline.seeding import derive_seed
from pipeline.shard_sink import ShardRecords, WriteShards, commit, complete_shards, write_text
from pipeline.stats import SumCounts, nest
from pipeline.transforms import CreatedExamples, VocabInfo

FAILURE_REPORT = "failure.json"  # written into the job's temp dir by a finalize step that refuses the output
ROWS_PER_SIDE_SHARD = 500_000  # documents / rejects tables


def first_rejects(written, n: int = FIRST_REJECTS) -> list[dict]:
    """The first ``n`` rejects in input order (by source, then position in it) of the temporary
    reject shards. The shards hold rejects by a hash, so every one is read; this runs only when
    the train split is empty, and keeps ``n`` rejects in memory."""

    def rejects():
        for shard in written:
            with FileSystems.open(shard.temp_path) as f:
                for line in f:  # one at a time: a table of rejects can be large
                    if line.strip():
                        yield json.loads(line.decode("utf-8"))

    return heapq.nsmallest(n, rejects(), key=_input_order)


def _input_order(reject: dict) -> tuple:
    return reject.get("source", ""), reject.get("position", 0), reject.get("record_id", ""), reject.get("reason", "")


def summary_statistics(stats: dict) -> dict:
    """The summed counters, nested, with [UNK] counts present (0) for every split with tokens."""
    stats = dict(stats)
    for key in [k for k in stats if k.startswith("tokens/")]:
        stats.setdefault("unk_tokens/" + key.split("/", 1)[1], 0)
    return nest(stats)


def masking_spec(m: MaskingConfig, max_seq_length: int) -> MaskingSpec:
    """The manifest's record of how the examples were (or are to be) masked."""
    return MaskingSpec(
        m.mode,
        m.masked_lm_prob,
        m.predictions_cap(max_seq_length),
        m.whole_word,
        m.dupe_factor,
        spans=m.spans,
        span_p=m.span_p,
        max_span_words=m.max_span_words,
    )


class _Finalize(beam.DoFn):
    """Runs once, after every shard is written: checks the output (``pipeline.output_checks``),
    then commits temporaries, writes vocab.txt, and the manifest last (its presence marks a
    complete output). An output that fails a check is not committed: the failure report goes
    to the temp dir, where ``pipeline.run.run`` finds it."""

    def __init__(self, cfg: PipelineConfig, config_dict: dict, temp_dir: str, example_format: ExampleFormat):
        self.cfg, self.config_dict, self.temp_dir, self.example_format = cfg, config_dict, temp_dir, example_format

    def setup(self):
        storage.configure_filesystems(self.cfg.storage)

    def process(
        self,
        _,
        examples,
        documents,
        rejects,
        vocab: VocabInfo,
        stats: dict,
        unknown_words: list,
        held_out: HeldOutRule,
        split_words: list,
    ):
        cfg, out = self.cfg, self.cfg.output_dir
        statistics = summary_statistics(stats)
        cap_warning = cfg.masking.cap_warning(cfg.instances.max_seq_length)
        warnings = [cap_warning] if cap_warning else []
        warnings += split_warnings(statistics, cfg.instances.objective, held_out.note)
        merged = accent_merge_warning(statistics, vocab.casing, cfg.tokenizer.vocab_file)
        if merged:  # said in the summary (a log line here would come once more through the runner)
            warnings.append(merged)
        problems = [
            m
            for m in (
                check_train_split(
                    statistics, first_rejects(rejects) if not statistics.get("examples", {}).get("train") else []
                ),
                check_unk_rate(statistics, unknown_words, vocab.casing, cfg.tokenizer.max_unk_fraction),
                check_vocabulary_fit(
                    statistics,
                    split_words,
                    cfg.tokenizer.max_single_char_word_fraction,
                    cfg.tokenizer.max_pieces_per_word,
                    None if cfg.tokenizer.vocab_file else len(vocab.tokens),
                ),
            )
            if m
        ]
        if problems:
            report = {
                "message": " ".join(problems),
                "statistics": statistics,
                "casing": vocab.casing.reason,
                "warnings": warnings,
            }
            write_text(FileSystems.join(self.temp_dir, FAILURE_REPORT), json.dumps(report, indent=2) + "\n")
            return
        infos = commit(
            complete_shards(self.example_format, self.temp_dir, examples, ["train"]), out, contract.SHARD_SUFFIX
        )
        commit(complete_shards(DocumentFormat(), self.temp_dir, documents, ["documents"]), out, contract.SHARD_SUFFIX)
        commit(complete_shards(JsonLinesFormat(), self.temp_dir, rejects, ["rejects"]), out, ".jsonl")
        write_text(FileSystems.join(out, contract.VOCAB_FILE), "\n".join(vocab.tokens) + "\n")
        manifest = ShardManifest.from_job(
            vocab=vocab.tokens,
            vocab_sha256=vocab.sha256,
            lowercase=vocab.lowercase,
            strip_accents=vocab.strip_accents,
            keep_letters=vocab.casing.keep_letters,
            casing_reason=vocab.casing.reason,
            max_seq_length=cfg.instances.max_seq_length,
            objective=cfg.instances.objective,
            masking=masking_spec(cfg.masking, cfg.instances.max_seq_length),
            seed=cfg.seed,
            shards=infos,
            statistics=statistics,
            config=self.config_dict,
            warnings=warnings,
        )
        write_text(FileSystems.join(out, contract.MANIFEST_FILE), manifest.to_json())
        storage.delete_directory(self.temp_dir)  # spill files too; a retried finalize finds it gone
        yield manifest.statistics


def _reject_key(reject: dict) -> int:
    """A reject's stable key for sharding: a hash of its JSON form."""
    return derive_seed(json.dumps(reject, sort_keys=True))


class WriteOutputs(beam.PTransform):
    """CreatedExamples -> cfg.output_dir: the train/eval shards, the documents and rejects tables,
    vocab.txt and manifest.json (``pipeline.contract``).

    Every output is first written as temporary shards in ``temp_dir`` (``pipeline.shard_sink``):
    the examples into the shards CreateExamples counted, the kept documents' provenance and the
    rejects by a seeded hash into tables of ROWS_PER_SIDE_SHARD rows. One finalize step, after
    them all, checks the output and commits it, with the manifest last
    (``ShardManifest.from_job``); an output that fails a check is not committed, and its report
    goes to ``temp_dir``/FAILURE_REPORT instead.

    ``vocab``: one VocabInfo; ``unknown_words``, ``split_words``: ``TokenizedDocuments``' (words
    behind [UNK] and words split into single characters, for the output checks);
    ``held_out``: ``PreparedDocuments.held_out`` (why there is no eval split, if there is none);
    ``rejects``, ``stats``: those of the stages before CreateExamples (its own come with its
    outputs); ``config_dict``: the job's configuration, redacted (``pipeline.redaction``) into
    the manifest. Returns the manifest's statistics: one dict, or none when a check refused the
    output."""

    def __init__(
        self,
        cfg: PipelineConfig,
        config_dict: dict,
        temp_dir: str,
        example_format: ExampleFormat,
        vocab,
        unknown_words,
        held_out,
        split_words,
        rejects: Sequence = (),
        stats: Sequence = (),
    ):
        super().__init__()
        self.cfg, self.config_dict, self.temp_dir, self.example_format = cfg, config_dict, temp_dir, example_format
        self.vocab, self.unknown_words, self.rejects, self.stats = vocab, unknown_words, tuple(rejects), tuple(stats)
        self.held_out, self.split_words = held_out, split_words

    def _extract_input_pvalues(self, made):
        # Beam's hook for a transform with several inputs: the input is a CreatedExamples, a
        # dataclass Beam does not look into, so its PCollections are named here.
        if not isinstance(made, CreatedExamples):
            raise TypeError(f"WriteOutputs writes the outputs of CreateExamples (CreatedExamples), got {made!r}")
        return made, {name: getattr(made, name) for name in made.__dataclass_fields__}

    def expand(self, made: CreatedExamples):
        cfg, temp_dir, storage_cfg = self.cfg, self.temp_dir, self.cfg.storage
        written_examples = made.examples | "WriteExamples" >> WriteShards(
            self.example_format, temp_dir, made.shard_counts, storage_cfg
        )
        documents = (
            made.documents
            | "NameDocuments" >> beam.Map(lambda d: ("documents", d))
            | "ShardDocuments" >> ShardRecords(cfg.seed, lambda d: d.doc_id, ROWS_PER_SIDE_SHARD)
        )
        written_documents = documents.records | "WriteDocuments" >> WriteShards(
            DocumentFormat(), temp_dir, documents.shard_counts, storage_cfg
        )
        rejects = (
            (*self.rejects, made.rejects)
            | "AllRejects" >> beam.Flatten()
            | "RejectsAsJson" >> beam.Map(lambda r: ("rejects", r.to_json_dict()))
            | "ShardRejects" >> ShardRecords(cfg.seed, _reject_key, ROWS_PER_SIDE_SHARD)
        )
        written_rejects = rejects.records | "WriteRejects" >> WriteShards(
            JsonLinesFormat(), temp_dir, rejects.shard_counts, storage_cfg
        )
        totals = (
            (*self.stats, made.stats) | "AllStats" >> beam.Flatten() | "SumStats" >> beam.CombineGlobally(SumCounts())
        )
        return (
            made.examples.pipeline
            | "Once" >> beam.Create([None])
            | "Finalize"
            >> beam.ParDo(
                _Finalize(cfg, redact(self.config_dict), temp_dir, self.example_format),
                examples=beam.pvalue.AsList(written_examples),
                documents=beam.pvalue.AsList(written_documents),
                rejects=beam.pvalue.AsList(written_rejects),
                vocab=beam.pvalue.AsSingleton(self.vocab),
                stats=beam.pvalue.AsSingleton(totals),
                unknown_words=beam.pvalue.AsSingleton(self.unknown_words),
                split_words=beam.pvalue.AsSingleton(self.split_words),
                held_out=beam.pvalue.AsSingleton(self.held_out),
            )
        )
