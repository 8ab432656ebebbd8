"""The progress channel of local runs: workers' running totals in files, summed by the launcher."""

import io
import multiprocessing
import os
import re
import time

from pipeline import progress


def _count_in_another_process(directory, n):
    os.environ[progress.PROGRESS_DIR_ENV] = directory
    progress.note("documents_read/wikipedia_xml", n)
    progress.note("tokens/train", 1000)  # not shown: not written
    progress.flush()


def test_totals_of_several_processes_are_summed(tmp_path, monkeypatch):
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, as a Beam worker is
    for n in (3, 4):
        p = ctx.Process(target=_count_in_another_process, args=(str(tmp_path), n))
        p.start()
        p.join(60)
        assert p.exitcode == 0
    totals = progress.read_totals(str(tmp_path))
    assert totals == {"documents_read": 7}
    line = progress.format_line(totals, 83)
    assert line == "[   1m23s] documents read 7 · kept 0 · examples 0"


def test_nothing_is_written_without_the_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_DIR_ENV, raising=False)
    monkeypatch.setattr(progress, "_totals", None)
    progress.note("examples/train", 5)
    progress.flush()
    assert progress._totals is None


def test_the_reporter_prints_lines_and_removes_its_directory(monkeypatch):
    stream = io.StringIO()
    with progress.ProgressReporter(0.05, stream) as reporter:
        directory = reporter.directory
        monkeypatch.setenv(progress.PROGRESS_DIR_ENV, directory)
        monkeypatch.setattr(progress, "_totals", None)
        progress.note("examples/train", 11)
        progress.flush()
        deadline = time.monotonic() + 10
        while "examples 11" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert re.search(r"^\[ +\d+s\] documents read 0 · kept 0 · examples 11$", stream.getvalue(), re.M)
    assert not os.path.exists(directory)
    with progress.ProgressReporter(0) as off:  # progress_every_s=0: no thread, no directory
        assert off.env == {} and off.directory is None


def test_the_line_shows_files_and_bytes_of_their_totals_and_the_time_left():
    inputs = progress.InputTotals(files=12, bytes=4_000_000_000)
    counts = {"files_done": 3, "input_bytes": 1_000_000_000, "documents_read": 12_345, "examples": 230_118}
    assert progress.format_line(counts, 80, inputs) == (
        "[   1m20s] files 3/12 · input 1.0 GB/4.0 GB (25%) · documents read 12,345 · kept 0 · examples 230,118"
        " · 4m00s left reading"
    )
    assert progress.format_line({}, 5, inputs).endswith(
        "input 0 B/4.0 GB (0%) · documents read 0 · kept 0 · examples 0 · ? left reading"
    )
    done = {"files_done": 12, "input_bytes": 4_000_000_000}
    assert "files 12/12 · input 4.0 GB/4.0 GB (100%)" in progress.format_line(done, 4000, inputs)
    assert progress.format_line(done, 4000, inputs).endswith("· inputs read")
    assert progress.format_line(done, 4000, inputs).startswith("[1h06m40s]")
    empty_files = progress.InputTotals(files=4, bytes=0)  # nothing to measure in bytes: the files' share
    assert "files 1/4 · input 0 B/0 B (25%)" in progress.format_line({"files_done": 1}, 10, empty_files)
    assert progress.format_line({"files_done": 1}, 10, empty_files).endswith("30s left reading")


def test_files_and_bytes_read_add_up_to_the_inputs(tmp_path, monkeypatch):
    """ReadSources over a plain, a gzip and a bz2 input: the progress files count every byte as
    stored (the compressed size) and every file once, and the line says all is read."""
    import bz2
    import gzip
    import json

    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.test_pipeline import TestPipeline

    from pipeline.config import SourceConfig
    from pipeline.run import input_totals
    from pipeline.spill import Spill
    from pipeline.transforms import ReadSources

    lines = "".join(json.dumps({"text": f"Sentence {i} of the record."}) + "\n" for i in range(3000)).encode()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(lines)
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "in" / "c.txt.bz2").write_bytes(bz2.compress(b"A book of one line.\n" * 5000))
    paths = sorted(str(p) for p in (tmp_path / "in").iterdir())
    directory = tmp_path / "progress"
    directory.mkdir()
    monkeypatch.setenv(progress.PROGRESS_DIR_ENV, str(directory))
    monkeypatch.setattr(progress, "_totals", None)
    with TestPipeline(runner=fn_runner.FnApiRunner()) as p:
        _ = p | beam.Create(paths) | ReadSources(SourceConfig(), Spill(str(tmp_path / "spill"), 10_000, 10_000))
    progress.flush()
    totals = progress.read_totals(str(directory))
    inputs = input_totals(paths)
    assert inputs == progress.InputTotals(files=3, bytes=sum(os.path.getsize(p) for p in paths))
    assert totals["input_bytes"] == inputs.bytes and totals["files_done"] == 3
    assert totals["documents_read"] == 3000 + 3000 + 1
    assert progress.format_line(totals, 7, inputs).endswith("· inputs read")
