"""[UNK] tokens: counted per split into the manifest and the summary; a job with too many fails
with the words behind them and leaves no output."""

import os

import pytest

from conftest import IN_MEMORY, run_job
from paths import minilm_dir, real_uncased_vocab
from pipeline.output_checks import check_train_split, check_unk_rate
from pipeline.run import JobError
from pipeline.stats import unk_rates
from pipeline.tokenization import CasingDecision


@pytest.fixture(scope="module")
def uncased_vocab_file():
    return os.path.join(minilm_dir(), "vocab.txt")


def test_real_uncased_vocabulary_is_lowercased_and_its_unk_rate_recorded(uncased_vocab_file, tmp_path, capsys):
    manifest = run_job(
        tmp_path / "out",
        "tokenizer=vocab_file",
        f"tokenizer.vocab_file={uncased_vocab_file}",
        "masking.dupe_factor=1",
        *IN_MEMORY,
    )
    assert manifest.lowercase is True and manifest.strip_accents is True and "uncased" in manifest.casing_reason
    stats = manifest.statistics
    assert set(stats["unk_tokens"]) == set(stats["tokens"]) == {"train", "eval"}
    assert 0 <= stats["unk_tokens"]["train"] < 1e-4 * stats["tokens"]["train"]  # 9 of 526,279 measured
    summary = capsys.readouterr().out
    assert "[UNK] tokens" in summary and "train 0.00%" in summary and "uncased vocabulary (0 of 26,930" in summary


def test_cased_reading_of_an_uncased_vocabulary_fails_with_the_words(uncased_vocab_file, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(JobError) as failed:
        run_job(
            out,
            "tokenizer=vocab_file",
            f"tokenizer.vocab_file={uncased_vocab_file}",
            "tokenizer.lowercase=false",
            "masking.dupe_factor=1",
            *IN_MEMORY,
        )
    message = str(failed.value)
    assert "of the tokens are [UNK]" in message and "tokenizer.max_unk_fraction=0.02" in message
    assert "'The' 3,784" in message and "'In' 1,573" in message  # the sample's most frequent capitalised words
    assert "try tokenizer.lowercase=true" in message
    assert os.listdir(out) == []  # no manifest, no shards, no temporaries
    summary = capsys.readouterr().out
    assert "FAILED" in summary and "[UNK] tokens" in summary


def test_unk_check_passes_at_the_threshold_and_names_causes():
    cased = CasingDecision(False, False, "lowercase=false given")
    stats = {"tokens": {"train": 1000, "eval": 100}, "unk_tokens": {"train": 20, "eval": 2}}
    assert unk_rates(stats) == {"eval": 0.02, "train": 0.02}
    assert check_unk_rate(stats, [("The", 5)], cased, 0.02) is None
    stats["unk_tokens"]["train"] = 30
    message = check_unk_rate(stats, [("Календар", 9), ("София", 4)], cased, 0.02)
    assert "2.91%" in message and "'Календар' 9" in message and "2 of these words are in another script" in message
    assert message.index("language:") < message.index("casing:")  # no capitals to blame: language first


def test_empty_train_split_names_the_rejects():
    stats = {"files_read": 2, "documents_read": {"book": 2}, "rejected": {"too_short": 2}, "examples": {}}
    rejects = [{"source": "a.txt", "reason": "too_short", "detail": "12 chars"}]
    message = check_train_split(stats, rejects)
    assert "all 2 documents read were rejected" in message and "too_short 2" in message and "a.txt" in message
    assert check_train_split({"examples": {"train": 1}}, []) is None
    assert "no documents were read" in check_train_split({"files_read": 1}, [])
    assert real_uncased_vocab()  # the vocabulary the job tests read is present
