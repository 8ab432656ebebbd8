"""How well the vocabulary fits the text, and what accent stripping changed, through the real job:
a vocabulary that splits most words into single letters fails the job although no token is
[UNK] (issue 17: a Bulgarian dump with bert-base-uncased passed as clean); Russian keeps й and ё
by default, and forcing BERT's stripping on it is counted and warned about."""

import os
import re

import pytest

from conftest import IN_MEMORY, SMALL_VOCAB, run_job
from cyrillic_prose import BULGARIAN, RUSSIAN, write_books
from paths import minilm_dir
from pipeline.run import JobError
from pipeline.stats import vocabulary_fit

QUICK = ("masking.dupe_factor=1", "progress_every_s=0", *IN_MEMORY)


@pytest.fixture(scope="module")
def uncased_vocab_file():
    return os.path.join(minilm_dir(), "vocab.txt")


def _figure(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return float(found.group(1))


def test_bulgarian_with_an_english_vocabulary_fails_naming_the_fit(uncased_vocab_file, tmp_path, capsys):
    inputs = write_books(tmp_path / "bg", BULGARIAN)
    out = tmp_path / "out"
    with pytest.raises(JobError) as failed:
        run_job(out, f"inputs=[{inputs}]", "tokenizer=vocab_file", f"tokenizer.vocab_file={uncased_vocab_file}", *QUICK)
    message = str(failed.value)
    assert message.startswith("the vocabulary does not fit the text")
    assert _figure(r"([\d.]+)% of the words are split into single characters", message) > 50  # 67.5% measured
    assert "above tokenizer.max_single_char_word_fraction=0.2" in message
    assert _figure(r"words average ([\d.]+) pieces", message) > 4  # 4.61 measured
    assert "'седмица' -> с ##е ##д ##м ##и ##ц ##а" in message or re.search(r"'\w+' -> \w( ##\w)+ \(\d+\)", message)
    assert "text in another language or script than the vocabulary's" in message
    assert "in another script than Latin" in message and "[UNK]" not in message.split("Likely cause")[0]
    assert os.listdir(out) == []  # no manifest, no shards
    summary = capsys.readouterr().out
    assert "FAILED" in summary and "vocabulary fit    pieces per word" in summary
    # bert-base-uncased strips every mark, so й became и: said, with the count.
    assert "accent stripping merged letters of their alphabet" in summary and "й->и" in summary


def test_english_sample_fits_both_vocabularies_with_room(uncased_vocab_file, tmp_path, capsys):
    given = run_job(tmp_path / "given", "tokenizer=vocab_file", f"tokenizer.vocab_file={uncased_vocab_file}", *QUICK)
    trained = run_job(tmp_path / "trained", *SMALL_VOCAB, *QUICK)
    summary = capsys.readouterr().out
    assert summary.count("vocabulary fit    pieces per word (all ") == 2
    for manifest, most_pieces, most_single in ((given, 1.2, 0.002), (trained, 1.35, 0.004)):
        pieces, single = vocabulary_fit(manifest.statistics)["all"]
        assert 1.0 < pieces < most_pieces and single < most_single  # 1.12 / 0.07%, 1.24 / 0.17% measured
        assert not any("merged letters" in w for w in manifest.warnings)
    assert given.keep_letters is False and trained.keep_letters is True
    assert given.statistics["accents_stripped"]["é->e"] > 100  # Latin accents stripped as BERT does


def test_a_tiny_trained_vocabulary_fails_as_too_small(tmp_path):
    with pytest.raises(JobError) as failed:
        run_job(tmp_path / "out", "tokenizer.vocab_size=128", *QUICK)
    message = str(failed.value)
    assert _figure(r"([\d.]+)% of the words are split into single characters", message) > 90  # 97% measured
    assert "'is' -> i ##s" in message or "'the' -> t ##h ##e" in message
    assert "the vocabulary trained on the corpus" in message and "raise tokenizer.vocab_size" in message


def test_russian_keeps_its_letters_by_default(tmp_path, capsys):
    out = tmp_path / "out"
    manifest = run_job(out, f"inputs=[{write_books(tmp_path / 'ru', RUSSIAN)}]", *QUICK)
    vocab = (out / "vocab.txt").read_text("utf-8").split("\n")
    assert manifest.strip_accents is True and manifest.keep_letters is True
    assert any("й" in p for p in vocab) and any("ё" in p for p in vocab)
    assert "accents_stripped" not in manifest.statistics  # nothing stripped: no accent in these paragraphs
    assert not any("merged letters" in w for w in manifest.warnings)
    assert "Cyrillic й ё" in manifest.casing_reason
    from pipeline.tokenization import build_tokenizer

    tok = build_tokenizer(vocab, True, True, keep_letters=True)
    assert "".join(tok.encode("Молодой", add_special_tokens=False).tokens).replace("##", "") == "молодой"
    pieces, single = vocabulary_fit(manifest.statistics)["train"]  # no eval split: eight documents
    assert pieces < 3.0 and single < 0.05  # 2.60 / 2.0% on these eight paragraphs (a 286-piece vocabulary)
    assert "vocabulary fit" in capsys.readouterr().out


def test_forcing_bert_stripping_on_russian_is_counted_and_warned(tmp_path, capsys):
    out = tmp_path / "out"
    manifest = run_job(out, f"inputs=[{write_books(tmp_path / 'ru', RUSSIAN)}]", "tokenizer.strip_accents=true", *QUICK)
    vocab = (out / "vocab.txt").read_text("utf-8").split("\n")
    assert manifest.keep_letters is False and not any("й" in p or "ё" in p for p in vocab)
    stripped = manifest.statistics["accents_stripped"]
    assert stripped == {"й->и": 37, "ё->е": 15}  # every й and ё of the eight paragraphs
    (warning,) = [w for w in manifest.warnings if "merged letters" in w]
    assert "52 times (й->и 37, ё->е 15)" in warning and "leave it unset" in warning
    summary = capsys.readouterr().out
    assert (
        "accents stripped            52   (й->и 37, ё->е 15)" in summary and f"warning           {warning}" in summary
    )
