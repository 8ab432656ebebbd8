"""Each composite transform on its own, through Beam's TestPipeline and assert_that."""

import dataclasses
import json
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import contract
from pipeline.config import CleaningConfig, InstancesConfig, MaskingConfig, OutputConfig, SourceConfig, TokenizerConfig
from pipeline.documents import Document
from pipeline.formats import DocumentRecord, ExampleFormat
from pipeline.heldout import HeldOutRule, split_of
from pipeline.instances import InstanceParams, TokenizedDocument, examples_for_document
from pipeline.masking import MaskingParams
from pipeline.records import RawDocument, SourceFormat
from pipeline.seeding import stable_id
from pipeline.shard_sink import JsonLinesFormat, ShardRecords, WriteShards, commit, complete_shards
from pipeline.spill import Spill, SpillChunks
from pipeline.stats import SumCounts
from pipeline.tokenization import build_tokenizer, encode_sentences, masking_vocabulary, train_vocabulary
from pipeline.transforms import (
    CreatedExamples,
    CreateExamples,
    PreparedDocuments,
    PrepareDocuments,
    ReadDocuments,
    ReadSources,
    SourceDocuments,
    TokenizedDocuments,
    TokenizeDocuments,
    TrainVocabulary,
    make_vocab_info,
)

TEXTS = [
    f"Document number {i} talks about topic {i % 7}. It has a second sentence! And a third one here? "
    f"Words like running, runner and runs repeat in document {i}."
    for i in range(40)
]


def beam_pipeline():
    return BeamTestPipeline(runner=fn_runner.FnApiRunner())


def spill_at(tmp_path, chunk_bytes=200, pool_chunk_bytes=500):
    """Small chunks, so every transform's input and groups span several chunk files."""
    return Spill(str(tmp_path / "spill"), chunk_bytes, pool_chunk_bytes)


def chunked(p, spill, docs, label="Docs"):
    """Training documents as the job hands them on: chunk references, the held-out rule (no eval
    split) and the count per split."""
    chunks = p | f"{label}Create" >> beam.Create(docs) | f"{label}Spill" >> SpillChunks(spill, "documents")
    rule = p | f"{label}Rule" >> beam.Create([HeldOutRule(0.0)])
    return chunks, rule, p | f"{label}Count" >> beam.Create([{"train": len(docs)}])


def doc(i, text=None):
    from pipeline.seeding import stable_id

    text = text or TEXTS[i]
    return Document(stable_id(text), "src.jsonl", str(i), f"t{i}", tuple(s + "." for s in text.split(". ")), len(text))


def test_read_sources(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(TEXTS[:3])) + "\n{bad\n")
    with beam_pipeline() as p:
        read = p | beam.Create([str(good)]) | ReadSources(SourceConfig(), spill_at(tmp_path))
        assert isinstance(read, SourceDocuments)
        assert_that(read.documents | beam.Map(lambda d: d.record_id), equal_to(["0", "1", "2"]), label="docs")
        assert_that(read.rejects | beam.Map(lambda r: r.reason.value), equal_to(["malformed_json"]), label="rejects")


def test_prepare_documents_drops_short_documents_and_keeps_copies_for_the_pools(tmp_path):
    raws = [RawDocument("f.jsonl", str(i), "", t, SourceFormat.JSON_LINES) for i, t in enumerate(TEXTS[:5])]
    raws += [
        RawDocument("f.jsonl", "9", "", TEXTS[0], SourceFormat.JSON_LINES),
        RawDocument("f.jsonl", "10", "", "Tiny.", SourceFormat.JSON_LINES),
    ]
    spill = spill_at(tmp_path)
    with beam_pipeline() as p:
        prepared = p | beam.Create(raws) | PrepareDocuments(CleaningConfig(min_document_chars=50), 0.0, spill)
        # The copy ("9") shares the id of "0"; CreateExamples drops it in their pool.
        assert_that(
            prepared.chunks | ReadDocuments(spill, prepared.held_out) | beam.Map(lambda sd: (sd[0], sd[1].record_id)),
            equal_to([("train", str(i)) for i in (0, 1, 2, 3, 4, 9)]),
            label="kept",
        )
        assert_that(
            prepared.rejects | beam.Map(lambda r: (r.record_id, r.reason.value)),
            equal_to([("10", "too_short")]),
            label="rejected",
        )


def test_prepared_documents_name_every_output_of_the_stage(tmp_path):
    """PreparedDocuments carries the stage's PCollections by name: the documents (as chunk
    files, more than one here), their count per split, the rejects and the counters."""
    raws = [RawDocument("f.jsonl", str(i), "", t, SourceFormat.JSON_LINES) for i, t in enumerate(TEXTS[:8])]
    raws.append(RawDocument("f.jsonl", "tiny", "", "Tiny.", SourceFormat.JSON_LINES))
    spill = spill_at(tmp_path)
    with beam_pipeline() as p:
        prepared = p | beam.Create(raws) | PrepareDocuments(CleaningConfig(min_document_chars=50), 0.5, spill)
        assert isinstance(prepared, PreparedDocuments)
        assert all(isinstance(getattr(prepared, f.name), beam.PCollection) for f in dataclasses.fields(prepared))
        with pytest.raises(dataclasses.FrozenInstanceError):
            prepared.rejects = None
        splits = (
            prepared.chunks | ReadDocuments(spill, prepared.held_out) | beam.Map(lambda sd: (sd[1].record_id, sd[0]))
        )
        expected_splits = [(str(i), split_of(stable_id(t), 0.5)) for i, t in enumerate(TEXTS[:8])]
        assert_that(splits, equal_to(expected_splits), label="documents")
        assert_that(
            prepared.chunks | "ChunkCount" >> beam.combiners.Count.Globally() | beam.Map(lambda n: n > 1),
            equal_to([True]),
            label="several chunks",
        )
        counts = Counter(split for _, split in expected_splits)
        assert_that(prepared.counts, equal_to([dict(counts)]), label="counts")
        assert_that(prepared.rejects | beam.Map(lambda r: r.record_id), equal_to(["tiny"]), label="rejects")
        assert_that(
            prepared.stats
            | "Sum" >> beam.CombineGlobally(SumCounts())
            | beam.Map(lambda s: s.get("rejected/too_short")),
            equal_to([1]),
            label="stats",
        )


def test_train_vocabulary_equals_the_library_function_and_counts_a_copy_once(tmp_path):
    docs = [doc(i) for i in range(40)]
    cfg = TokenizerConfig(vocab_size=200, min_frequency=1)
    expected = train_vocabulary([" ".join(d.sentences) for d in docs], 200, True, 1, cfg.limit_alphabet)
    copies = [Document(d.doc_id, "other.jsonl", d.record_id, d.title, d.sentences, d.chars) for d in docs[:30]]
    with beam_pipeline() as p:
        spill = spill_at(tmp_path)
        chunks, rule, counts = chunked(p, spill, docs + copies)
        vocab = chunks | TrainVocabulary(cfg, spill, counts, rule)
        assert_that(vocab | beam.Map(lambda v: list(v.tokens)), equal_to([expected]))


def small_vocab():
    return make_vocab_info(train_vocabulary(TEXTS, 300, True, 1, 200), True)


def test_tokenize_documents(tmp_path):
    vocab = small_vocab()
    docs = [doc(i) for i in range(6)]
    tok = build_tokenizer(vocab.tokens, True)
    expected = [(d.doc_id, [t for s in encode_sentences(tok, d.sentences) for t in s]) for d in docs]
    with beam_pipeline() as p:
        spill = spill_at(tmp_path)
        chunks, rule, _ = chunked(p, spill, docs)
        out = chunks | TokenizeDocuments(p | "V" >> beam.Create([vocab]), spill, rule)
        assert isinstance(out, TokenizedDocuments)
        assert_that(
            out.documents | beam.Map(lambda sm: (sm[1][0].doc_id, sm[1][0].ids.tolist())),
            equal_to(expected),
            label="ids",
        )
        assert_that(
            out.documents | beam.Map(lambda sm: (sm[1][1].record_id, sm[1][1].tokens)),
            equal_to([(d.record_id, len(e[1])) for d, e in zip(docs, expected)]),
            label="provenance",
        )
        assert_that(out.unknown_words, equal_to([[]]), label="no unknown words")


def test_tokenize_documents_names_the_words_that_became_unknown(tmp_path):
    vocab = small_vocab()
    odd = Document(1, "src.jsonl", "odd", "", ("Document \u2603 talks about \u2603 and \u2602.",), 40)
    with beam_pipeline() as p:
        spill = spill_at(tmp_path)
        chunks, rule, _ = chunked(p, spill, [odd])
        out = chunks | TokenizeDocuments(p | "V" >> beam.Create([vocab]), spill, rule)
        assert_that(out.unknown_words, equal_to([[("\u2603", 2), ("\u2602", 1)]]))


def test_tokenize_documents_counts_the_fit_and_the_words_split_into_letters(tmp_path):
    from cyrillic_prose import BULGARIAN
    from paths import real_uncased_vocab
    from pipeline.tokenization import decide_casing

    tokens = real_uncased_vocab()
    vocab = make_vocab_info(tokens, decide_casing(tokens))
    docs = [doc(i, text) for i, text in enumerate(BULGARIAN)]
    with beam_pipeline() as p:
        spill = spill_at(tmp_path)
        chunks, rule, _ = chunked(p, spill, docs)
        out = chunks | TokenizeDocuments(p | "V" >> beam.Create([vocab]), spill, rule)
        totals = out.stats | beam.CombineGlobally(SumCounts())

        def fit(counts):
            words, single = counts["words/train"], counts["single_char_words/train"]
            assert words > 250 and 4 < counts["word_pieces/train"] / words < 5 and 0.6 < single / words < 0.75
            assert counts["accents_stripped/й->и"] == 13  # bert-base-uncased strips every mark
            return True

        def examples(top):
            assert len(top) == 10 and all(n >= top[-1][1] for _, n in top)
            assert all(" ##" in pieces and len(word) >= 2 for (word, pieces), _ in top)
            return True

        assert_that(totals | beam.Map(fit), equal_to([True]), label="fit")
        assert_that(out.split_words | beam.Map(examples), equal_to([True]), label="examples")


def examples_of(made):
    """((split, shard), SpilledBatch) -> ((split, shard), RecordBatch)."""
    return made.examples | "Unspill" >> beam.Map(lambda kv: (kv[0], kv[1].read()))


def test_create_examples_matches_the_algorithm_per_pool(tmp_path):
    vocab = small_vocab()
    tok = build_tokenizer(vocab.tokens, True)
    docs = [
        TokenizedDocument.from_sentences(d.doc_id, encode_sentences(tok, d.sentences))
        for d in (doc(i) for i in range(40))
    ]
    inst, mask = InstancesConfig(max_seq_length=32, pool_size=1000), MaskingConfig(dupe_factor=2)
    schema = contract.example_schema(len(vocab.tokens), "nsp", "static")
    # One pool (40 < pool_size): the expected examples are the algorithm's over the sorted pool.
    pool = sorted(docs, key=lambda d: d.doc_id)
    expected = sorted(
        i
        for ps in range(2)
        for d in range(len(pool))
        for i in examples_for_document(
            pool, d, ps, 3, InstanceParams(32, 0.1, "nsp"), MaskingParams(), masking_vocabulary(vocab.tokens)
        ).example_id
    )
    with beam_pipeline() as p:
        counts = p | "Counts" >> beam.Create([{"train": len(docs)}])
        create = CreateExamples(
            inst,
            mask,
            OutputConfig(num_shards=3),
            3,
            p | "V" >> beam.Create([vocab]),
            schema,
            counts,
            spill_at(tmp_path),
        )
        made = p | beam.Create([("train", member(d)) for d in docs]) | create
        assert isinstance(made, CreatedExamples)
        assert_that(made.shard_counts, equal_to([{"train": 3}]), label="shard counts")
        ids = examples_of(made) | beam.FlatMap(
            lambda kv: [(kv[0][1], i) for i in kv[1].column(contract.EXAMPLE_ID).to_pylist()]
        )
        assert_that(ids | "Ids" >> beam.Map(lambda si: si[1]), equal_to(expected), label="same examples")
        assert_that(
            ids | "Shards" >> beam.Map(lambda si: si[0]) | beam.Distinct(),
            equal_to([0, 1, 2]),
            label="into every shard",
        )


def member(d: TokenizedDocument, source="s.jsonl", record_id=None):
    record_id = str(d.doc_id) if record_id is None else record_id
    return d, DocumentRecord(d.doc_id, "train", source, record_id, "", d.num_sentences, len(d.ids))


def test_create_examples_drops_copies_in_their_pool_and_reports_each_document_once(tmp_path):
    vocab = small_vocab()
    tok = build_tokenizer(vocab.tokens, True)
    docs = [
        TokenizedDocument.from_sentences(d.doc_id, encode_sentences(tok, d.sentences))
        for d in (doc(i) for i in range(12))
    ]
    members = [member(d, "b.jsonl") for d in docs] + [member(d, "a.jsonl", "copy") for d in docs[:3]]
    # 3 pools x 5 groups: each pool's documents reach 5 units, yet are reported once.
    inst = InstancesConfig(max_seq_length=32, pool_size=4, min_work_units=15)
    mask = MaskingConfig(dupe_factor=5)
    schema = contract.example_schema(len(vocab.tokens), "nsp", "static")
    with beam_pipeline() as p:
        counts = p | "Counts" >> beam.Create([{"train": len(members)}])
        create = CreateExamples(
            inst,
            mask,
            OutputConfig(num_shards=2),
            3,
            p | "V" >> beam.Create([vocab]),
            schema,
            counts,
            spill_at(tmp_path),
        )
        made = p | beam.Create([("train", m) for m in members]) | create
        # The copy from a.jsonl sorts first, so it is kept and b.jsonl's record is the duplicate.
        assert_that(
            made.documents | beam.Map(lambda r: (r.source, r.doc_id)),
            equal_to([("a.jsonl", d.doc_id) for d in docs[:3]] + [("b.jsonl", d.doc_id) for d in docs[3:]]),
            label="documents",
        )
        assert_that(
            made.rejects | beam.Map(lambda r: (r.source, r.reason.value)),
            equal_to([("b.jsonl", "duplicate")] * 3),
            label="duplicates",
        )
        kept_ids = (
            examples_of(made) | beam.FlatMap(lambda kv: kv[1].column(contract.DOC_ID_A).to_pylist()) | beam.Distinct()
        )
        assert_that(kept_ids, equal_to([d.doc_id for d in docs]), label="every document gives examples")


def test_shard_records_and_write_shards_round_trip(tmp_path):
    records = [{"n": i} for i in range(50)]
    fmt = JsonLinesFormat()
    with beam_pipeline() as p:
        sharded = (
            p | beam.Create([("rejects", r) for r in records]) | ShardRecords(1, lambda r: r["n"], target_per_shard=20)
        )
        assert_that(sharded.shard_counts, equal_to([{"rejects": 3}]), label="shard counts")
        written = sharded.records | WriteShards(fmt, str(tmp_path / "tmp"), sharded.shard_counts)
        _ = (
            p
            | "Once" >> beam.Create([None])
            | beam.Map(
                lambda _, w: commit(
                    complete_shards(fmt, str(tmp_path / "tmp"), w, ["rejects"]), str(tmp_path / "out"), ".jsonl"
                ),
                w=beam.pvalue.AsList(written),
            )
        )
    files = sorted((tmp_path / "out" / "rejects").iterdir())
    assert [f.name for f in files] == [f"part-0000{i}-of-00003.jsonl" for i in range(3)]
    back = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(r["n"] for r in back) == list(range(50))


def test_example_format_orders_rows_whatever_the_chunk_order(tmp_path):
    schema = contract.example_schema(100, "nsp", "dynamic")
    exs = [contract.ExampleColumns.of_example(np.arange(5) + i, 3, i % 2, [], [], 1000 + i, i, i) for i in range(30)]
    a = contract.to_record_batch(contract.ExampleColumns.concat(exs[:10]), schema)
    b = contract.to_record_batch(contract.ExampleColumns.concat(exs[10:]), schema)
    fmt = ExampleFormat(schema, rows_per_batch=7, seed=5)
    assert fmt.encode([a, b])[0] == fmt.encode([b, a])[0]
    assert fmt.encode([a, b])[1:] == (30, 150)


def test_spilled_batches_encode_like_the_batches_themselves(tmp_path):
    from pipeline.shard_sink import SpilledBatch

    schema = contract.example_schema(100, "nsp", "static")
    exs = [
        contract.ExampleColumns.of_example(np.arange(6) + i, 3, i % 2, [1, 4], [7, 8], 50 + i, i, i + 1)
        for i in range(12)
    ]
    a = contract.to_record_batch(contract.ExampleColumns.concat(exs[:5]), schema)
    b = contract.to_record_batch(contract.ExampleColumns.concat(exs[5:]), schema)
    spilled = SpilledBatch.write(str(tmp_path / "spill"), "train", 3, a)
    assert spilled.rows == 5 and spilled.path.startswith(str(tmp_path / "spill")) and spilled.read().equals(a)
    fmt = ExampleFormat(schema, rows_per_batch=4, seed=5)
    assert fmt.encode([spilled, b]) == fmt.encode([a, b])
    # Each attempt writes its own file: a retried bundle never overwrites what another points to.
    assert SpilledBatch.write(str(tmp_path / "spill"), "train", 3, a).path != spilled.path


def test_pass_groups_split_few_pools_and_keep_many_whole():
    from pipeline.transforms import pass_groups

    assert pass_groups(1, 5, 16) == 5  # one pool: every pass its own unit
    assert pass_groups(4, 5, 16) == 4  # 4 pools x 4 groups = 16 units
    assert pass_groups(16, 5, 16) == 1 and pass_groups(5000, 5, 16) == 1  # each document sent once
    assert pass_groups(3, 1, 16) == 1  # never more groups than passes
