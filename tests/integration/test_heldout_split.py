"""The held-out split on real text: large enough to measure something, or said not to be
(pipeline/heldout.py; issue: a 1% split of the sample was one document with one NSP label)."""

import json

import numpy as np

from conftest import IN_MEMORY, run_job
from shards import read_split

SMALL = ("tokenizer.vocab_size=1000", "masking.dupe_factor=1", *IN_MEMORY)


def test_the_default_split_of_the_sample_holds_enough_documents_for_both_labels(loader_static_job):
    # loader_static_job: the sample with the default eval_fraction (1% of 97 documents).
    out, m = loader_static_job
    kept = m.statistics["documents_kept"]
    assert kept["eval"] >= m.config["instances"]["min_eval_documents"] == 10
    labels = np.array(read_split(out, "eval").column("next_sentence_label").to_pylist())
    assert 0.2 < labels.mean() < 0.8 and m.statistics["sentence_pair_negatives"]["eval"] == labels.sum()
    assert m.warnings == []


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), "utf-8")
    return path


def test_a_five_article_corpus_has_no_eval_split_and_says_why(sample_paragraphs, tmp_path, capsys):
    src = write_jsonl(tmp_path / "five.jsonl", sample_paragraphs[:5])
    m = run_job(tmp_path / "out", f"inputs=[{src}]", "instances.eval_fraction=0.2", *SMALL)
    assert "eval" not in m.statistics["documents_kept"] and not m.shards_of("eval")
    (note,) = m.warnings
    assert note.startswith("no eval split: 5 documents") and "min_eval_documents=10" in note
    assert f"warning           {note}" in capsys.readouterr().out


def test_one_document_gives_one_sided_labels_and_the_job_says_so(sample_paragraphs, tmp_path, capsys):
    longest = max(sample_paragraphs, key=len)
    src = write_jsonl(tmp_path / "one.jsonl", [longest])
    m = run_job(tmp_path / "out", f"inputs=[{src}]", *SMALL)
    labels = read_split(tmp_path / "out", "train").column("next_sentence_label").to_pylist()
    assert labels and set(labels) == {0}
    assert any(w.startswith("every train example has NSP label 0 (is next) (1 document(s)") for w in m.warnings)
    assert "every train example has NSP label 0" in capsys.readouterr().out


def test_a_cap_below_the_rate_is_said(sample_paragraphs, tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl", sample_paragraphs[:30])
    m = run_job(tmp_path / "out", f"inputs=[{src}]", "instances=phase2", "masking.max_predictions_per_seq=20", *SMALL)
    assert m.masking.max_predictions_per_seq == 20
    assert any("masks at most 3.9% of a full 512-token example" in w for w in m.warnings)
    phase2 = run_job(tmp_path / "phase2", f"inputs=[{src}]", "instances=phase2", *SMALL)
    assert phase2.masking.max_predictions_per_seq == 80 and not any("masks at most" in w for w in phase2.warnings)
    # BERT's ~15% of the tokens predicted at 512, not the ~9% a cap of 20 left (the figure).
    masked = lambda m: m.statistics["masked_positions"]["train"] / m.statistics["example_tokens"]["train"]  # noqa: E731
    assert masked(phase2) > 0.13 > masked(m)
