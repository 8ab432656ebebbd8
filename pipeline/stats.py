"""Job statistics: counted per bundle inside the DoFns, summed into the manifest, printed at the end.

Counting in the data (not only Beam Metrics) keeps the manifest's numbers exact and the same
on every runner; the same counts also go to ``Metrics.counter`` for runners' monitoring UIs.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

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
            beam.metrics.Metrics.counter(NAMESPACE, key).inc(n)

    def finish_bundle(self):
        if self._counts:
            yield beam.pvalue.TaggedOutput(
                STATS_TAG, WindowedValue(dict(self._counts), MIN_TIMESTAMP, [GlobalWindow()]))


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


def format_summary(stats: Mapping, seconds: float, output_dir: str) -> str:
    """The readable end-of-job report."""
    g = lambda *path: _get(stats, path)  # noqa: E731
    docs_read = sum(g("documents_read").values()) if isinstance(g("documents_read"), dict) else 0
    tokens = sum(v for v in (g("tokens") or {}).values())
    lines = [
        f"bert-pretrain data job finished in {seconds:,.1f} s -> {output_dir}",
        f"  files read        {g('files_read') or 0:>12,}",
        f"  documents read    {docs_read:>12,}   " + _inline(g("documents_read")),
        f"  documents kept    {sum((g('documents_kept') or {}).values()):>12,}   " + _inline(g("documents_kept")),
        f"  sentences         {sum((g('sentences') or {}).values()):>12,}",
        f"  tokens            {tokens:>12,}",
        f"  examples          {sum((g('examples') or {}).values()):>12,}   " + _inline(g("examples")),
        f"  example tokens    {sum((g('example_tokens') or {}).values()):>12,}",
    ]
    rejected = g("rejected") or {}
    lines.append(f"  rejected/repaired {sum(rejected.values()):>12,}   " + (_inline(rejected) or "none"))
    if seconds > 0:
        lines.append(f"  throughput        {docs_read / seconds:>12,.1f} docs/s   {tokens / seconds:,.0f} tokens/s")
    return "\n".join(lines)


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

