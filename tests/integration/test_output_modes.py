"""Every file the data job and the export write gets the mode a plain open(path, "w") gives."""

import json
import os
import stat

import pytest

from conftest import IN_MEMORY, run_job


@pytest.fixture
def umask_027():
    old = os.umask(0o027)  # not the usual 022, so a file written with a fixed mode stands out
    yield 0o640
    os.umask(old)


def file_modes(root) -> dict:
    return {
        os.path.relpath(os.path.join(d, f), root): stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode)
        for d, _, files in os.walk(root)
        for f in files
    }


def test_job_and_export_files_follow_the_umask(umask_027, sample_paragraphs, tmp_path):
    from pipeline import contract
    from test_export import tiny_model
    from training.export import export_hf

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in sample_paragraphs[:30]) + "{bad json\n", "utf-8"
    )
    data_dir = tmp_path / "shards"
    run_job(
        data_dir,
        f"inputs=[{tmp_path / 'in'}]",
        "tokenizer.vocab_size=500",
        "masking.dupe_factor=1",
        "instances.eval_fraction=0.1",
        *IN_MEMORY,
    )
    vocab = contract.read_vocab(os.path.join(data_dir, contract.VOCAB_FILE))
    model, cfg = tiny_model(vocab)
    export_hf(model.state_dict(), cfg, str(data_dir), str(tmp_path / "hf"))

    with open(tmp_path / "plain", "w"):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == umask_027
    job, export = file_modes(data_dir), file_modes(tmp_path / "hf")
    assert {
        "manifest.json",
        "vocab.txt",
        "train/part-00000-of-00001.arrow",
        "eval/part-00000-of-00001.arrow",
        "documents/part-00000-of-00001.arrow",
        "rejects/part-00000-of-00001.jsonl",
    } <= set(job)
    assert {"model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json"} <= set(export)
    wrong = {f: oct(m) for f, m in {**job, **{"hf/" + k: v for k, v in export.items()}}.items() if m != umask_027}
    assert not wrong, wrong
