"""The run's own record (training/run_log.py): steps.jsonl repaired on a resume (a torn last line
dropped, the steps after the checkpoint cut), evals.jsonl appended, on small hand-written files."""

import json

from training.run_log import EVALS_FILE, STEPS_FILE, RunLog, drop_torn_steps_line, truncate_steps


def write_steps(directory, text: str) -> None:
    (directory / STEPS_FILE).write_text(text)


def steps_of(directory) -> list[int]:
    return [json.loads(line)["step"] for line in (directory / STEPS_FILE).read_text().splitlines()]


def test_a_torn_last_line_is_dropped_and_a_whole_one_kept(tmp_path):
    write_steps(tmp_path, '{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    drop_torn_steps_line(str(tmp_path))
    assert steps_of(tmp_path) == [1, 2]
    drop_torn_steps_line(str(tmp_path))  # nothing torn now
    assert steps_of(tmp_path) == [1, 2]
    write_steps(tmp_path, '{"step": 1}\n[1, 2]\n')  # JSON, but not a record
    drop_torn_steps_line(str(tmp_path))
    assert steps_of(tmp_path) == [1]
    drop_torn_steps_line(str(tmp_path / "absent"))  # no file: nothing to do


def test_a_resume_cuts_the_steps_after_its_checkpoint_and_reads_its_rate(tmp_path):
    write_steps(tmp_path, "".join(json.dumps({"step": s, "lr": s / 10}) + "\n" for s in range(1, 7)))
    assert truncate_steps(str(tmp_path), 4) == 0.4
    assert steps_of(tmp_path) == [1, 2, 3, 4]
    assert truncate_steps(str(tmp_path), 0) is None  # a fresh start keeps nothing
    assert steps_of(tmp_path) == []
    assert truncate_steps(str(tmp_path / "absent"), 3) is None


def test_steps_are_appended_and_evaluations_recorded(tmp_path):
    write_steps(tmp_path, '{"step": 1}\n')
    run_log = RunLog(str(tmp_path))
    run_log.open()
    run_log.write_step({"step": 2, "loss": 1.5})
    run_log.flush()
    assert steps_of(tmp_path) == [1, 2]
    run_log.write_eval(2, {"eval/loss": 1.25})
    run_log.close()
    assert json.loads((tmp_path / EVALS_FILE).read_text()) == {"step": 2, "eval/loss": 1.25}
