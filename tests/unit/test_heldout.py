"""The held-out split's rule (pipeline/heldout.py) and the masking cap's recipe default."""

import random
from collections import Counter

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import compose_pipeline_config
from pipeline.config import CleaningConfig, MaskingConfig
from pipeline.heldout import HeldOutRule, counts_under, decide_rule, split_hash, split_of, split_warnings
from pipeline.records import RawDocument, SourceFormat
from pipeline.seeding import stable_id
from pipeline.spill import Spill
from pipeline.transforms import PrepareDocuments, ReadDocuments


def facts(ids, fraction, least):
    """What DecideHeldOut combines: the count per split by the fraction, the lowest distinct
    hashes with their copies."""
    return Counter(split_of(i, fraction) for i in ids), sorted(Counter(map(split_hash, ids)).items())[:least]


def test_a_one_percent_split_of_a_small_corpus_takes_the_minimum_of_documents():
    ids = list(range(1000, 1097))  # the sample keeps 97 documents; 1% of them is one or none
    counts, lowest = facts(ids, 0.01, 10)
    assert counts["eval"] < 10
    rule = decide_rule(counts, lowest, 0.01, 10)
    splits = Counter(rule.split_of(i) for i in ids)
    assert splits == {"eval": 10, "train": 87} and not rule.note
    assert counts_under(rule, counts, lowest) == dict(splits)
    # The documents the fraction holds out stay held out: the minimum only adds to them.
    assert all(rule.split_of(i) == "eval" for i in ids if split_of(i, 0.01) == "eval")


def test_a_large_enough_fraction_is_left_alone():
    ids = random.Random(0).sample(range(10**9), 5000)
    counts, lowest = facts(ids, 0.05, 10)
    rule = decide_rule(counts, lowest, 0.05, 10)
    assert rule == HeldOutRule(0.05)
    assert counts_under(rule, counts, lowest) == dict(Counter(rule.split_of(i) for i in ids))


def test_a_corpus_too_small_for_a_split_gets_none_and_says_why():
    ids = [1, 2, 3, 4, 5]
    counts, lowest = facts(ids, 0.5, 10)
    rule = decide_rule(counts, lowest, 0.5, 10)
    assert {rule.split_of(i) for i in ids} == {"train"}
    assert "no eval split: 5 documents" in rule.note and "min_eval_documents=10" in rule.note
    assert counts_under(rule, counts, lowest) == {"train": 5}
    assert "eval_fraction=0" in decide_rule(counts, lowest, 0.0, 10).note
    # min_eval_documents=0: the fraction alone, as before the minimum existed.
    assert decide_rule(counts, lowest, 0.5, 0) == HeldOutRule(0.5)


def test_copies_count_as_documents_on_both_sides():
    ids = list(range(40)) + list(range(5))  # five texts twice (same id)
    counts, lowest = facts(ids, 0.0001, 10)
    rule = decide_rule(counts, lowest, 0.0001, 10)
    assert counts_under(rule, counts, lowest) == dict(Counter(rule.split_of(i) for i in ids))


def test_split_warnings_name_one_sided_labels_and_their_cause():
    stats = {
        "examples": {"eval": 99, "train": 1000},
        "sentence_pair_negatives": {"train": 510},
        "documents_kept": {"eval": 1, "train": 96},
    }
    (warning,) = split_warnings(stats, "nsp")
    assert warning.startswith("every eval example has NSP label 0") and "1 document(s)" in warning
    assert split_warnings(stats, "none") == []
    balanced = dict(stats, sentence_pair_negatives={"eval": 40, "train": 510})
    assert split_warnings(balanced, "nsp") == []
    assert split_warnings(balanced, "nsp", "no eval split: why") == ["no eval split: why"]
    assert "SOP label 0" in split_warnings(stats, "sop")[0]


def test_prepare_documents_holds_out_the_minimum(tmp_path):
    texts = [f"Document {i} is about topic {i % 7}. It says a second thing. And a third one here." for i in range(40)]
    raws = [RawDocument("f.jsonl", str(i), "", t, SourceFormat.JSON_LINES) for i, t in enumerate(texts)]
    ids = [stable_id(t) for t in texts]
    rule = decide_rule(*facts(ids, 0.01, 10), 0.01, 10)
    spill = Spill(str(tmp_path / "spill"), 200, 500)
    with BeamTestPipeline(runner=fn_runner.FnApiRunner()) as p:
        prepared = p | beam.Create(raws) | PrepareDocuments(CleaningConfig(min_document_chars=20), 0.01, spill, 10)
        splits = prepared.chunks | ReadDocuments(spill, prepared.held_out) | beam.Map(lambda sd: sd[0])
        assert_that(splits | beam.combiners.Count.PerElement(), equal_to([("eval", 10), ("train", 30)]), label="splits")
        assert_that(prepared.counts, equal_to([{"eval": 10, "train": 30}]), label="counts")
        assert_that(prepared.held_out, equal_to([rule]), label="rule")


def test_the_masking_cap_follows_the_length_unless_given():
    assert MaskingConfig().predictions_cap(128) == 20 and MaskingConfig().predictions_cap(512) == 80
    assert MaskingConfig(masked_lm_prob=0.3).predictions_cap(128) == 40
    assert MaskingConfig().cap_warning(512) == "" and MaskingConfig().cap_warning(128) == ""
    given = MaskingConfig(max_predictions_per_seq=20)
    assert given.predictions_cap(512) == 20
    assert "at most 3.9% of a full 512-token example" in given.cap_warning(512)


def test_the_phase2_preset_masks_as_the_recipe_does():
    cfg, _ = compose_pipeline_config(["output_dir=x", "instances=phase2"])
    assert cfg.instances.max_seq_length == 512
    assert cfg.masking.predictions_cap(cfg.instances.max_seq_length) == 80
    assert cfg.masking.cap_warning(cfg.instances.max_seq_length) == ""
