"""The job over a directory of mixed and malformed inputs: it succeeds, keeps every readable part,
and reports every bad part in the rejects with its source and reason."""

import bz2
import json
import os
import re

import pytest

from conftest import IN_MEMORY, run_job
from pipeline.run import JobError
from shards import read_split

PROSE = (
    "The river rises in the northern hills and flows south for many miles. Farmers along its banks "
    "grow wheat and barley in the summer months. In winter the water freezes near the source. "
)


def page(page_id, title, text):
    return f"<page><title>{title}</title><ns>0</ns><id>{page_id}</id><revision><text>{text}</text></revision></page>\n"


def write_inputs(d):
    wiki = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n'
        + page(1, "River", PROSE * 3)
        + page(2, "Hill", "Hills " + PROSE * 2)
    )
    (d / "cut-pages-articles.xml").write_text(wiki + "<page><title>Cut</title><ns>0</ns><id>3</id><rev", "utf-8")
    bad_page = page(4, "Bad", "Broken \udcff bytes").encode("utf-8", "surrogateescape")
    other = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n'
        + page(11, "Lake", "Lakes. " + PROSE * 3)
        + page(12, "Sea", "Seas. " + PROSE * 2)
    )
    (d / "enc-pages-articles.xml").write_bytes(other.encode() + bad_page + b"</mediawiki>\n")
    (d / "long-line.txt").write_text(
        "Chapter one. " + PROSE * 4 + "\n\n" + "x" * (10 * 2**20) + "\n\n" + "The end came quietly. " + PROSE, "utf-8"
    )
    (d / "nul.txt").write_text("A book with a NUL\x00 byte. " + PROSE * 3, "utf-8")
    (d / "records.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "title": "A", "text": "Another text. " + PROSE * 3}),
                "{not json",
                json.dumps({"id": "b", "title": "B"}),
                json.dumps({"id": "c", "text": "Copied. " + PROSE * 3}),  # the same text as...
                json.dumps({"id": "d", "text": "Copied. " + PROSE * 3}),  # ...this one: a duplicate
                json.dumps({"id": "e", "text": "Too short."}),
            ]
        )
        + "\n",
        "utf-8",
    )
    (d / "blob.bin").write_bytes(bytes(range(256)) * 64)
    compressed = bz2.compress(("A compressed book. " + PROSE * 50).encode())
    (d / "broken.txt.bz2").write_bytes(compressed[: len(compressed) // 2])


@pytest.fixture(scope="module")
def bad_job(tmp_path_factory):
    inputs = tmp_path_factory.mktemp("inputs")
    write_inputs(inputs)
    out = tmp_path_factory.mktemp("out") / "shards"
    manifest = run_job(
        out,
        f"inputs=[{inputs}/*]",
        "tokenizer.vocab_size=500",
        "cleaning.min_document_chars=100",
        "instances.eval_fraction=0",
        "filters=none",  # the test pages repeat one paragraph: the quality filters would drop them
        *IN_MEMORY,
    )
    with open(os.path.join(out, "rejects", "part-00000-of-00001.jsonl"), encoding="utf-8") as f:
        rejects = [json.loads(line) for line in f]
    return out, manifest, rejects


def reasons_of(rejects, name):
    return {r["reason"] for r in rejects if os.path.basename(r["source"]) == name}


def test_every_bad_part_is_reported_with_its_reason(bad_job):
    _, _, rejects = bad_job
    assert reasons_of(rejects, "cut-pages-articles.xml") == {"truncated"}
    assert reasons_of(rejects, "enc-pages-articles.xml") == {"invalid_encoding"}
    assert reasons_of(rejects, "long-line.txt") == {"oversized"}
    assert reasons_of(rejects, "nul.txt") == {"control_characters"}
    assert reasons_of(rejects, "records.jsonl") == {"malformed_json", "missing_text", "duplicate", "too_short"}
    assert reasons_of(rejects, "blob.bin") == {"unknown_format"}
    assert reasons_of(rejects, "broken.txt.bz2") & {"corrupt_compression", "truncated"}
    assert [r["action"] for r in rejects if r["reason"] == "control_characters"] == ["repaired"]


def test_every_readable_part_is_kept(bad_job):
    out, manifest, _ = bad_job
    docs = read_split(out, "documents")
    kept = set(zip(map(os.path.basename, docs.column("source").to_pylist()), docs.column("record_id").to_pylist()))
    assert {
        ("cut-pages-articles.xml", "1"),
        ("cut-pages-articles.xml", "2"),
        ("enc-pages-articles.xml", "11"),
        ("enc-pages-articles.xml", "12"),
        ("long-line.txt", "long-line.txt"),
        ("nul.txt", "nul.txt"),
        ("records.jsonl", "a"),
        ("records.jsonl", "c"),
    } <= kept
    assert ("records.jsonl", "d") not in kept  # the duplicate: c comes first by (source, record id)
    assert manifest.statistics["examples"]["train"] > 0


def test_counts_in_the_manifest_match_the_rejects(bad_job):
    _, manifest, rejects = bad_job
    by_reason = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    assert manifest.statistics["rejected"] == by_reason


def test_input_that_matches_nothing_fails_before_running(tmp_path):
    with pytest.raises(JobError, match="matched no files"):
        run_job(tmp_path / "o", f"inputs=[{tmp_path}/nothing-*.xml]", *IN_MEMORY)


def test_existing_output_is_not_overwritten_silently(bad_job, tmp_path):
    out, _, _ = bad_job
    with pytest.raises(JobError, match="overwrite=true"):
        run_job(out, *IN_MEMORY)
    assert os.path.exists(os.path.join(out, "manifest.json"))


# --- directories as inputs; an output with no training example --------------------------------


def write_corpus(d, paragraphs):
    """Two JSON-lines files, one in a subfolder, and a hidden file that must be skipped."""
    (d / "sub").mkdir(parents=True)
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in paragraphs[:20]), "utf-8")
    (d / "sub" / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in paragraphs[20:40]), "utf-8")
    (d / ".hidden.jsonl").write_text(json.dumps({"text": paragraphs[50]}) + "\n", "utf-8")
    return [d / "a.jsonl", d / "sub" / "b.jsonl"]


def test_a_directory_means_the_files_in_it(sample_paragraphs, tmp_path):
    from pipeline.run import expand_inputs
    from shards import shard_hashes

    files = write_corpus(tmp_path / "in", sample_paragraphs)
    assert expand_inputs([str(tmp_path / "in")]) == sorted(map(str, files))
    small = ("tokenizer.vocab_size=500", "masking.dupe_factor=1", *IN_MEMORY)
    by_dir = run_job(tmp_path / "by_dir", f"inputs=[{tmp_path / 'in'}]", *small)
    run_job(tmp_path / "by_file", f"inputs=[{files[0]},{files[1]}]", *small)
    assert by_dir.statistics["documents_read"] == {"json_lines": 40}
    assert shard_hashes(tmp_path / "by_dir") == shard_hashes(tmp_path / "by_file")


def test_a_directory_of_unreadable_files_fails_with_the_reason(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "empty.txt").write_text("", "utf-8")
    (inputs / "blob.bin").write_bytes(bytes(range(256)) * 64)
    out = tmp_path / "out"
    with pytest.raises(JobError, match="the train split has no examples: no documents were read") as failed:
        run_job(out, f"inputs=[{inputs}]", "tokenizer.vocab_size=500", *IN_MEMORY)
    assert "unknown_format 1" in str(failed.value) and "blob.bin" in str(failed.value)
    assert not os.path.exists(out) or os.listdir(out) == []  # no manifest, no temporaries


def test_text_in_another_field_fails_naming_it_and_reads_with_the_setting(sample_paragraphs, tmp_path):
    """An export with its text in ``content``: with the defaults the job fails quoting the first
    rejects in input order (lines 1-5, not 10-14 first) and the field the records have; with
    source.text_field=content it reads every record."""
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps({"content": t}) + "\n" for t in sample_paragraphs[:15]), "utf-8")
    with pytest.raises(JobError, match="missing_text 15") as failed:
        run_job(tmp_path / "default", f"inputs=[{export}]", "tokenizer.vocab_size=500", *IN_MEMORY)
    quoted = re.findall(r"line (\d+): no 'text' field \(the record has: content;", str(failed.value))
    assert quoted == ["1", "2", "3", "4", "5"]
    manifest = run_job(
        tmp_path / "content",
        f"inputs=[{export}]",
        "source.text_field=content",
        "tokenizer.vocab_size=500",
        "masking.dupe_factor=1",
        *IN_MEMORY,
    )
    assert manifest.statistics["documents_read"] == {"json_lines": 15}


def test_overwrite_with_another_shard_count_leaves_no_stale_shard(sample_paragraphs, tmp_path):
    """Every earlier shard goes, whatever its count: a glob over train/*.arrow (as
    datasets.load_dataset("arrow", ...) reads) must find only the new run's; so does the working
    directory (.temp-*) of a run that was killed."""
    write_corpus(tmp_path / "in", sample_paragraphs)
    out = tmp_path / "out"
    small = (
        f"inputs=[{tmp_path / 'in'}]",
        "tokenizer.vocab_size=500",
        "masking.dupe_factor=1",
        "instances.eval_fraction=0",
        *IN_MEMORY,
    )
    run_job(out, "output.num_shards=3", *small)
    assert os.path.exists(out / "train" / "part-00002-of-00003.arrow")
    crashed = out / ".temp-0123abcd" / "spill"  # the working directory a killed run left
    crashed.mkdir(parents=True)
    (crashed / "chunk-0").write_bytes(b"x" * 100)
    manifest = run_job(out, "output.num_shards=2", "overwrite=true", *small)
    files = sorted(os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs)
    shards = [f"train/part-{i:05d}-of-00002.arrow" for i in range(2)]
    assert files == sorted(
        shards
        + ["documents/part-00000-of-00001.arrow", "manifest.json", "rejects/part-00000-of-00001.jsonl", "vocab.txt"]
    )
    assert sorted(s.file for s in manifest.shards) == shards
