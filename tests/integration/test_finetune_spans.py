"""Span tasks of the fine-tuning: CoNLL-2003 NER (token_classification) and SQuAD (question_answering).

Scores are checked against values worked out by hand on the small files in tests/data/finetune/
(real formats: CoNLL columns, SQuAD JSON); then each kind runs end to end through
``python -m training.finetune`` on a tiny random BERT with the bert-base-uncased vocabulary.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from paths import DATA as TEST_DATA
from paths import REPO, minilm_dir
from training.config import ConfigError
from training.finetune.conll import Sentence, decode_windows, encode_sentences, entity_scores, entity_spans, read_conll
from training.finetune.kinds import BadInputError
from training.finetune.squad import (
    Answer,
    QAExample,
    QAWindow,
    SquadInputError,
    best_answers,
    context_spans,
    encode_examples,
    normalize_answer,
    read_squad,
    squad_scores,
    token_f1,
)
from training.labels import IGNORE_INDEX

DATA = os.path.join(TEST_DATA, "finetune")
CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random BERT (2 layers, width 32, no dropout) with bert-base-uncased's vocabulary."""
    import transformers

    path = tmp_path_factory.mktemp("tiny_bert")
    vocab = os.path.join(minilm_dir(), "vocab.txt")
    shutil.copy(vocab, path / "vocab.txt")
    with open(vocab, encoding="utf-8") as f:
        size = sum(1 for _ in f)
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=size,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    transformers.BertModel(config).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# --- CoNLL reading ----------------------------------------------------------------------------


def test_reads_conll_columns_skipping_docstart():
    read = read_conll(os.path.join(DATA, "conll2003", "train.txt"), CONLL_TAGS)
    assert len(read.sentences) == 6  # two -DOCSTART- lines, not sentences
    first = read.sentences[0]
    assert first.words == ["Maria", "Lopez", "joined", "Acme", "Corporation", "in", "Lisbon", "."]
    assert first.tags == ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O", "B-LOC", "O"]
    assert first.line == 3
    assert read.sentences[4].tags[4:6] == ["B-LOC", "B-LOC"]  # "Paris London": two adjacent entities
    assert read.iob1_converted == 0 and read.skipped.total == 0


def test_iob1_is_read_as_bio():
    read = read_conll(os.path.join(DATA, "conll_iob1.txt"), CONLL_TAGS)
    # I-PER I-PER O I-PER B-PER O I-LOC O: the I- that open an entity become B-, the B- stays
    assert read.sentences[0].tags == ["B-PER", "I-PER", "O", "B-PER", "B-PER", "O", "B-LOC", "O"]
    assert read.iob1_converted == 3
    assert entity_spans(read.sentences[0].tags) == [("PER", 0, 2), ("PER", 3, 4), ("PER", 4, 5), ("LOC", 6, 7)]


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("Maria NNP B-NP B-PER\nLopez NNP I-PER\n", 2, "3 columns, the file's first token line (1) has 4"),
        ("Maria NNP B-NP B-PER\n\nHans NNP B-NP E-PER\n", 3, "malformed tag: 'E-PER' is not O, B-TYPE or I-TYPE"),
        ("Hans NNP B-NP B-PER\nKenya NNP B-NP B-FOO\n", 2, "tag not in labels: 'B-FOO'"),
        ("Hans NNP B-NP I-FOO\n", 1, "(IOB1 'I-FOO' read as 'B-FOO')"),
    ],
)
def test_bad_conll_line_is_named(tmp_path, text, line, words):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(BadInputError) as raised:
        read_conll(str(path), CONLL_TAGS)
    assert str(raised.value).startswith(f"{path}:{line}: ")
    assert words in str(raised.value)


def test_conll_text_not_in_the_encoding(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Hans NNP B-NP B-PER\nK\u00f6ln NNP B-NP B-LOC\n".encode("latin-1"))
    with pytest.raises(BadInputError, match=r"latin1.txt:2: not utf-8 text: byte 0xf6 at byte 2"):
        read_conll(str(path), CONLL_TAGS)
    assert read_conll(str(path), CONLL_TAGS, encoding="latin-1").sentences[0].words == ["Hans", "K\u00f6ln"]
    with pytest.raises(ConfigError, match="does not exist"):
        read_conll(str(tmp_path / "missing.txt"), CONLL_TAGS)


def test_bad_conll_lines_skipped_and_counted():
    path = os.path.join(DATA, "conll_bad.txt")
    with pytest.raises(BadInputError, match=r"conll_bad.txt:5: wrong number of columns"):
        read_conll(path, CONLL_TAGS)
    read = read_conll(path, CONLL_TAGS, on_bad_row="skip")
    assert read.skipped.counts == {"wrong number of columns": 1, "malformed tag": 1, "tag not in labels": 1}
    assert [r.split(": ")[0] for r in read.skipped.first] == [f"{path}:5", f"{path}:8", f"{path}:11"]
    assert read.dropped_sentences == 3  # each bad line takes its sentence with it
    assert [s.line for s in read.sentences] == [1, 14]


# --- CoNLL features and decoding --------------------------------------------------------------


def test_tag_on_first_piece_and_long_sentences_in_windows(tokenizer):
    sentence = read_conll(os.path.join(DATA, "conll2003", "train.txt"), CONLL_TAGS).sentences[4]
    assert sentence.words == ["Flights", "from", "Ouagadougou", "to", "Paris", "London", "resumed", "."]
    label_to_id = {t: i for i, t in enumerate(CONLL_TAGS)}
    n_pieces = len(tokenizer.tokenize("Ouagadougou"))
    assert n_pieces == 5

    windows, report = encode_sentences([sentence], tokenizer, label_to_id, max_seq_length=64)
    assert report.windows == 1 and report.split_sentences == 0
    (window,) = windows
    assert len(window.input_ids) == 7 + n_pieces + 2
    assert window.labels[3] == label_to_id["B-LOC"]  # [CLS] flights from ouagadougou...
    assert window.labels[4 : 3 + n_pieces] == [IGNORE_INDEX] * (n_pieces - 1)
    assert window.labels[0] == window.labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    assert sum(label != IGNORE_INDEX for label in window.labels) == len(sentence.words)

    # 6 pieces per window: [flights from] [ouagadougou(5) to] [paris london resumed .]
    windows, report = encode_sentences([sentence], tokenizer, label_to_id, max_seq_length=8)
    assert [w.first_word for w in windows] == [0, 2, 4]
    assert report.split_sentences == 1 and report.cut_words == 0
    assert all(len(w.input_ids) <= 8 for w in windows)
    gold_ids = [w.labels for w in windows]  # predicting the gold ids gives back the gold tags
    assert decode_windows(windows, gold_ids, [sentence], CONLL_TAGS) == [sentence.tags]

    # 3 pieces per window: ouagadougou keeps its first 3 pieces (and its tag), counted
    windows, report = encode_sentences([sentence], tokenizer, label_to_id, max_seq_length=5)
    assert report.cut_words == 1
    assert decode_windows(windows, [w.labels for w in windows], [sentence], CONLL_TAGS) == [sentence.tags]


def test_word_without_pieces_gets_unk(tokenizer):
    sentence = Sentence(["Hans", "\u200b", "left"], ["B-PER", "O", "O"], "x", 1)
    windows, report = encode_sentences([sentence], tokenizer, {t: i for i, t in enumerate(CONLL_TAGS)}, 16)
    assert report.empty_words == 1
    assert windows[0].input_ids[2] == tokenizer.unk_token_id
    assert len(windows[0].word_starts) == 3


# --- entity F1 --------------------------------------------------------------------------------


def test_entity_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O"]]  # PER(0,2) LOC(3,4); ORG(0,1)
    pred = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["O", "O"]]  # PER right, LOC too long, ORG missed
    scores = entity_scores(gold, pred)
    assert scores["entity_precision"] == pytest.approx(0.5)
    assert scores["entity_recall"] == pytest.approx(1 / 3)
    assert scores["entity_f1"] == pytest.approx(0.4)
    assert (scores["PER_f1"], scores["LOC_f1"], scores["ORG_f1"]) == (1.0, 0.0, 0.0)
    assert scores["ORG_support"] == 1 and scores["ORG_precision"] == 0.0  # nothing predicted: 0, not an error


def test_entity_spans_type_changes_and_stray_inside():
    # a type change inside a run ends the entity; a stray I- opens one (as conlleval reads it)
    assert entity_spans(["B-PER", "I-LOC", "I-LOC", "O", "I-ORG", "B-ORG", "I-ORG"]) == [
        ("PER", 0, 1),
        ("LOC", 1, 3),
        ("ORG", 4, 5),
        ("ORG", 5, 7),
    ]
    gold = [["B-MISC", "I-MISC", "O"]]
    assert entity_scores(gold, [["B-MISC", "O", "O"]])["entity_f1"] == 0.0  # span must match exactly
    assert entity_scores(gold, [["I-MISC", "I-MISC", "O"]])["entity_f1"] == 1.0


# --- SQuAD reading ----------------------------------------------------------------------------


def test_reads_squad_v1_and_v2():
    v1 = read_squad(os.path.join(DATA, "squad", "dev-v1.1.json"), version_2_with_negative=False)
    assert [e.qid for e in v1.examples] == ["d-everest-year", "d-everest-who", "d-everest-border"]
    assert [a.text for a in v1.examples[0].answers] == ["1953", "1953", "in 1953"]
    v2 = read_squad(os.path.join(DATA, "squad", "dev-v2.0.json"), version_2_with_negative=True)
    assert [e.is_impossible for e in v2.examples] == [False, True, False]
    assert v2.examples[1].answers == []
    with pytest.raises(SquadInputError, match=r"question d2-everest-height: unanswerable question"):
        read_squad(os.path.join(DATA, "squad", "dev-v2.0.json"), version_2_with_negative=False)


def test_bad_squad_questions_named_or_counted():
    path = os.path.join(DATA, "squad_bad.json")
    with pytest.raises(SquadInputError) as raised:
        read_squad(path, version_2_with_negative=False)
    assert isinstance(raised.value, BadInputError)  # what the CLI turns into one line
    assert str(raised.value).startswith(
        f"{path}: question b-offset: answer not at answer_start: "
        "answer 'South America' at 21, the context there reads 'outh America '"
    )
    read = read_squad(path, version_2_with_negative=False, on_bad_row="skip")
    assert [e.qid for e in read.examples] == ["b-ok"]
    assert read.skipped.counts == {"answer not at answer_start": 1, "duplicate question id": 1, "no answer": 1}
    assert read.skipped.first[1] == f"{path}: question b-ok: duplicate question id"


def test_not_json_names_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"data": [\n  {"paragraphs": [}\n]}\n')
    with pytest.raises(BadInputError, match=r"train.json:2: not JSON"):
        read_squad(str(path), version_2_with_negative=False)


# --- SQuAD windows ----------------------------------------------------------------------------


def test_context_spans():
    assert context_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]  # the last ends at the end
    assert context_spans(10, 4, 9) == [(0, 4), (4, 4), (8, 2)]  # a stride above the window: no gap
    assert context_spans(3, 4, 2) == [(0, 3)]


def test_answer_labelled_in_exactly_the_windows_that_hold_it(tokenizer):
    filler = " ".join(f"Sentence number {n} says nothing." for n in range(12))
    answer = "Ouagadougou airport"
    context = f"{filler} The flight landed at {answer} at noon. {filler}"
    start = context.index(answer)
    examples = [
        QAExample("q1", "Where did the flight land?", context, [Answer(answer, start)]),
        QAExample("q2", "A question far too long to keep whole in the window " * 2, context, [], True),
    ]
    windows, report = encode_examples(examples, tokenizer, max_seq_length=32, doc_stride=8, max_query_length=10)
    assert report.cut_questions == 1 and report.answers_in_no_window == 0
    assert report.multi_window_examples == 2

    mine = [w for w in windows if w.example == 0]
    holding = []
    for w in mine:
        assert len(w.input_ids) == len(w.token_type_ids) == w.num_tokens <= 32
        spans = [w.offset(i) for i in range(w.num_tokens) if w.offset(i)]
        holds = spans[0][0] <= start and start + len(answer) <= spans[-1][1]
        holding.append(holds)
        if holds:
            assert context[w.offset(w.start_position)[0] : w.offset(w.end_position)[1]] == answer
            assert w.token_type_ids[w.start_position] == 1
        else:
            assert (w.start_position, w.end_position) == (0, 0)
    assert 2 <= sum(holding) < len(mine)  # the stride puts the answer in several windows, not all
    every = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert {w.offset(i) for w in mine for i in range(w.num_tokens)} - {None} == {tuple(o) for o in every}
    impossible = [w for w in windows if w.example == 1]
    assert all(w.start_position == w.end_position == 0 for w in impossible)
    assert all(w.token_type_ids.count(0) == 10 + 2 for w in impossible)


# --- best spans from logits -------------------------------------------------------------------


def _hand_windows():
    """Context "Hillary climbed Everest in 1953" in two windows over its 5 words (2 question tokens).
    Positions: 0 [CLS], 1-2 question, 3 [SEP], then 3 words, then [SEP]: 8 in all."""
    context = "Hillary climbed Everest in 1953"
    words = [(0, 7), (8, 15), (16, 23), (24, 26), (27, 31)]
    question, ids = [7, 8], [10, 11, 12, 13, 14]
    first = QAWindow(0, question, ids, words, 0, 3, 0, 0, cls_id=1, sep_id=2)  # Hillary climbed Everest
    second = QAWindow(0, question, ids, words, 2, 3, 0, 0, cls_id=1, sep_id=2)  # Everest in 1953
    assert second.input_ids == [1, 7, 8, 2, 12, 13, 14, 2] and second.offset(6) == (27, 31)
    example = QAExample("q", "When?", context, [Answer("1953", 27)])
    return example, [first, second]


def test_best_span_over_windows_from_logits():
    example, windows = _hand_windows()
    T = 10  # logits are padded past each window's 8 positions
    start, end = np.full((2, T), -10.0), np.full((2, T), -10.0)
    start[:, 1] = end[:, 2] = 20.0  # question tokens: never an answer
    start[:, 9] = end[:, 9] = 30.0  # padding: never an answer
    start[0, 5], end[0, 4] = 9.0, 8.0  # window 0: starts on "climbed", ends on "Hillary": not a span
    start[1, 5], end[1, 6] = 3.0, 4.0  # window 1: "in 1953", 7: the best (window 0's best: -1)
    start[0, 0] = end[0, 0] = 3.0  # null scores: 6 and 9; the lowest, 6, counts
    start[1, 0] = end[1, 0] = 4.5

    def answer(**kw):
        args = dict(n_best_size=20, max_answer_length=30, version_2_with_negative=False)
        args.update(kw)
        return best_answers([example], windows, start, end, **args)["q"]

    assert answer() == "in 1953"
    assert answer(max_answer_length=1) == "climbed"  # 9 - 10; "in 1953" is 2 tokens, "1953" alone -6
    # 2 best starts/ends per window: window 1's are on [CLS] and the question, window 0's end before they start
    assert answer(n_best_size=2) == ""
    assert answer(n_best_size=3) == "in 1953"
    # v2.0: null 6 - best 7 = -1: the span, unless the threshold is below -1
    assert answer(version_2_with_negative=True) == "in 1953"
    assert answer(version_2_with_negative=True, null_score_threshold=-1.5) == ""
    assert answer(null_score_threshold=-1.5) == "in 1953"  # v1.1: never empty


def test_best_span_when_no_context_token_qualifies():
    example, windows = _hand_windows()
    start, end = np.zeros((2, 8)), np.zeros((2, 8))
    start[:, 1] = end[:, 2] = 5.0
    assert best_answers(
        [example], windows, start, end, n_best_size=1, max_answer_length=30, version_2_with_negative=False
    ) == {"q": ""}


# --- official SQuAD scores --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, normal",
    [
        ("The Atlantic Ocean!", "atlantic ocean"),
        ("  An apple,  a day. ", "apple day"),
        ("theatre and Anatomy", "theatre and anatomy"),  # articles as words only
        ("U.S.A.", "usa"),
        ("Hillary—Norgay", "hillary—norgay"),  # the scripts' punctuation is ASCII only
    ],
)
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_squad_v1_scores_by_hand():
    examples = read_squad(os.path.join(DATA, "squad", "dev-v1.1.json"), False).examples
    predictions = {
        "d-everest-year": "In 1953.",  # = gold "in 1953": EM 1, F1 1
        "d-everest-who": "Hillary and Norgay",  # 3 of gold 1's 5 tokens: P 1, R 3/5, F1 .75
        "d-everest-border": "China",
    }  # 1 of 3 tokens: F1 .5
    scores = squad_scores(examples, predictions, version_2=False)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.75 + 0.5) / 3)
    assert scores["total"] == 3
    assert token_f1("Hillary and Norgay", "Edmund Hillary") == pytest.approx(0.4)  # P 1/3, R 1/2
    with pytest.raises(KeyError, match="no prediction"):
        squad_scores(examples, {"d-everest-year": "1953"}, version_2=False)


def test_squad_v2_scores_by_hand():
    examples = read_squad(os.path.join(DATA, "squad", "dev-v2.0.json"), True).examples
    predictions = {"d2-everest-year": "1953", "d2-everest-height": "", "d2-everest-who": ""}
    scores = squad_scores(examples, predictions, version_2=True)
    assert scores["exact_match"] == pytest.approx(200 / 3) and scores["f1"] == pytest.approx(200 / 3)
    assert (scores["HasAns_exact_match"], scores["HasAns_f1"], scores["HasAns_total"]) == (50.0, 50.0, 2)
    assert (scores["NoAns_exact_match"], scores["NoAns_f1"], scores["NoAns_total"]) == (100.0, 100.0, 1)
    predictions["d2-everest-height"] = "8,848 metres"  # an answer to an impossible question scores 0
    assert squad_scores(examples, predictions, version_2=True)["NoAns_f1"] == 0.0
    # both empty after normalisation: 1 in v2.0, 0 in v1.1 (whose F1 needs a token in common)
    assert token_f1("the", "a", version_2=True) == 1.0 and token_f1("the", "a") == 0.0


# --- end to end through python -m training.finetune ------------------------------------------


def finetune(model_dir, output_dir, *overrides, check=True):
    command = [
        sys.executable,
        "-m",
        "training.finetune",
        f"model_dir={model_dir}",
        f"output_dir={output_dir}",
        "train.device=cpu",
        *overrides,
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_ner_end_to_end_overfits_its_training_set(model_dir, tmp_path):
    out = tmp_path / "ner"
    finetune(
        model_dir,
        out,
        "task=conll2003",
        f"data_dir={DATA}/conll2003",
        "task.max_seq_length=32",
        "~task.dev_files.test",
        "+task.dev_files.seen=train.txt",
        "task.main_metric=seen/entity_f1",
        "train.epochs=10",
        "train.batch_size=2",
        "optim.lr=1e-2",
        "optim.warmup_ratio=0.0",
    )  # 30 steps
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "token_classification"
    assert (results["rows"]["train"], results["rows"]["dev"], results["rows"]["seen"]) == (6, 2, 6)
    assert len(results["epochs"]) == 10
    for record in results["epochs"]:
        for name in ("dev", "seen"):
            for metric in ("entity_f1", "entity_precision", "entity_recall"):
                assert 0.0 <= record[f"{name}/{metric}"] <= 1.0
    assert results["score"] == results["final"]["seen/entity_f1"] == 1.0
    assert results["epochs"][0]["seen/entity_f1"] < 1.0


def test_squad_end_to_end(model_dir, tmp_path):
    for task, metrics in (
        ("squad_v1", ["exact_match", "f1"]),
        ("squad_v2", ["exact_match", "f1", "HasAns_f1", "NoAns_f1"]),
    ):
        out = tmp_path / task
        finetune(
            model_dir,
            out,
            f"task={task}",
            f"data_dir={DATA}/squad",
            "task.max_seq_length=40",
            "task.doc_stride=12",
            "task.max_query_length=12",
            "train.epochs=1",
            "train.batch_size=4",
        )
        results = json.loads((out / "results.json").read_text())
        assert results["kind"] == "question_answering"
        assert results["rows"]["train"] > 4  # windows: more rows than the 4 questions
        for metric in metrics:
            assert 0.0 <= results["final"][f"dev/{metric}"] <= 100.0
        assert results["main_metric"] == "dev/f1"


def test_bad_squad_file_is_one_line_from_the_cli(model_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(os.path.join(DATA, "squad_bad.json"), data / "train-v1.1.json")
    shutil.copy(os.path.join(DATA, "squad", "dev-v1.1.json"), data / "dev-v1.1.json")
    done = finetune(model_dir, tmp_path / "out", "task=squad_v1", f"data_dir={data}", check=False)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {data}/train-v1.1.json: question b-offset: answer not at answer_start")
    )
