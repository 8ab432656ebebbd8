"""Job statistics: counted per bundle inside the DoFns, summed into the manifest, printed at the end.

Counting in the data (not only Beam Metrics) keeps the manifest's numbers exact and the same
on every runner; the same counts also go to ``Metrics.counter`` for runners' monitoring UIs.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import progress

STATS_TAG = "stats"
NAMESPACE = "bert_pretrain"


class CountingDoFn(beam.DoFn):
    """A DoFn that counts into ``self.count`` and emits one Counter per bundle on the
    ``stats`` output. A retried bundle's outputs are discarded with it, so counts stay exact."""

    def start_bundle(self):
        self._counts: Counter = Counter()

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self._counts[key] += n
            # Runners' metric names are safest in ASCII (keys such as "accents_stripped/é->e" are not).
            beam.metrics.Metrics.counter(NAMESPACE, key.encode("ascii", "backslashreplace").decode()).inc(n)
            progress.note(key, n)

    def finish_bundle(self):
        progress.flush()
        if self._counts:
            yield beam.pvalue.TaggedOutput(
                STATS_TAG, WindowedValue(dict(self._counts), MIN_TIMESTAMP, [GlobalWindow()])
            )


class SumCounts(beam.CombineFn):
    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, counts):
        acc.update(counts)
        return acc

    def merge_accumulators(self, accs):
        out = Counter()
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return dict(sorted(acc.items()))


def nest(flat: Mapping[str, int]) -> dict:
    """{"rejected/redirect": 3} -> {"rejected": {"redirect": 3}} for a readable manifest."""
    out: dict = {}
    for key, value in sorted(flat.items()):
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def format_summary(
    stats: Mapping,
    seconds: float,
    output_dir: str,
    casing: str = "",
    failed: bool = False,
    vocabulary: str = "",
    warnings: Sequence[str] = (),
) -> str:
    """The readable end-of-job report; ``casing``: why the text was (not) lowercased / stripped;
    ``vocabulary``: its size and where it came from; ``warnings``: the manifest's, one line each."""
    g = lambda *path: _get(stats, path)  # noqa: E731
    docs_read = sum(g("documents_read").values()) if isinstance(g("documents_read"), dict) else 0
    tokens = sum(v for v in (g("tokens") or {}).values())
    outcome = "FAILED after" if failed else "finished in"
    lines = [
        f"bert-pretrain data job {outcome} {seconds:,.1f} s -> {output_dir}",
        f"  files read        {g('files_read') or 0:>12,}",
        f"  documents read    {docs_read:>12,}   " + _inline(g("documents_read")),
        f"  documents kept    {sum((g('documents_kept') or {}).values()):>12,}   " + _inline(g("documents_kept")),
        f"  sentences         {sum((g('sentences') or {}).values()):>12,}",
        f"  tokens            {tokens:>12,}",
        f"  [UNK] tokens      {sum((g('unk_tokens') or {}).values()):>12,}   " + _unk_rates(stats),
        f"  examples          {sum((g('examples') or {}).values()):>12,}   " + _inline(g("examples")),
        f"  example tokens    {sum((g('example_tokens') or {}).values()):>12,}",
    ]
    rejected = g("rejected") or {}
    lines.append(f"  rejected/repaired {sum(rejected.values()):>12,}   " + (_inline(rejected) or "none"))
    if vocabulary:
        lines.append(f"  vocabulary        {vocabulary}")
    if casing:
        lines.append(f"  casing            {casing}")
    fit = vocabulary_fit(stats)
    if fit:
        pieces = ", ".join(f"{split} {p:.2f}" for split, (p, _) in fit.items())
        single = ", ".join(f"{split} {c:.2%}" for split, (_, c) in fit.items())
        lines.append(f"  vocabulary fit    pieces per word ({pieces}); words in single characters ({single})")
    stripped = g("accents_stripped") or {}
    if stripped:
        top = sorted(stripped.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_STRIPPED]
        more = f", {len(stripped) - TOP_STRIPPED} more" if len(stripped) > TOP_STRIPPED else ""
        lines.append(
            f"  accents stripped  {sum(stripped.values()):>12,}   ("
            + ", ".join(f"{k} {v:,}" for k, v in top)
            + f"{more})"
        )
    lines += [f"  warning           {w}" for w in warnings]
    if seconds > 0:
        lines.append(f"  throughput        {docs_read / seconds:>12,.1f} docs/s   {tokens / seconds:,.0f} tokens/s")
    return "\n".join(lines)


TOP_STRIPPED = 8  # characters changed by accent stripping shown in the summary


def vocabulary_fit(stats: Mapping) -> dict[str, tuple[float, float]]:
    """{split: (pieces per word, fraction of words split into single characters)} over the words
    with letters (nested statistics ``words``, ``word_pieces``, ``single_char_words``), for the
    splits with words; "all" first when there are several splits."""
    words, pieces, single = (_get(stats, (k,)) for k in ("words", "word_pieces", "single_char_words"))
    words = words if isinstance(words, Mapping) else {}
    pieces = pieces if isinstance(pieces, Mapping) else {}
    single = single if isinstance(single, Mapping) else {}
    fit = {split: (pieces.get(split, 0) / n, single.get(split, 0) / n) for split, n in sorted(words.items()) if n}
    total = sum(words.values())
    if len(fit) > 1:
        fit = {"all": (sum(pieces.values()) / total, sum(single.values()) / total), **fit}
    return fit


def unk_rates(stats: Mapping) -> dict[str, float]:
    """[UNK] tokens / tokens per split (nested statistics), for the splits with tokens."""
    tokens, unk = _get(stats, ("tokens",)), _get(stats, ("unk_tokens",))
    tokens = tokens if isinstance(tokens, Mapping) else {}
    unk = unk if isinstance(unk, Mapping) else {}
    return {split: unk.get(split, 0) / n for split, n in sorted(tokens.items()) if n}


def _unk_rates(stats: Mapping) -> str:
    """ "(eval 0.02%, train 0.01%)"."""
    rates = unk_rates(stats)
    return "(" + ", ".join(f"{k} {r:.2%}" for k, r in rates.items()) + ")" if rates else ""


def _get(stats, path):
    node = stats
    for p in path:
        if not isinstance(node, Mapping) or p not in node:
            return None
        node = node[p]
    return node


def _inline(d) -> str:
    if not isinstance(d, Mapping) or not d:
        return ""
    return "(" + ", ".join(f"{k} {v:,}" for k, v in sorted(d.items())) + ")"
