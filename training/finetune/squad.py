"""SQuAD v1.1 / v2.0 extractive QA: reading the JSON, strided windows, best spans, the official scores.

The file: ``{"data": [{"paragraphs": [{"context": str, "qas": [{"id", "question", "answers":
[{"text", "answer_start"}], "is_impossible"}]}]}]}``; ``is_impossible`` (v2.0 only) marks a question
with no answer in its paragraph (its ``answers`` is empty). Every answer must sit where it says:
``context[answer_start:answer_start + len(text)] == text``. A question that breaks a rule raises
``SquadInputError`` naming the file and the question id (the files are one JSON line, so a line number
would say nothing), or under ``on_bad_row="skip"`` is left out and counted by reason.

Windows follow BERT's run_squad: ``[CLS] question [SEP] context window [SEP]``, the question cut to
max_query_length tokens, windows over the context starting every doc_stride tokens (the step between
window starts, as in the original; Hugging Face's ``stride`` is the overlap instead), the last one
ending at the context's end. A window's labels are the answer's first and last token, or 0 (the
[CLS] token) when the answer is not wholly inside it or there is none. Token-to-character offsets
come from the fast tokenizer, so a predicted span is cut from the context exactly as written.

Scores follow the official evaluation scripts (v1.1 and v2.0): answers normalised (lower case,
ASCII punctuation removed, articles a/an/the removed, whitespace collapsed), exact match and
token-overlap F1 against each gold answer, the best one kept, means reported in percent. v2.0:
an impossible question's gold is the empty answer, so only an empty prediction scores on it, and
the scores are also split into HasAns (answerable) and NoAns.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from training.finetune.kinds import BadInputError, SkippedRows, open_task_file


class SquadInputError(BadInputError):
    """A question of a SQuAD file that cannot be used: names the file, the question id and why."""

    def __init__(self, path: str, question: str, reason: str):
        self.path, self.line, self.question, self.reason = path, None, question, reason
        ValueError.__init__(
            self,
            f"{path}: question {question}: {reason} (task.on_bad_row=skip leaves such questions out and counts them)",
        )


@dataclass
class Answer:
    text: str
    start: int
    """Character offset of text in the context."""


@dataclass
class QAExample:
    """One question on its paragraph, with its gold answers (several in the dev sets; none if impossible)."""

    qid: str
    question: str
    context: str
    answers: List[Answer]
    is_impossible: bool = False


@dataclass
class SquadFile:
    examples: List[QAExample]
    skipped: SkippedRows


class _QuestionPolicy:
    """Raise SquadInputError under on_bad_row=error; count the question by reason under skip."""

    def __init__(self, on_bad_row: str, path: str):
        self.on_bad_row, self.path, self.skipped = on_bad_row, path, SkippedRows()

    def reject(self, question: str, reason: str, detail: str = "") -> None:
        if self.on_bad_row == "error":
            raise SquadInputError(self.path, question, reason + (f": {detail}" if detail else ""))
        self.skipped.add_at(f"{self.path}: question {question}", reason, detail)


def read_squad(
    path: str, version_2_with_negative: bool, on_bad_row: str = "error", encoding: str = "utf-8"
) -> SquadFile:
    """The questions of a SQuAD file, each answer checked against its context."""
    with open_task_file(path) as f:
        data = f.read()
    try:
        document = json.loads(data.decode(encoding))
    except UnicodeDecodeError as e:
        raise BadInputError(
            path,
            data.count(b"\n", 0, e.start) + 1,
            f"not {encoding} text: byte 0x{data[e.start]:02x} (set task.encoding)",
        ) from None
    except json.JSONDecodeError as e:
        raise BadInputError(path, e.lineno, f"not JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise BadInputError(path, 1, 'not a SQuAD file: no top-level "data" list')
    policy = _QuestionPolicy(on_bad_row, path)
    examples: List[QAExample] = []
    seen = set()
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                policy.reject(f"(data[{a}].paragraphs[{p}])", "malformed paragraph", 'no "context" string')
                continue
            for n, qa in enumerate(paragraph.get("qas", [])):
                example = _question(
                    qa, context, version_2_with_negative, policy, f"(data[{a}].paragraphs[{p}].qas[{n}])", seen
                )
                if example is not None:
                    seen.add(example.qid)
                    examples.append(example)
    return SquadFile(examples, policy.skipped)


def _question(qa, context: str, v2: bool, policy: _QuestionPolicy, place: str, seen) -> Optional[QAExample]:
    """The question's example, or None once the policy has counted why it is unusable."""
    if not isinstance(qa, dict) or not isinstance(qa.get("id"), str):
        policy.reject(place, "malformed question", 'no "id" string')
        return None
    qid = qa["id"]
    if qid in seen:
        policy.reject(qid, "duplicate question id")
        return None
    question, answers, impossible = qa.get("question"), qa.get("answers"), qa.get("is_impossible", False)
    if not isinstance(question, str) or not question.strip() or not isinstance(answers, list):
        policy.reject(qid, "malformed question", 'needs a non-empty "question" string and an "answers" list')
        return None
    if impossible and not v2:
        policy.reject(qid, "unanswerable question", "is_impossible in a v1 task (set task.version_2_with_negative)")
        return None
    if impossible and answers:
        policy.reject(qid, "unanswerable question with answers", f"{len(answers)} answers")
        return None
    if not impossible and not answers:
        policy.reject(qid, "no answer", "an answerable question needs at least one answer")
        return None
    checked: List[Answer] = []
    for answer in answers:
        text, start = (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
        if not isinstance(text, str) or not text.strip() or not isinstance(start, int):
            policy.reject(qid, "malformed answer", f"needs a non-empty text and an integer answer_start: {answer!r}")
            return None
        found = context[start : start + len(text)]
        if found != text:
            policy.reject(
                qid, "answer not at answer_start", f"answer {text!r} at {start}, the context there reads {found!r}"
            )
            return None
        checked.append(Answer(text, start))
    return QAExample(qid, question, context, checked, bool(impossible))


# --- windows --------------------------------------------------------------------------------


@dataclass
class QAWindow:
    """One model input: ``[CLS] question [SEP] context tokens [first, first + length) [SEP]``.

    The question's and the context's token lists are shared with the example's other windows (and
    the context's with every question on it), so a window costs a few references, not its tokens.
    """

    example: int
    """Index of the example in the list encoded."""
    question_ids: List[int]
    context_ids: List[int]
    context_offsets: List[Tuple[int, int]]
    """(start, end) characters of each context token in the context."""
    first: int
    length: int
    start_position: int
    end_position: int
    """Positions of the first answer's first and last token; both 0 ([CLS]) if it is not in the window."""
    cls_id: int
    sep_id: int

    @property
    def context_start(self) -> int:
        """Position of the window's first context token (after [CLS], the question and [SEP])."""
        return len(self.question_ids) + 2

    @property
    def num_tokens(self) -> int:
        return self.context_start + self.length + 1

    @property
    def input_ids(self) -> List[int]:
        return (
            [self.cls_id]
            + self.question_ids
            + [self.sep_id]
            + self.context_ids[self.first : self.first + self.length]
            + [self.sep_id]
        )

    @property
    def token_type_ids(self) -> List[int]:
        return [0] * self.context_start + [1] * (self.length + 1)

    def offset(self, position: int) -> Optional[Tuple[int, int]]:
        """(start, end) characters in the context of the token at ``position``; None off the context."""
        i = position - self.context_start
        return self.context_offsets[self.first + i] if 0 <= i < self.length else None


@dataclass
class WindowReport:
    """What max_seq_length and max_query_length did to the questions; each case counted."""

    windows: int = 0
    multi_window_examples: int = 0
    """Examples whose context needed more than one window."""
    cut_questions: int = 0
    """Questions longer than max_query_length tokens, cut to it."""
    answers_in_no_window: int = 0
    """Answerable examples whose answer no window holds whole (longer than a window): labelled 0 in all."""


def encode_examples(
    examples: Sequence[QAExample], tokenizer, max_seq_length: int, doc_stride: int, max_query_length: int
) -> Tuple[List[QAWindow], WindowReport]:
    """The windows of every example, in example order."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("question answering needs a fast tokenizer (offsets): tokenizer.json or a BERT vocab.txt")
    report = WindowReport()
    windows: List[QAWindow] = []
    if not examples:
        return windows, report
    questions = tokenizer([e.question for e in examples], add_special_tokens=False)["input_ids"]
    # a paragraph has many questions: each context is tokenized once
    contexts = {c: i for i, c in enumerate(dict.fromkeys(e.context for e in examples))}
    encoded = tokenizer(list(contexts), add_special_tokens=False, return_offsets_mapping=True)
    for index, example in enumerate(examples):
        question = questions[index]
        if len(question) > max_query_length:
            question = question[:max_query_length]
            report.cut_questions += 1
        c = contexts[example.context]
        ids, offsets = encoded["input_ids"][c], [tuple(o) for o in encoded["offset_mapping"][c]]
        answer = _answer_tokens(example, offsets)
        spans = context_spans(len(ids), max_seq_length - len(question) - 3, doc_stride)
        report.multi_window_examples += len(spans) > 1
        labelled = False
        for first, length in spans:
            window = _window(index, question, ids, offsets, first, length, answer, tokenizer)
            labelled |= window.start_position > 0
            windows.append(window)
        report.answers_in_no_window += not example.is_impossible and not labelled
    report.windows = len(windows)
    return windows, report


def context_spans(n_tokens: int, window: int, doc_stride: int) -> List[Tuple[int, int]]:
    """(first token, length) of each window over n_tokens context tokens, window tokens at most,
    starts doc_stride apart (never more than a window, so no token is left out), the last at the end."""
    if window < 1:
        raise ValueError(f"no room for the context: the window holds {window} tokens")
    spans, first = [], 0
    while True:
        length = min(n_tokens - first, window)
        spans.append((first, length))
        if first + length >= n_tokens:
            return spans
        first += min(length, doc_stride)


def _answer_tokens(example: QAExample, offsets: List[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    """First and last context token of the first answer; None if impossible, or if the answer is only
    characters the tokenizer drops (it is then in no window)."""
    if example.is_impossible or not example.answers:
        return None
    begin = example.answers[0].start
    end = begin + len(example.answers[0].text)
    inside = [i for i, (start, stop) in enumerate(offsets) if stop > begin and start < end]
    return (inside[0], inside[-1]) if inside else None


def _window(
    example: int,
    question: List[int],
    ids: List[int],
    offsets: List[Tuple[int, int]],
    first: int,
    length: int,
    answer: Optional[Tuple[int, int]],
    tokenizer,
) -> QAWindow:
    start = end = 0
    if answer is not None and first <= answer[0] and answer[1] < first + length:
        shift = len(question) + 2 - first  # context token i sits at position i + shift
        start, end = answer[0] + shift, answer[1] + shift
    return QAWindow(
        example, question, ids, offsets, first, length, start, end, tokenizer.cls_token_id, tokenizer.sep_token_id
    )


# --- best spans -----------------------------------------------------------------------------


def best_answers(
    examples: Sequence[QAExample],
    windows: Sequence[QAWindow],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_threshold: float = 0.0,
) -> Dict[str, str]:
    """Predicted answer text per question id from each window's (T,) start and end logits.

    The best span of an example over all its windows: start and end among each window's n_best_size
    highest logits, both on context tokens, end >= start, at most max_answer_length tokens, scored
    start + end logit. v2.0: the null score is the lowest [CLS] start + end over the windows, and the
    answer is empty when null score - best span score > null_score_threshold.
    """
    best: Dict[int, Tuple[float, int, int, int]] = {}  # example -> (score, window, start, end)
    null: Dict[int, float] = {}
    for w, window in enumerate(windows):
        starts, ends = start_logits[w], end_logits[w]  # (T,) each; T >= window.num_tokens
        null[window.example] = min(null.get(window.example, np.inf), float(starts[0] + ends[0]))
        n = window.num_tokens
        top_starts = [i for i in np.argsort(-starts[:n], kind="stable")[:n_best_size] if window.offset(i)]
        top_ends = [i for i in np.argsort(-ends[:n], kind="stable")[:n_best_size] if window.offset(i)]
        for s in top_starts:
            for e in top_ends:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(starts[s] + ends[e])
                if window.example not in best or score > best[window.example][0]:
                    best[window.example] = (score, w, int(s), int(e))
    predictions: Dict[str, str] = {}
    for index, example in enumerate(examples):
        if index not in best:
            predictions[example.qid] = ""
            continue
        score, w, s, e = best[index]
        if version_2_with_negative and null[index] - score > null_score_threshold:
            predictions[example.qid] = ""
            continue
        predictions[example.qid] = example.context[windows[w].offset(s)[0] : windows[w].offset(e)[1]]
    return predictions


# --- the official scores --------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, ASCII punctuation removed, articles a/an/the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """F1 of the normalised tokens in common. v2.0 scores an empty side 1 if both are empty, else 0;
    v1.1 scores 0 whenever nothing is in common (two empty answers included)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version_2 and (not predicted or not expected):
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(examples: Sequence[QAExample], predictions: Dict[str, str], version_2: bool) -> Dict[str, float]:
    """exact_match and f1 in percent (max over gold answers, mean over questions), and total; v2.0 also
    HasAns_* and NoAns_* (the same on answerable and on impossible questions only)."""
    missing = [e.qid for e in examples if e.qid not in predictions]
    if missing:
        raise KeyError(f"no prediction for {len(missing)} questions, e.g. {missing[0]}")
    exact: Dict[str, float] = {}
    f1: Dict[str, float] = {}
    for example in examples:
        gold = [a.text for a in example.answers]
        if version_2:
            gold = [g for g in gold if normalize_answer(g)] or [""]  # impossible: only "" is right
        prediction = predictions[example.qid]
        exact[example.qid] = max(exact_match(prediction, g) for g in gold)
        f1[example.qid] = max(token_f1(prediction, g, version_2) for g in gold)
    scores = _percent(exact, f1, [e.qid for e in examples], "")
    if version_2:
        scores.update(_percent(exact, f1, [e.qid for e in examples if e.answers], "HasAns_"))
        scores.update(_percent(exact, f1, [e.qid for e in examples if not e.answers], "NoAns_"))
    return scores


def _percent(exact: Dict[str, float], f1: Dict[str, float], qids: List[str], prefix: str) -> Dict[str, float]:
    if not qids:
        return {f"{prefix}total": 0.0}
    return {
        f"{prefix}exact_match": 100.0 * sum(exact[q] for q in qids) / len(qids),
        f"{prefix}f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
        f"{prefix}total": float(len(qids)),
    }
