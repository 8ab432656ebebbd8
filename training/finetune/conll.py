"""CoNLL-2003 named entities: the column format, word-piece features, entity-level F1.

The format (the shared task's ``eng.train``, Hugging Face's ``train.txt``/``valid.txt``/``test.txt``):
one token per line, ``word POS chunk NER`` separated by spaces, a blank line between sentences and
``-DOCSTART- -X- -X- O`` between documents (skipped). The word is the first column and the tag the
last, so the German files (five columns) read too; every token line of a file must have as many
columns as its first one.

Tag scheme: BIO (IOB2). IOB1 files (the 2003 release, where I-X opens an entity unless it follows X
and B-X only separates two adjacent X entities) are converted while reading: an I-X that does not
continue an X entity becomes B-X. That is the rule conlleval applies to predictions, so gold and
predicted tags are read alike, and it leaves BIO files unchanged. Every sequence of well-formed tags
is therefore valid; what is rejected is a malformed tag (anything but ``O``, ``B-TYPE``, ``I-TYPE``,
e.g. BIOES's ``E-PER``), a tag outside the task's label list, or a wrong column count.

Bad input raises ``training.finetune.kinds.BadInputError`` naming file and line; under
``on_bad_row="skip"`` each bad line is counted by reason (``SkippedRows``) and the sentence holding it
is left out whole (a sentence with a hole in it would teach wrong tag transitions; the number left
out is ``CoNLLFile.dropped_sentences``).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from training.finetune.kinds import RowPolicy, SkippedRows, open_task_file
from training.labels import IGNORE_INDEX

DOCSTART = "-DOCSTART-"
_TAG = re.compile(r"^(?:O|([BI])-(\S+))$")


@dataclass
class Sentence:
    """One sentence: words and their BIO tags (IOB1 already converted), from ``path:line``."""

    words: List[str]
    tags: List[str]
    path: str
    line: int
    """Line of the first word (1-based)."""


@dataclass
class CoNLLFile:
    """A read file: its sentences, the bad lines skipped, how many IOB1 entity starts became B-."""

    sentences: List[Sentence]
    skipped: SkippedRows
    dropped_sentences: int
    """Sentences left out under skip because one of their lines was bad."""
    iob1_converted: int


def read_conll(
    path: str, labels: Optional[Sequence[str]] = None, on_bad_row: str = "error", encoding: str = "utf-8"
) -> CoNLLFile:
    """Sentences of a CoNLL file; ``labels`` (the task's tag list) rejects any other tag."""
    known = set(labels) if labels is not None else None
    policy = RowPolicy(on_bad_row, path)
    sentences: List[Sentence] = []
    dropped = converted = 0
    with open_task_file(path) as f:
        for block in _blocks(f, encoding):
            tags, n_converted = to_bio(block.tags)
            problems = list(block.problems)
            if known is not None:
                problems += [
                    (
                        line,
                        "tag not in labels",
                        f"{tag!r} is not one of {sorted(known)}"
                        + (f" (IOB1 {raw!r} read as {tag!r})" if raw != tag else ""),
                    )
                    for line, raw, tag in zip(block.lines, block.tags, tags)
                    if tag not in known
                ]
            if problems:
                for line, reason, detail in sorted(problems):
                    policy.reject(line, reason, detail + f" (in the sentence from line {block.start})")
                dropped += 1
                continue
            converted += n_converted
            sentences.append(Sentence(block.words, tags, path, block.lines[0]))
    return CoNLLFile(sentences, policy.skipped, dropped, converted)


@dataclass
class _Block:
    start: int
    """Line of the block's first row."""
    words: List[str] = field(default_factory=list)
    tags: List[str] = field(default_factory=list)
    lines: List[int] = field(default_factory=list)
    problems: List[Tuple[int, str, str]] = field(default_factory=list)
    """(line, reason, detail) of each bad line; the block is still read to its end."""


def _blocks(lines: Iterator[bytes], encoding: str) -> Iterator[_Block]:
    """Sentence blocks of the file, each line checked for its text, its columns and its tag's form."""
    n_columns = first_line = None
    block: Optional[_Block] = None
    for number, data in enumerate(lines, start=1):
        try:
            raw = data.decode(encoding)
        except UnicodeDecodeError as e:
            block = block or _Block(number)
            block.problems.append(
                (
                    number,
                    f"not {encoding} text",
                    f"byte 0x{data[e.start]:02x} at byte {e.start + 1} (set task.encoding)",
                )
            )
            continue
        fields = raw.split()
        if not fields or fields[0] == DOCSTART:
            if block is not None:
                yield block
            block = None
            continue
        if block is None:
            block = _Block(number)
        if n_columns is None:
            n_columns, first_line = len(fields), number
            if n_columns < 2:
                block.problems.append(
                    (number, "wrong number of columns", f"a token line needs a word and a tag, got {raw.strip()!r}")
                )
                n_columns = None
                continue
        if len(fields) != n_columns:
            block.problems.append(
                (
                    number,
                    "wrong number of columns",
                    f"{len(fields)} columns, the file's "
                    f"first token line ({first_line}) has {n_columns}: {raw.strip()!r}",
                )
            )
            continue
        tag = fields[-1]
        if not _TAG.match(tag):
            block.problems.append((number, "malformed tag", f"{tag!r} is not O, B-TYPE or I-TYPE (BIO or IOB1)"))
            continue
        block.words.append(fields[0])
        block.tags.append(tag)
        block.lines.append(number)
    if block is not None:
        yield block


def to_bio(tags: Sequence[str]) -> Tuple[List[str], int]:
    """BIO tags and how many I-X were entity starts (IOB1, or a stray I-X) rewritten as B-X."""
    out: List[str] = []
    converted = 0
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
            converted += 1
        out.append(tag)
        previous = tag
    return out, converted


# --- features -------------------------------------------------------------------------------


@dataclass
class TokenWindow:
    """One model input: ``[CLS]`` the pieces of words ``[first_word, first_word + len(word_starts))`` ``[SEP]``."""

    sentence: int
    """Index of the sentence in the list encoded."""
    first_word: int
    input_ids: List[int]
    labels: List[int]
    """Same length as input_ids: the tag id on each word's first piece, IGNORE_INDEX elsewhere."""
    word_starts: List[int]
    """Position in input_ids of each word's first piece (one per word of the window)."""


@dataclass
class EncodingReport:
    """How sentences met max_seq_length; nothing is dropped, each case is counted."""

    windows: int = 0
    split_sentences: int = 0
    """Sentences longer than one window, cut between words into several windows."""
    cut_words: int = 0
    """Words with more pieces than a window holds: pieces past the window dropped (the first stays)."""
    empty_words: int = 0
    """Words the tokenizer turns into no piece (control characters...): given [UNK]."""


def encode_sentences(
    sentences: Sequence[Sentence], tokenizer, label_to_id: Dict[str, int], max_seq_length: int
) -> Tuple[List[TokenWindow], EncodingReport]:
    """Windows of whole words, each at most max_seq_length pieces with [CLS] and [SEP].

    A sentence too long for one window is split between words into consecutive windows that do not
    overlap, so every word is predicted exactly once.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("token classification needs a fast tokenizer (word_ids): tokenizer.json or a BERT vocab.txt")
    budget = max_seq_length - 2  # room for [CLS] and [SEP]
    if budget < 1:
        raise ValueError(f"max_seq_length {max_seq_length} leaves no room for a word")
    report = EncodingReport()
    windows: List[TokenWindow] = []
    if not sentences:
        return windows, report
    encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, add_special_tokens=False)
    for index, sentence in enumerate(sentences):
        pieces = _word_pieces(
            encoded["input_ids"][index], encoded.word_ids(index), len(sentence.words), tokenizer.unk_token_id, report
        )
        tag_ids = [label_to_id[t] for t in sentence.tags]
        start = 0
        for end in _window_ends(pieces, budget, report):
            windows.append(_window(index, start, pieces[start:end], tag_ids[start:end], tokenizer))
            start = end
        report.split_sentences += windows[-1].first_word > 0  # the sentence's last window starts past word 0
    report.windows = len(windows)
    return windows, report


def _word_pieces(
    ids: List[int], word_ids: List[Optional[int]], n_words: int, unk_id: int, report: EncodingReport
) -> List[List[int]]:
    pieces: List[List[int]] = [[] for _ in range(n_words)]
    for token_id, word in zip(ids, word_ids):
        pieces[word].append(token_id)
    for word_pieces in pieces:
        if not word_pieces:
            word_pieces.append(unk_id)
            report.empty_words += 1
    return pieces


def _window_ends(pieces: List[List[int]], budget: int, report: EncodingReport) -> Iterator[int]:
    """End word (exclusive) of each window, filled greedily up to budget pieces."""
    used = 0
    for word, word_pieces in enumerate(pieces):
        if len(word_pieces) > budget:
            del word_pieces[budget:]
            report.cut_words += 1
        if used + len(word_pieces) > budget:
            yield word
            used = 0
        used += len(word_pieces)
    yield len(pieces)


def _window(sentence: int, first_word: int, pieces: List[List[int]], tag_ids: List[int], tokenizer) -> TokenWindow:
    input_ids = [tokenizer.cls_token_id]
    labels = [IGNORE_INDEX]
    starts = []
    for word_pieces, tag_id in zip(pieces, tag_ids):
        starts.append(len(input_ids))
        input_ids += word_pieces
        labels += [tag_id] + [IGNORE_INDEX] * (len(word_pieces) - 1)
    input_ids.append(tokenizer.sep_token_id)
    labels.append(IGNORE_INDEX)
    return TokenWindow(sentence, first_word, input_ids, labels, starts)


def decode_windows(
    windows: Sequence[TokenWindow],
    token_predictions: Sequence[Sequence[int]],
    sentences: Sequence[Sentence],
    id_to_label: Sequence[str],
) -> List[List[str]]:
    """Word-level tags per sentence from each window's predicted label id per token position."""
    out: List[List[Optional[str]]] = [[None] * len(s.words) for s in sentences]
    for window, predicted in zip(windows, token_predictions):
        for offset, position in enumerate(window.word_starts):
            out[window.sentence][window.first_word + offset] = id_to_label[int(predicted[position])]
    missing = [(i, tags.index(None)) for i, tags in enumerate(out) if None in tags]
    if missing:
        sentence, word = missing[0]
        raise ValueError(f"no prediction for word {word} of sentence {sentence} ({len(missing)} sentences lack some)")
    return out  # type: ignore[return-value]


# --- entity-level F1 ------------------------------------------------------------------------


def entity_spans(tags: Sequence[str]) -> List[Tuple[str, int, int]]:
    """(type, start, end exclusive) of each entity: a maximal B-X I-X* run (a stray I-X opens one)."""
    spans: List[Tuple[str, int, int]] = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        continues = tag.startswith("I-") and tag[2:] == kind
        if kind is not None and not continues:
            spans.append((kind, start, i))
            kind = None
        if tag != "O" and not continues:
            kind, start = tag[2:], i
    return spans


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Micro precision/recall/F1 over all entities (an entity counts only with exact span and type),
    then the same per type: ``{entity_f1, entity_precision, entity_recall, PER_f1, ..., PER_support}``."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences, {len(predicted)} predicted")
    counts: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0, 0])  # type -> [gold, predicted, correct]
    for index, (gold_tags, pred_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"sentence {index}: {len(gold_tags)} gold tags, {len(pred_tags)} predicted")
        gold_spans = set(entity_spans(gold_tags))
        pred_spans = set(entity_spans(pred_tags))
        for kind, _, _ in gold_spans:
            counts[kind][0] += 1
        for kind, _, _ in pred_spans:
            counts[kind][1] += 1
        for kind, _, _ in gold_spans & pred_spans:
            counts[kind][2] += 1
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    scores = {f"entity_{name}": value for name, value in _prf(*total).items()}
    for kind in sorted(counts):
        scores.update({f"{kind}_{name}": value for name, value in _prf(*counts[kind]).items()})
        scores[f"{kind}_support"] = counts[kind][0]
    return scores


def _prf(n_gold: int, n_predicted: int, n_correct: int) -> Dict[str, float]:
    precision = n_correct / n_predicted if n_predicted else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
