"""The held-out (eval) split: which documents it takes, and what the job says when it measures nothing.

A document's split follows a hash of its id alone, never the seed, so the same documents are held
out run after run and evaluations stay comparable. The split takes every document whose hash is
below ``instances.eval_fraction`` and, at least, the ``instances.min_eval_documents`` documents
with the lowest hashes: 1% of a 97-document corpus is one document, whose NSP examples are all
"is next" (a random B must come from another eval document) and whose accuracy means nothing. A
corpus with fewer than twice that many documents gets no eval split, and the summary and the
manifest say why instead of writing a split that measures nothing.

Both parts of the rule come from small, combinable facts about the documents (their count per
fraction split and the ``min_eval_documents`` lowest hashes), so no step holds the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import apache_beam as beam

from pipeline.seeding import unit_interval

EVAL, TRAIN = "eval", "train"


def split_hash(doc_id: int) -> float:
    """[0, 1): where a document falls for the held-out split (a hash of its id alone)."""
    return unit_interval("split", doc_id)


def split_of(doc_id: int, eval_fraction: float) -> str:
    """The split by the fraction alone."""
    return EVAL if split_hash(doc_id) < eval_fraction else TRAIN


@dataclass(frozen=True)
class HeldOutRule:
    """Which split a document id goes to. ``eval_fraction``: hashes below it are held out;
    ``at_or_below``: hashes up to it are held out too (the ``min_eval_documents``-th lowest, -1
    when the fraction alone suffices or there is no eval split); ``note``: why there is no eval
    split, or ""."""

    eval_fraction: float
    at_or_below: float = -1.0
    note: str = ""

    def split_of(self, doc_id: int) -> str:
        u = split_hash(doc_id)
        return EVAL if u < self.eval_fraction or u <= self.at_or_below else TRAIN


def decide_rule(
    fraction_counts: Mapping[str, int],
    lowest: Sequence[tuple[float, int]],
    eval_fraction: float,
    min_eval_documents: int,
) -> HeldOutRule:
    """The rule from the documents' count per split by the fraction alone (copies included) and
    the ``min_eval_documents`` lowest distinct hashes, ascending, each with its number of copies
    (exact duplicates share an id, hence a hash, and count as one document here)."""
    total = sum(fraction_counts.values())
    if eval_fraction <= 0:
        return HeldOutRule(0.0, note="no eval split: instances.eval_fraction=0")
    if min_eval_documents and total < 2 * min_eval_documents:
        return HeldOutRule(
            0.0,
            note=(
                f"no eval split: {total:,} document{'' if total == 1 else 's'}, fewer than twice instances.min_eval_documents="
                f"{min_eval_documents} (an eval split of fewer documents measures little: NSP negatives "
                "need other eval documents); every document trains"
            ),
        )
    if fraction_counts.get(EVAL, 0) >= min_eval_documents or len(lowest) < min_eval_documents:
        return HeldOutRule(eval_fraction)
    return HeldOutRule(eval_fraction, at_or_below=lowest[-1][0])


def counts_under(
    rule: HeldOutRule, fraction_counts: Mapping[str, int], lowest: Sequence[tuple[float, int]]
) -> dict[str, int]:
    """{split: documents} under ``rule`` (copies included), from the counts by the fraction alone:
    the copies of the lowest hashes at or above the fraction that the rule adds move to eval."""
    total = sum(fraction_counts.values())
    if rule.eval_fraction <= 0:
        return {TRAIN: total} if total else {}
    moved = sum(copies for u, copies in lowest if rule.eval_fraction <= u <= rule.at_or_below)
    counts = {EVAL: fraction_counts.get(EVAL, 0) + moved, TRAIN: fraction_counts.get(TRAIN, 0) - moved}
    return {split: n for split, n in counts.items() if n}


class DecideHeldOut(beam.PTransform):
    """Documents -> (one HeldOutRule, one {split: documents}). The count by fraction and the
    lowest hashes are combined per bundle where the documents are made (nothing is held)."""

    def __init__(self, eval_fraction: float, min_eval_documents: int):
        super().__init__()
        self.eval_fraction, self.min_eval_documents = eval_fraction, min_eval_documents

    def expand(self, documents):
        fraction, least = self.eval_fraction, self.min_eval_documents
        fraction_counts = (
            documents
            | "SplitByFraction" >> beam.Map(lambda d: split_of(d.doc_id, fraction))
            | "CountByFraction" >> beam.combiners.Count.PerElement()
            | "CountsToDict" >> beam.combiners.ToDict()
        )
        lowest = (  # [(hash, copies)], the ``least`` lowest distinct hashes
            documents
            | "SplitHashes" >> beam.Map(lambda d: split_hash(d.doc_id))
            | "CopiesPerHash" >> beam.combiners.Count.PerElement()
            | "LowestHashes" >> beam.combiners.Top.Smallest(max(least, 1))
        )
        rule = fraction_counts | "Rule" >> beam.Map(
            lambda counts, low: decide_rule(counts, sorted(low), fraction, least),
            low=beam.pvalue.AsSingleton(lowest),
        )
        counts = fraction_counts | "CountsUnderRule" >> beam.Map(
            lambda counts, low, r: counts_under(r, counts, sorted(low)),
            low=beam.pvalue.AsSingleton(lowest),
            r=beam.pvalue.AsSingleton(rule),
        )
        return rule, counts


class AssignSplit(beam.PTransform):
    """Documents -> (split, Document) under ``rule`` (a singleton HeldOutRule)."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def expand(self, documents):
        return documents | "ApplyRule" >> beam.Map(
            lambda d, rule: (rule.split_of(d.doc_id), d), rule=beam.pvalue.AsSingleton(self.rule)
        )


def split_warnings(statistics: Mapping, objective: str, rule_note: str = "") -> list[str]:
    """What makes a split's examples measure little, from the job's nested statistics: no eval
    split (``rule_note``), and for NSP/SOP a split whose sentence-pair labels are all one class
    (no negatives: one document, or none with a second segment to draw from)."""
    out = [rule_note] if rule_note else []
    if objective == "none":
        return out
    examples = statistics.get("examples") or {}
    negatives = statistics.get("sentence_pair_negatives") or {}
    kept = statistics.get("documents_kept") or {}
    task = "NSP" if objective == "nsp" else "SOP"
    for split in sorted(examples):
        n, neg = examples[split], negatives.get(split, 0)
        if not n or 0 < neg < n:
            continue
        label = "0 (is next)" if objective == "nsp" else "0 (in order)"
        which = label if neg == 0 else "1"
        why = (
            f" ({kept.get(split, 0):,} document(s) in the split: a random B needs another document)"
            if objective == "nsp" and neg == 0 and kept.get(split, 0) < 2
            else ""
        )
        out.append(f"every {split} example has {task} label {which}{why}: its {task} accuracy measures nothing")
    return out
