"""The job's composite transforms, in pipeline order. Each per-element function is small and
counts what it rejects (``CountingDoFn.count``) and emits the rejection instead of dropping it.

A transform with several outputs returns them as a frozen dataclass of named PCollections
(``SourceDocuments``, ``PreparedDocuments``, ``TokenizedDocuments``, ``CreatedExamples``), which
the next stage is given by name; writing them all is ``pipeline.outputs.WriteOutputs``."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import contract, progress, storage
from pipeline.accents import stripped_characters
from pipeline.config import (
    CleaningConfig,
    FiltersConfig,
    InstancesConfig,
    MaskingConfig,
    OutputConfig,
    SourceConfig,
    TokenizerConfig,
)
from pipeline.documents import Document, prepare_document
from pipeline.formats import DocumentRecord
from pipeline.heldout import AssignSplit, DecideHeldOut
from pipeline.instances import InstanceParams, TokenizedDocument, examples_for_document
from pipeline.near_duplicates import NearDuplicate
from pipeline.records import RawDocument, Rejection, RejectReason, WikitextPage
from pipeline.seeding import unit_interval, unit_interval_of
from pipeline.shard_sink import SpilledBatch, num_shards_for
from pipeline.sources import (
    ParquetPart,
    is_parquet,
    plan_parquet,
    read_parquet_part,
    read_source,
    wikitext_page_to_documents,
)
from pipeline.spill import (
    ChunkWriter,
    KeyedChunkWriter,
    ReadChunks,
    Spill,
    SpillChunks,
    SpilledChunk,
    in_window,
    read_all,
)
from pipeline.stats import STATS_TAG, CountingDoFn, SumCounts
from pipeline.tokenization import (
    SPECIAL_TOKENS,
    CasingDecision,
    build_tokenizer,
    letter_words,
    masking_vocabulary,
    split_into_characters,
    training_casing,
    vocab_sha256,
)
from pipeline.vocab_training import WordCounter, train_wordpiece

REJECTS_TAG = "rejects"
EMPTY_TAG = "empty"
DOCUMENTS_TAG = "documents"
UNKNOWN_WORDS_TAG = "unknown_words"
TOP_UNKNOWN_WORDS = 10  # how many of the words that became [UNK] reach the output checks
SPLIT_WORDS_TAG = "split_words"
SPLIT_WORDS_PER_BUNDLE = 50  # a bundle's most frequent words split into single characters, sent on
MAX_SPLIT_WORDS_HELD = 10_000  # distinct such words a bundle counts (a corpus the vocabulary misses has many)
UNK = "[UNK]"


def _reject(counting: CountingDoFn, r: Rejection):
    counting.count(f"rejected/{r.reason.value}")
    return beam.pvalue.TaggedOutput(REJECTS_TAG, r)


# --- reading -------------------------------------------------------------------------------


def _documents_and_rejects(counting: CountingDoFn, items):
    """RawDocuments (counted per format) to the main output, Rejections to ``rejects``."""
    for item in items:
        if isinstance(item, Rejection):
            yield _reject(counting, item)
        else:
            counting.count(f"documents_read/{item.format.value}")
            yield item


def _open_stored(path: str):
    """A function that opens ``path`` as stored (no decompression by Beam), seekable."""
    return lambda: FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class _PlanReads(CountingDoFn):
    """An input path -> its units of reading work (main output): the path itself, or for a
    Parquet file one ParquetPart per row group, read from its footer, so that the row groups of
    one large file are read by many workers; a Parquet file that is unreadable or has no text
    column -> a Rejection (``rejects``)."""

    def __init__(self, cfg: SourceConfig, spill: Spill):
        self.cfg, self.spill = cfg, spill

    def setup(self):
        storage.configure_filesystems(self.spill.storage_cfg)

    def process(self, path: str):
        self.count("files_read")
        if not is_parquet(path):
            yield path
            return
        parts = 0
        for item in plan_parquet(path, _open_stored(path), self.cfg):
            if isinstance(item, Rejection):
                yield _reject(self, item)
            else:
                parts += 1
                yield item
        if not parts:
            progress.note(progress.FILES_DONE, 1)


class _ReadSourceFile(CountingDoFn):
    """A unit of reading work (a file path, or a ParquetPart) -> its records, streamed into
    chunk files: RawDocuments, or WikitextPages whose conversion to prose waits until after
    the reshuffle, leave as SpilledChunks (main output), so one large file never sits whole in
    the runner; Rejections (``rejects``)."""

    def __init__(self, cfg: SourceConfig, spill: Spill):
        self.cfg, self.spill = cfg, spill

    def setup(self):
        storage.configure_filesystems(self.spill.storage_cfg)  # not every runner does

    def start_bundle(self):
        super().start_bundle()
        self._chunks = ChunkWriter(self.spill, "records")

    def process(self, unit: str | ParquetPart):
        if isinstance(unit, ParquetPart):
            items = read_parquet_part(unit, _open_stored(unit.path))
        else:
            opener = lambda: progress.counted_reads(_open_stored(unit)())  # noqa: E731
            items = read_source(unit, opener, self.cfg, defer_wikitext=True)
        for item in items:
            if isinstance(item, Rejection):
                yield _reject(self, item)
            else:
                yield from self._chunks.add(item)
        if isinstance(unit, ParquetPart):  # its reads are random access: counted by what the part holds
            progress.note(progress.INPUT_BYTES, unit.stored_bytes)
        if not isinstance(unit, ParquetPart) or unit.last:  # a Parquet file counts with its last row group
            progress.note(progress.FILES_DONE, 1)

    def finish_bundle(self):
        for chunk in self._chunks.flush():
            yield in_window(chunk)
        yield from super().finish_bundle()


class _ToRawDocuments(CountingDoFn):
    """A record -> RawDocuments (main; a WikitextPage is converted to prose here) or Rejections."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg

    def process(self, record: RawDocument | WikitextPage):
        items = wikitext_page_to_documents(record, self.cfg) if isinstance(record, WikitextPage) else (record,)
        yield from _documents_and_rejects(self, items)


@dataclass(frozen=True)
class SourceDocuments:
    """What ``ReadSources`` gives."""

    documents: beam.PCollection  # RawDocument
    rejects: beam.PCollection  # Rejection: unreadable or malformed parts, pages that are no article, repairs
    stats: beam.PCollection  # dict of per-bundle counters (``pipeline.stats``)


class ReadSources(beam.PTransform):
    """Input paths -> SourceDocuments: RawDocuments, with rejects and stats.

    Work is spread three times: files over workers (real corpora come as many files), then
    the units they are read in (a file, or one row group of a Parquet file, planned from its
    footer: one large Parquet file keeps every worker busy), then the records read from them,
    in chunks of about ``shuffle.chunk_bytes``. Wikitext conversion costs more than the
    sequential scan of a dump that finds the pages, so it runs after the last spread: a
    single large dump (or one large JSON-lines file) still keeps every worker busy. One
    reshuffle for every kind of record, so the documents leave as one PCollection that later
    steps fuse onto. ``spill``: where the chunks go (``pipeline.spill``)."""

    def __init__(self, cfg: SourceConfig, spill: Spill):
        super().__init__()
        self.cfg, self.spill = cfg, spill

    def expand(self, paths) -> SourceDocuments:
        planned = (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "PlanReads"
            >> beam.ParDo(_PlanReads(self.cfg, self.spill)).with_outputs(REJECTS_TAG, STATS_TAG, main="units")
        )
        read = (
            planned.units
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadFile"
            >> beam.ParDo(_ReadSourceFile(self.cfg, self.spill)).with_outputs(REJECTS_TAG, STATS_TAG, main="records")
        )
        converted = (
            read.records
            | "SpreadRecords" >> beam.Reshuffle()
            | "RecordsOfChunks" >> ReadChunks(self.spill)
            | "ToDocuments"
            >> beam.ParDo(_ToRawDocuments(self.cfg)).with_outputs(REJECTS_TAG, STATS_TAG, main="documents")
        )
        return SourceDocuments(
            documents=converted.documents,
            rejects=(planned[REJECTS_TAG], read[REJECTS_TAG], converted[REJECTS_TAG]) | "ReadRejects" >> beam.Flatten(),
            stats=(planned[STATS_TAG], read[STATS_TAG], converted[STATS_TAG]) | "ReadStats" >> beam.Flatten(),
        )


# --- cleaning --------------------------------------------------------------------------------


class _PrepareDocument(CountingDoFn):
    def __init__(self, cfg: CleaningConfig, filters: FiltersConfig):
        self.cfg, self.filters = cfg, filters

    def process(self, raw: RawDocument):
        doc, rejections = prepare_document(raw, self.cfg, self.filters)
        for r in rejections:
            yield _reject(self, r)
        if doc is not None:
            yield doc


@dataclass(frozen=True)
class PreparedDocuments:
    """What ``PrepareDocuments`` gives: the documents as every later step reads them."""

    chunks: beam.PCollection  # SpilledChunk of Document, spread over the workers
    held_out: beam.PCollection  # one HeldOutRule: read the chunks through ``ReadDocuments`` for (split, Document)
    counts: beam.PCollection  # one {split: documents} under that rule
    rejects: beam.PCollection  # Rejection: documents too short
    stats: beam.PCollection  # dict of per-bundle counters (``pipeline.stats``)


class PrepareDocuments(beam.PTransform):
    """RawDocument -> PreparedDocuments: sentence-split, filtered, and written to chunk files
    (``spill``), with the held-out rule (``pipeline.heldout``) and the count per split under it.
    The split is applied where the chunks are read (``ReadDocuments``): the rule needs every
    document's hash first, and applying it here would make the runner hold the documents.

    Every later step reads the documents from chunk files (``pipeline.spill``): the vocabulary,
    which tokenising waits for, would otherwise hold them all in the runner meanwhile. The
    reshuffle ends the stage at the references: the steps after it wait for side inputs of this
    stage (the counts per split), and without it Beam's fuser would end the stage after the
    first such step's predecessor instead, so that the runner would hold its output (measured:
    the tokenized documents, 40+ MB a bundle at 64x the sample).

    Exact duplicates are dropped later, in ``CreateExamples``: a document's id is a hash of its
    text and its pool a hash of the id, so copies meet in one pool, and the documents cross
    the shuffle once (for the pools) instead of twice."""

    def __init__(
        self,
        cfg: CleaningConfig,
        eval_fraction: float,
        spill: Spill,
        min_eval_documents: int = 0,
        filters: FiltersConfig | None = None,
    ):
        super().__init__()
        self.cfg, self.eval_fraction, self.spill = cfg, eval_fraction, spill
        self.min_eval_documents = min_eval_documents
        self.filters = FiltersConfig() if filters is None else filters

    def expand(self, raw_docs) -> PreparedDocuments:
        prepared = raw_docs | "CleanAndSplit" >> beam.ParDo(_PrepareDocument(self.cfg, self.filters)).with_outputs(
            REJECTS_TAG, STATS_TAG, main="documents"
        )
        held_out, counts = prepared.documents | "HeldOut" >> DecideHeldOut(self.eval_fraction, self.min_eval_documents)
        chunks = (
            prepared.documents
            | "SpillDocuments" >> SpillChunks(self.spill, "documents")
            | "SpreadDocuments" >> beam.Reshuffle()
        )
        return PreparedDocuments(
            chunks=chunks, held_out=held_out, counts=counts, rejects=prepared[REJECTS_TAG], stats=prepared[STATS_TAG]
        )


class ReadDocuments(beam.PTransform):
    """Chunks of Document -> (split, Document) under ``held_out`` (a singleton HeldOutRule)."""

    def __init__(self, spill: Spill, held_out):
        super().__init__()
        self.spill, self.held_out = spill, held_out

    def expand(self, chunks):
        return chunks | "Read" >> ReadChunks(self.spill) | "Split" >> AssignSplit(self.held_out)


# --- vocabulary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VocabInfo:
    tokens: tuple[str, ...]
    casing: CasingDecision  # how text is normalised for these pieces, and why
    sha256: str

    @property
    def lowercase(self) -> bool:
        return self.casing.lowercase

    @property
    def strip_accents(self) -> bool:
        return self.casing.strip_accents


def make_vocab_info(tokens, casing: CasingDecision | bool) -> VocabInfo:
    """``casing`` a bool: lowercase, with accents stripped exactly when lowercasing (BERT's default)."""
    if isinstance(casing, bool):
        casing = training_casing(casing)
    tokens = tuple(tokens)
    return VocabInfo(tokens, casing, vocab_sha256(tokens))


class _CountWords(beam.DoFn):
    """A sampled training document -> a Counter of its words, as BERT's WordPiece pre-tokeniser
    splits them; a copy other than the one in ``chosen`` (doc id -> (source, record id) of the
    copy to count, for ids with several copies) gives nothing, nor does a text in ``removed``
    (doc id -> NearDuplicate, the sampled near-duplicates). Combiner lifting sums the Counters
    within each bundle, so only per-bundle sums cross the shuffle."""

    def __init__(self, casing: CasingDecision):
        self.casing = casing

    def setup(self):
        self._counter = WordCounter(self.casing.lowercase, self.casing.strip_accents, self.casing.keep_letters)

    def process(self, doc: Document, chosen: dict, removed: dict):
        if doc.doc_id in removed:
            return
        if chosen.get(doc.doc_id, (doc.source, doc.record_id)) == (doc.source, doc.record_id):
            yield self._counter.count(doc.sentences)


class _FirstCopy(beam.CombineFn):
    """(source, record id) of one document id's copies -> (copies, the smallest (source, record id))."""

    def create_accumulator(self):
        return 0, None

    def add_input(self, acc, copy):
        n, first = acc
        return n + 1, copy if first is None or copy < first else first

    def merge_accumulators(self, accs):
        n, first = 0, None
        for m, f in accs:
            n += m
            if f is not None and (first is None or f < first):
                first = f
        return n, first

    def extract_output(self, acc):
        return acc


class TrainVocabulary(beam.PTransform):
    """Chunks of Document -> one VocabInfo, trained deterministically on the word counts of at
    most ``train_sample_documents`` training documents (``held_out``: the singleton HeldOutRule),
    chosen by a hash of their id (``doc_counts``: {split: documents}, gives the sampling
    fraction). Counting runs on every
    worker; only the summed counts meet on one worker for the merges. With ``drop_duplicates``
    an exact duplicate is counted once, as the shards will hold it once: the sampled ids with
    several copies, and the copy to count, are found first (an id and a record name per sampled
    document cross the shuffle, not its counts); two copies with the same source and record
    id as well as the same text are indistinguishable and both counted. A near-duplicate
    (``near_duplicates``: NearDuplicate of each text ``dedup=minhash`` removes, or None) is not
    counted at all, as the shards will not hold it: the sampled ones reach every worker, so what
    a worker holds is bounded by the sample, as for the copies."""

    def __init__(
        self,
        cfg: TokenizerConfig,
        spill: Spill,
        doc_counts,
        held_out,
        drop_duplicates: bool = True,
        near_duplicates=None,
    ):
        super().__init__()
        self.cfg, self.spill, self.doc_counts, self.drop_duplicates = cfg, spill, doc_counts, drop_duplicates
        self.held_out, self.near_duplicates = held_out, near_duplicates

    def expand(self, doc_chunks):
        cfg = self.cfg
        casing = training_casing(cfg.lowercase, cfg.strip_accents)
        fraction = self.doc_counts | "SampleFraction" >> beam.Map(
            lambda n: min(1.0, cfg.train_sample_documents / max(n.get("train", 0), 1))
        )

        def sampled(label: str):
            # Read afresh for each use: a PCollection used twice, once through a side input of
            # its own descendants, would be held whole by the runner.
            return (
                doc_chunks
                | f"{label}Documents" >> ReadDocuments(self.spill, self.held_out)
                | f"{label}Sample"
                >> beam.FlatMap(
                    lambda sd, f: [sd[1]] if sd[0] == "train" and unit_interval("vocab", sd[1].doc_id) < f else [],
                    f=beam.pvalue.AsSingleton(fraction),
                )
            )

        if self.drop_duplicates:
            chosen = (
                sampled("Copies")
                | "CopyNames" >> beam.Map(lambda d: (d.doc_id, (d.source, d.record_id)))
                | "FirstCopy" >> beam.CombinePerKey(_FirstCopy())
                | "SeveralCopies" >> beam.FlatMap(lambda kv: [(kv[0], kv[1][1])] if kv[1][0] > 1 else [])
                | "CopiesToDict" >> beam.combiners.ToDict()
            )
        else:
            chosen = doc_chunks.pipeline | "NoCopies" >> beam.Create([{}])
        if self.near_duplicates is not None:
            removed = (
                self.near_duplicates
                | "SampledNearDuplicates"
                >> beam.FlatMap(
                    lambda d, f: [(d.doc_id, d)] if unit_interval("vocab", d.doc_id) < f else [],
                    f=beam.pvalue.AsSingleton(fraction),
                )
                | "NearDuplicatesToDict" >> beam.combiners.ToDict()
            )
        else:
            removed = doc_chunks.pipeline | "NoNearDuplicates" >> beam.Create([{}])
        return (
            sampled("Count")
            | "CountWords"
            >> beam.ParDo(
                _CountWords(casing),
                chosen=beam.pvalue.AsSingleton(chosen),
                removed=beam.pvalue.AsSingleton(removed),
            )
            | "SumCounts" >> beam.CombineGlobally(SumCounts())
            | "Train"
            >> beam.Map(
                lambda counts: make_vocab_info(
                    train_wordpiece(counts, cfg.vocab_size, SPECIAL_TOKENS, cfg.min_frequency, cfg.limit_alphabet),
                    casing,
                )
            )
        )


# --- tokenising ------------------------------------------------------------------------------


class _Tokenize(CountingDoFn):
    """(split, Document) -> (split, (TokenizedDocument, DocumentRecord)); the record is the
    document's provenance, written to the documents table if the document is kept.

    The words that became [UNK] (as written in the text, found through the encodings' offsets)
    are counted per bundle and leave on ``unknown_words`` as (word, count): only those words, so
    a healthy job sends almost nothing. Copies of a document are counted here too (duplicates are
    dropped later); the exact [UNK] counts per split are taken where tokens are counted.

    How well the vocabulary fits is counted per split over the words with letters (as BERT's
    pre-tokeniser splits them): ``words``, their ``word_pieces``, and ``single_char_words``, those
    of two or more characters split into single characters; the latter leave on ``split_words``
    as ((word as written, its pieces), count), the most frequent few of each bundle. What accent
    stripping changed is counted as ``accents_stripped/<from>-><to>`` (``pipeline.accents``)."""

    def setup(self):
        # One thread per worker: Beam already runs one worker per core.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._tokenizer, self._sha, self._unk = None, None, None

    def start_bundle(self):
        super().start_bundle()
        self._unknown: Counter = Counter()
        self._split_words: Counter = Counter()

    def _count_fit(self, split: str, sentences: list[str], encodings) -> None:
        """Words with a letter, their pieces, and those split into single characters, of one
        document (counted once a document: a counter update costs more than a sentence's words)."""
        words = word_pieces = single = 0
        for sentence, e in zip(sentences, encodings):
            for text, pieces in letter_words(sentence, e):
                words += 1
                word_pieces += len(pieces)
                if split_into_characters(pieces):
                    single += 1
                    key = (text, " ".join(pieces))
                    if key in self._split_words or len(self._split_words) < MAX_SPLIT_WORDS_HELD:
                        self._split_words[key] += 1
        self.count(f"words/{split}", words)
        self.count(f"word_pieces/{split}", word_pieces)
        self.count(f"single_char_words/{split}", single)

    def process(self, element, vocab: VocabInfo):
        casing = vocab.casing
        if self._sha != vocab.sha256:
            self._tokenizer = build_tokenizer(vocab.tokens, casing.lowercase, casing.strip_accents, casing.keep_letters)
            self._sha, self._unk = vocab.sha256, vocab.tokens.index(UNK)
        split, doc = element
        sentences = list(doc.sentences)
        encodings = self._tokenizer.encode_batch(sentences, add_special_tokens=False)
        stripped: Counter = Counter()
        for sentence, e in zip(sentences, encodings):
            if self._unk in e.ids:
                self._unknown.update(sentence[a:b] for i, (a, b) in zip(e.ids, e.offsets) if i == self._unk)
            if casing.strip_accents:
                stripped.update(stripped_characters(sentence, casing.keep_letters, casing.lowercase))
        self._count_fit(split, sentences, encodings)
        for change, n in stripped.items():
            self.count(f"accents_stripped/{change}", n)
        tdoc = TokenizedDocument.from_sentences(doc.doc_id, [e.ids for e in encodings])
        yield (
            split,
            (
                tdoc,
                DocumentRecord(
                    doc.doc_id,
                    split,
                    doc.source,
                    doc.record_id,
                    doc.title,
                    tdoc.num_sentences,
                    len(tdoc.ids),
                    format=doc.format,
                    position=doc.position,
                    language=doc.language,
                    language_score=doc.language_score,
                ),
            ),
        )

    def finish_bundle(self):
        for word_count in self._unknown.items():
            yield beam.pvalue.TaggedOutput(
                UNKNOWN_WORDS_TAG, WindowedValue(word_count, MIN_TIMESTAMP, [GlobalWindow()])
            )
        for word_count in self._split_words.most_common(SPLIT_WORDS_PER_BUNDLE):
            yield beam.pvalue.TaggedOutput(SPLIT_WORDS_TAG, WindowedValue(word_count, MIN_TIMESTAMP, [GlobalWindow()]))
        yield from super().finish_bundle()


@dataclass(frozen=True)
class TokenizedDocuments:
    """What ``TokenizeDocuments`` gives."""

    documents: beam.PCollection  # (split, (TokenizedDocument, DocumentRecord))
    unknown_words: beam.PCollection  # one list of the TOP_UNKNOWN_WORDS (word, count) most often [UNK],
    #                                  sorted by count (descending) then word
    split_words: beam.PCollection  # one list of TOP_UNKNOWN_WORDS ((word, pieces), count) split into
    #                                single characters, most frequent first
    stats: beam.PCollection  # dict of per-bundle counters: vocabulary fit, accents stripped


class TokenizeDocuments(beam.PTransform):
    """Chunks of Document -> TokenizedDocuments, with ``vocab`` (a singleton VocabInfo) and
    ``held_out`` (a singleton HeldOutRule)."""

    def __init__(self, vocab, spill: Spill, held_out):
        super().__init__()
        self.vocab, self.spill, self.held_out = vocab, spill, held_out

    def expand(self, doc_chunks) -> TokenizedDocuments:
        tokenize = beam.ParDo(_Tokenize(), vocab=beam.pvalue.AsSingleton(self.vocab))
        out = (
            doc_chunks
            | "Documents" >> ReadDocuments(self.spill, self.held_out)
            | "WordPiece" >> tokenize.with_outputs(UNKNOWN_WORDS_TAG, SPLIT_WORDS_TAG, STATS_TAG, main="tokenized")
        )
        return TokenizedDocuments(
            documents=out.tokenized,
            unknown_words=out[UNKNOWN_WORDS_TAG] | "UnknownWords" >> _MostFrequent(),
            split_words=out[SPLIT_WORDS_TAG] | "SplitWords" >> _MostFrequent(),
            stats=out[STATS_TAG],
        )


class _MostFrequent(beam.PTransform):
    """(key, count) -> one list of the TOP_UNKNOWN_WORDS keys with the largest summed counts,
    sorted by count (descending) then key."""

    def expand(self, key_counts):
        by_count_then_key = lambda kc: (kc[1], kc[0])  # noqa: E731
        return (
            key_counts
            | "Sum" >> beam.CombinePerKey(sum)
            | "Top" >> beam.combiners.Top.Of(TOP_UNKNOWN_WORDS, key=by_count_then_key)
            | "Sort" >> beam.Map(lambda top: sorted(top, key=lambda kc: (-kc[1], kc[0])))
        )


# --- examples ---------------------------------------------------------------------------------


def pass_groups(num_pools: int, passes: int, min_units: int) -> int:
    """How many units a pool's passes are split into: enough for ``min_units`` units in all."""
    return max(1, min(passes, -(-min_units // max(num_pools, 1))))


class _ExamplesOfPoolPasses(CountingDoFn):
    """((split, pool, group, groups), [SpilledChunk of (TokenizedDocument, DocumentRecord)...])
    -> ((split, shard), RecordBatch or SpilledBatch).

    A pool is the unit of NSP negative sampling: B of a random pair comes from another document
    of the same pool. A unit runs the passes ``p`` of its pool with ``p % groups == group``.
    Members are sorted by (id, source, record id), so the pool's content and order, and hence
    every draw, do not depend on arrival order; each (document, pass) is seeded on its own, so
    how passes are grouped into units does not change a byte. Examples leave as one Arrow
    record batch per shard (not one element per example), which keeps Beam's per-element cost
    off the hot path; the batch goes to a file in ``spill.directory`` and only a SpilledBatch
    reference leaves (see ``pipeline.shard_sink.SpilledBatch``).

    Copies of a text share its id, hence its pool: with ``drop_duplicates`` the first by
    (source, record id) is kept and the others rejected. A text removed as a near-duplicate
    reaches each unit of its pool as a NearDuplicate beside the chunks: its first copy is
    rejected as ``near_duplicate``, its other copies as duplicates. Group 0 of each pool reports what
    concerns documents (duplicates, the ``documents`` table, document counts), so a pool split
    over several units reports it once. Documents that give no example in a pass go to the
    ``empty`` output, once per pass."""

    def __init__(
        self,
        instances: InstancesConfig,
        masking: MaskingConfig,
        seed: int,
        schema,
        passes: int,
        drop_duplicates: bool,
        spill: Spill,
    ):
        self.params = InstanceParams(instances.max_seq_length, instances.short_seq_prob, instances.objective)
        self.masking = masking.masking_params(instances.max_seq_length) if masking.mode == "static" else None
        self.seed, self.schema, self.passes, self.drop_duplicates = seed, schema, passes, drop_duplicates
        self.spill = spill

    def setup(self):
        self._vocab, self._sha, self._unk = None, None, None
        storage.configure_filesystems(self.spill.storage_cfg)  # spill files may be on an object store

    def process(self, element, vocab: VocabInfo, shards: dict):
        if self._sha != vocab.sha256:
            self._vocab, self._sha = masking_vocabulary(vocab.tokens), vocab.sha256
            self._unk = vocab.tokens.index(UNK)
        (split, _, group, groups), items = element
        near = {item.doc_id: item for item in items if isinstance(item, NearDuplicate)}
        chunks = [item for item in items if isinstance(item, SpilledChunk)]
        members = sorted(read_all(chunks), key=lambda m: (m[0].doc_id, m[1].source, m[1].record_id))
        kept: list = []
        first = None  # the record of the current id's first copy
        for doc, record in members:
            if self.drop_duplicates and first is not None and first.doc_id == doc.doc_id:
                if group == 0:
                    yield _reject(self, _rejection(record, RejectReason.DUPLICATE, _same_text(first)))
                continue
            first = record
            if doc.doc_id in near:
                if group == 0:
                    yield _reject(self, _rejection(record, RejectReason.NEAR_DUPLICATE, near[doc.doc_id].detail()))
                continue
            kept.append((doc, record))
        if group == 0:
            for doc, record in kept:
                self.count(f"documents_kept/{split}")
                self.count(f"sentences/{split}", record.sentences)
                self.count(f"tokens/{split}", record.tokens)
                self.count(f"unk_tokens/{split}", int(np.count_nonzero(doc.ids == self._unk)))
                yield beam.pvalue.TaggedOutput(DOCUMENTS_TAG, record)
        pool = [doc for doc, _ in kept]
        parts = []
        for pass_index in range(group, self.passes, groups):
            for i, (_doc, record) in enumerate(kept):
                cols = examples_for_document(pool, i, pass_index, self.seed, self.params, self.masking, self._vocab)
                if not len(cols):
                    yield beam.pvalue.TaggedOutput(
                        EMPTY_TAG,
                        ((record.source, record.record_id, record.tokens, record.sentences, record.position), 1),
                    )
                parts.append(cols)
        cols = contract.ExampleColumns.concat(parts)
        if not len(cols):
            return
        self._count_examples(split, cols)
        batch = contract.to_record_batch(cols, self.schema)
        shard = (unit_interval_of(cols.example_id, self.seed, "shard") * shards[split]).astype(np.int64)
        for s in np.unique(shard):
            part = batch.take(pa.array(np.flatnonzero(shard == s)))
            yield (split, int(s)), SpilledBatch.write(self.spill.directory, split, int(s), part)

    def _count_examples(self, split, cols):
        self.count(f"examples/{split}", len(cols))
        self.count(f"example_tokens/{split}", len(cols.input_ids))
        self.count(f"masked_positions/{split}", len(cols.masked_lm_positions))
        self.count(f"sentence_pair_negatives/{split}", int(np.sum(cols.next_sentence_label == 1)))


def _rejection(record: DocumentRecord, reason: RejectReason, detail: str) -> Rejection:
    return Rejection(record.source, record.record_id, reason, detail, position=record.position)


def _same_text(first: DocumentRecord) -> str:
    return f"same text as {first.source} record {first.record_id}"


@dataclass(frozen=True)
class CreatedExamples:
    """What ``CreateExamples`` gives."""

    examples: beam.PCollection  # ((split, shard), SpilledBatch): one shard's examples of one unit
    shard_counts: beam.PCollection  # one {split: shards}
    documents: beam.PCollection  # DocumentRecord of every kept document
    rejects: beam.PCollection  # Rejection: duplicates, near-duplicates, documents with no example
    stats: beam.PCollection  # dict of per-bundle counters (``pipeline.stats``)


def pool_of(doc_id: int, seed: int, pools: int) -> int:
    """The pool of a document id among its split's ``pools``."""
    return int(unit_interval("pool", seed, doc_id) * pools)


class _NearDuplicatesToUnits(beam.DoFn):
    """NearDuplicate -> (unit, NearDuplicate) for every unit of its text's pool (under ``rule``, the
    singleton HeldOutRule, and ``pools``: {split: pools}), as ``_SpillToUnits`` sends the text."""

    def __init__(self, seed: int, passes: int, min_units: int):
        self.seed, self.passes, self.min_units = seed, passes, min_units

    def process(self, removed: NearDuplicate, rule, pools: dict):
        split = rule.split_of(removed.doc_id)
        pool = pool_of(removed.doc_id, self.seed, pools[split])
        groups = pass_groups(pools[split], self.passes, self.min_units)
        for g in range(groups):
            yield (split, pool, g, groups), removed


class _SpillToUnits(beam.DoFn):
    """(split, (TokenizedDocument, DocumentRecord)) -> (unit, SpilledChunk): each document goes to
    its pool, hashed by (seed, doc id) into ``pools[split]`` pools. With few pools (a small
    corpus) a pool's passes are split over several units, so every worker gets work; the
    pool's chunk is written once and named by each of its units."""

    def __init__(self, spill: Spill, seed: int, passes: int, min_units: int):
        self.spill, self.seed, self.passes, self.min_units = spill, seed, passes, min_units

    def setup(self):
        storage.configure_filesystems(self.spill.storage_cfg)

    def start_bundle(self):
        self._writer, self._pools = KeyedChunkWriter(self.spill, "pools"), None

    def _units(self, flushed):
        for (split, pool), chunk in flushed:
            groups = pass_groups(self._pools[split], self.passes, self.min_units)
            for g in range(groups):
                yield (split, pool, g, groups), chunk

    def process(self, element, pools: dict):
        self._pools = pools
        split, member = element
        pool = pool_of(member[0].doc_id, self.seed, pools[split])
        yield from self._units(self._writer.add((split, pool), element[1]))

    def finish_bundle(self):
        for unit in self._units(self._writer.flush()):
            yield in_window(unit)


class CreateExamples(beam.PTransform):
    """(split, (TokenizedDocument, DocumentRecord)) -> CreatedExamples, documents grouped into pools.

    How documents are grouped: each split's documents (``doc_counts``: {split: documents}) are
    hashed by (seed, doc id) into ``round(n / pool_size)`` pools of about ``pool_size`` documents.
    A worker holds one pool at a time, so memory is bounded by the pool size, not the corpus; a
    pool's documents reach it as a few chunk files (``pipeline.spill``), not through the
    runner. Negatives are drawn from a pool of thousands of unrelated documents, which matches
    the original's corpus-wide draw in distribution (and never from the same document, unlike
    the original's fallback).

    Shards per split follow the split's tokens x passes (``output.target_shard_tokens``) unless
    ``output.num_shards`` is set (``CreatedExamples.shard_counts``). ``spill``: where the pools'
    chunks and the example batches go. ``near_duplicates`` (NearDuplicate of each text to remove,
    or None) go to their texts' pools under ``held_out`` (the singleton HeldOutRule): a pool holds
    what it removes, never the corpus' list."""

    def __init__(
        self,
        instances: InstancesConfig,
        masking: MaskingConfig,
        output: OutputConfig,
        seed: int,
        vocab,
        schema,
        doc_counts,
        spill: Spill,
        drop_duplicates: bool = True,
        near_duplicates=None,
        held_out=None,
    ):
        super().__init__()
        self.instances, self.masking, self.output, self.seed = instances, masking, output, seed
        self.vocab, self.schema, self.drop_duplicates, self.spill = vocab, schema, drop_duplicates, spill
        self.doc_counts = doc_counts
        if (near_duplicates is None) != (held_out is None):
            raise ValueError("CreateExamples: near_duplicates needs held_out (the rule that places them in pools)")
        self.near_duplicates, self.held_out = near_duplicates, held_out

    def expand(self, tokenized) -> CreatedExamples:
        pool_size, seed, out = self.instances.pool_size, self.seed, self.output
        passes = self.masking.dupe_factor
        pools_per_split = self.doc_counts | "PoolCount" >> beam.Map(
            lambda counts: {split: max(1, round(n / pool_size)) for split, n in counts.items()}
        )
        shard_counts = (
            tokenized
            | "DocTokens" >> beam.Map(lambda sm: (sm[0], sm[1][1].tokens))
            | "SumTokens" >> beam.CombinePerKey(sum)
            | "ShardCount"
            >> beam.Map(lambda kv: (kv[0], num_shards_for(kv[1] * passes, out.target_shard_tokens, out.num_shards)))
            | "ShardsToDict" >> beam.combiners.ToDict()
        )

        def no_example_in_any_pass(element):
            (source, record_id, tokens, sentences, position), n_empty = element
            if n_empty == passes:
                yield Rejection(
                    source,
                    record_id,
                    RejectReason.NO_INSTANCES,
                    f"{tokens} tokens in {sentences} sentences gave no example in {passes} passes",
                    position=position,
                )

        units = tokenized | "AssignUnits" >> beam.ParDo(
            _SpillToUnits(self.spill, seed, passes, self.instances.min_work_units),
            pools=beam.pvalue.AsSingleton(pools_per_split),
        )
        if self.near_duplicates is not None:
            removed = self.near_duplicates | "NearDuplicatesToUnits" >> beam.ParDo(
                _NearDuplicatesToUnits(seed, passes, self.instances.min_work_units),
                rule=beam.pvalue.AsSingleton(self.held_out),
                pools=beam.pvalue.AsSingleton(pools_per_split),
            )
            units = (units, removed) | "UnitsAndNearDuplicates" >> beam.Flatten()
        made = (
            units
            | "GroupUnits" >> beam.GroupByKey()
            | "Examples"
            >> beam.ParDo(
                _ExamplesOfPoolPasses(
                    self.instances, self.masking, seed, self.schema, passes, self.drop_duplicates, self.spill
                ),
                vocab=beam.pvalue.AsSingleton(self.vocab),
                shards=beam.pvalue.AsSingleton(shard_counts),
            ).with_outputs(DOCUMENTS_TAG, EMPTY_TAG, REJECTS_TAG, STATS_TAG, main="examples")
        )
        no_example = (
            made[EMPTY_TAG]
            | "EmptyPasses" >> beam.CombinePerKey(sum)
            | "NoExample" >> beam.FlatMap(no_example_in_any_pass)
        )
        rejects = (made[REJECTS_TAG], no_example) | "ExampleRejects" >> beam.Flatten()
        return CreatedExamples(
            examples=made.examples,
            shard_counts=shard_counts,
            documents=made[DOCUMENTS_TAG],
            rejects=rejects,
            stats=made[STATS_TAG],
        )
