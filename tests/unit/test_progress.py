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
