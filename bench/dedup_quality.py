"""Near-duplicate removal (dedup=minhash) on real text with planted copies: recall, false positives, cost.

    python bench/dedup_quality.py [--work DIR] [--parts 1 2 3] [--edit-rates 0.01 0.02 0.03 0.05] [--cost-scales 16 64]

The corpus is real prose: the embedded Wikipedia sample's articles (their text as the reader gives it,
paragraphs kept) and gensim's Lee corpus (lee_background.cor and lee.cor, Australian news articles of
one line each, their sentences grouped three to a paragraph). A document whose word 2-gram Jaccard
similarity with an earlier one is 0.5 or more is left out first (the Lee corpus repeats some
articles), so every document of the corpus is distinct. Each gets planted copies, in a file that
sorts after the corpus (the original is then the first in input order, the one to keep):

  edited      ``rate`` of its words changed: a third deleted, a third replaced by another word of the
              corpus, a third followed by an inserted word (3% unless said)
  reordered   its paragraphs in another order
  header      a line of 5 to 15 words (a copyright, a byline, a share prompt) before or after it

1. The job as a user runs it (``python -m pipeline ... dedup=minhash``, bert-base-uncased's
   vocabulary, 2 workers) on the corpus and one copy of each kind of every document. Recall per
   kind: copies rejected as ``near_duplicate`` naming their own original. False positives: corpus
   documents rejected, and copies whose kept document is another one's original, over the corpus'
   documents (goals: recall >= 0.95, false positives < 0.5%).
2. Each kind alone, edits at each ``--edit-rates``, through ``FindNearDuplicates`` (the job's
   transform, FnApiRunner in this process): the recall of a kind without help from the other copies.
3. Cost: the job with dedup=none and dedup=minhash on ``--cost-scales`` times the sample (pre-split
   text as in bench/pipeline_memory.py, each copy's sentences with their words in another order so no
   copy is a near-duplicate of another), alternated, best of ``--repeats``: the added time as a
   fraction of the job's, and the peak memory of the runner and of the largest worker.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import random
import re
import sys
import tempfile
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline.config import CleaningConfig, DedupConfig, SourceConfig, sample_corpus_path  # noqa: E402
from pipeline.documents import prepare_document  # noqa: E402
from pipeline.near_duplicates import jaccard, shingle_hashes, words_of  # noqa: E402
from pipeline.records import RawDocument  # noqa: E402
from pipeline.sentences import paragraphs_of, split_sentences  # noqa: E402
from pipeline.sources import read_source  # noqa: E402

WORKERS = 2
DISTINCT_BELOW = 0.5  # a corpus document's word 2-gram Jaccard similarity with every earlier one
HEADERS = (
    "Copyright 2024 Example News Network. All rights reserved.",
    "From Wikipedia, the free encyclopedia.",
    "Posted by the editorial team on 12 March 2024.",
    "This story was first published in the morning edition.",
)
FOOTERS = (
    "Share this story on Facebook, Twitter or by email.",
    "Retrieved from the archive on 12 March 2024. Categories: archived pages.",
    "Reporting by our correspondents; editing by the news desk. Comments are closed.",
    "Read more stories like this in our weekly newsletter.",
)
DETAIL = re.compile(r"near-duplicate of (?P<source>.+) record (?P<record>.+) \(estimated Jaccard similarity")


@dataclass(frozen=True)
class Text:
    """A document of the bench's corpus: ``record_id`` names it in the job's rejects."""

    record_id: str
    text: str  # paragraphs separated by a blank line


# --- the corpus -------------------------------------------------------------------------------------


def wikipedia_texts() -> list[Text]:
    """The sample's articles that the job keeps, as the reader gives them (paragraphs kept)."""
    path = sample_corpus_path()
    raws = [r for r in read_source(path, lambda: open(path, "rb"), SourceConfig()) if isinstance(r, RawDocument)]
    return [Text(f"wiki-{r.record_id}", r.text) for r in raws if prepare_document(r, CleaningConfig())[0] is not None]


def lee_texts() -> list[Text]:
    """gensim's Lee corpus: one news article a line, three sentences a paragraph."""
    import gensim

    out = []
    for name in ("lee_background.cor", "lee.cor"):
        path = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", name)
        with open(path, encoding="latin-1") as f:
            for i, line in enumerate(f):
                sentences = split_sentences([line.strip()])
                if len(line) >= CleaningConfig().min_document_chars:
                    paragraphs = [" ".join(sentences[k : k + 3]) for k in range(0, len(sentences), 3)]
                    out.append(Text(f"{name.removesuffix('.cor')}-{i}", "\n\n".join(paragraphs)))
    return out


def distinct(texts: list[Text]) -> tuple[list[Text], list[tuple[Text, Text, float]]]:
    """The texts with no word 2-gram Jaccard similarity of DISTINCT_BELOW or more with an earlier
    one; and the others, each with the earlier text and their similarity."""
    kept: list[tuple[Text, set]] = []
    left_out = []
    for t in texts:
        grams = set(shingle_hashes(words_of(t.text), 2).tolist())
        close = next(
            ((k, s) for k, g in kept if len(grams) >= 0.5 * len(g) and (s := jaccard(grams, g)) >= DISTINCT_BELOW),
            None,
        )
        if close:
            left_out.append((t, *close))
        else:
            kept.append((t, grams))
    return [t for t, _ in kept], left_out


# --- planted copies -------------------------------------------------------------------------------


def edited(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    """``rate`` of the words changed: deleted, replaced, or followed by an inserted word (a third
    each); at least one word is replaced (a short text could otherwise come out unchanged: an exact
    copy, which the job drops as a duplicate before near-duplicates are looked for)."""
    out = []
    for paragraph in paragraphs_of(text):
        words = []
        for w in paragraph.split(" "):
            r = rng.random()
            if r < rate / 3:
                continue
            words.append(rng.choice(vocabulary) if r < 2 * rate / 3 else w)
            if 2 * rate / 3 <= r < rate:
                words.append(rng.choice(vocabulary))
        out.append(" ".join(words))
    copy = "\n\n".join(out)
    if copy == text:
        words = copy.split(" ")
        i = rng.randrange(len(words))
        words[i] = next(w for w in (rng.choice(vocabulary) for _ in range(100)) if w != words[i])
        copy = " ".join(words)
    return copy


def reordered(text: str, rng: random.Random) -> str:
    """The paragraphs in another order (``plant`` gives this kind only to texts of two or more)."""
    paragraphs = paragraphs_of(text)
    order = list(range(len(paragraphs)))
    while len(order) > 1 and order == sorted(order):
        rng.shuffle(order)
    return "\n\n".join(paragraphs[i] for i in order)


def with_header(text: str, rng: random.Random) -> str:
    """A header line before, or a footer line after, the text (even odds)."""
    if rng.random() < 0.5:
        return rng.choice(HEADERS) + "\n\n" + text
    return text + "\n\n" + rng.choice(FOOTERS)


def plant(texts: list[Text], kind: str, rate: float = 0.03, seed: int = 0) -> list[Text]:
    """One copy of ``kind`` (edited, reordered, header, all: the three at once) of each text, named
    ``<kind>:<original's record id>``; reordered: of each text of two paragraphs or more."""
    rng = random.Random(f"{seed}-{kind}-{rate}")
    vocabulary = sorted({w for t in texts for w in t.text.split()})
    change = {
        "edited": lambda t: edited(t, rate, rng, vocabulary),
        "reordered": lambda t: reordered(t, rng),
        "header": lambda t: with_header(t, rng),
        "all": lambda t: with_header(reordered(edited(t, rate, rng, vocabulary), rng), rng),
    }[kind]
    if kind == "reordered":
        texts = [t for t in texts if len(paragraphs_of(t.text)) > 1]
    return [Text(f"{kind}:{t.record_id}", change(t.text)) for t in texts]


def write_jsonl(path: str, texts: list[Text]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"id": t.record_id, "text": t.text}) + "\n")
    return path


# --- scoring --------------------------------------------------------------------------------------


@dataclass
class Score:
    planted: int = 0
    found: int = 0  # planted copies removed, their own original kept
    wrong: int = 0  # removals whose kept document is of another family

    @property
    def recall(self) -> float:
        return self.found / max(self.planted, 1)


def family(record_id: str) -> str:
    """The original's record id: a copy's name after its kind."""
    return record_id.split(":", 1)[-1]


def score(removed: dict[str, str], corpus: list[Text], copies: list[Text]) -> tuple[dict[str, Score], int, int]:
    """``removed``: {record id: kept record id}. Returns ({kind: Score}, corpus documents removed,
    removals keeping another family's document)."""
    kinds: dict[str, Score] = {}
    for c in copies:
        s = kinds.setdefault(c.record_id.split(":", 1)[0], Score())
        s.planted += 1
        if c.record_id in removed and family(removed[c.record_id]) == family(c.record_id):
            s.found += 1
    originals_removed = sum(t.record_id in removed for t in corpus)
    wrong = sum(family(kept) != family(r) for r, kept in removed.items())
    return kinds, originals_removed, wrong


def removed_by_job(out: str) -> dict[str, str]:
    """{record id: kept record id} of the job's near_duplicate rejects."""
    removed = {}
    for path in glob.glob(os.path.join(out, "rejects", "*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                if r["reason"] == "near_duplicate":
                    removed[r["record_id"]] = DETAIL.match(r["detail"]).group("record")
    return removed


def removed_by_transform(texts: list[Text], cfg: DedupConfig, work: str) -> dict[str, str]:
    """{record id: kept record id} from the job's FindNearDuplicates on ``texts`` (one source, in order)."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from pipeline.documents import Document
    from pipeline.near_duplicates import FindNearDuplicates
    from pipeline.seeding import stable_id
    from pipeline.spill import Spill, SpillChunks

    docs = [
        Document(stable_id(t.text), "bench.jsonl", t.record_id, "", (t.text,), len(t.text), i)
        for i, t in enumerate(texts)
    ]
    names = {d.doc_id: d.record_id for d in docs}
    where = tempfile.mkdtemp(dir=work)
    spill = Spill(os.path.join(where, "spill"), 1_000_000, 64_000_000)
    result = os.path.join(where, "removed.pickle")

    def save(found):
        with open(result, "wb") as f:
            pickle.dump([(d.doc_id, d.kept.record_id) for d in found], f)

    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
        found = (
            p
            | "Docs" >> beam.Create(docs)
            | SpillChunks(spill, "documents")
            | FindNearDuplicates(cfg, 12345, spill, p | "Counts" >> beam.Create([{"train": len(docs)}]))
        )
        _ = found.removed | beam.combiners.ToList() | beam.Map(save)
    with open(result, "rb") as f:
        return {names[doc_id]: kept for doc_id, kept in pickle.load(f)}


# --- the three parts ------------------------------------------------------------------------------


def job_with_planted_copies(corpus: list[Text], work: str, rate: float) -> None:
    from pipeline_memory import minilm_vocab
    from pipeline_throughput import run_job

    copies = [c for kind in ("edited", "reordered", "header") for c in plant(corpus, kind, rate)]
    inputs = [
        write_jsonl(os.path.join(work, "corpus.jsonl"), corpus),
        write_jsonl(os.path.join(work, "planted.jsonl"), copies),
    ]
    out = os.path.join(work, "job")
    r = run_job(inputs, out, WORKERS, minilm_vocab(), ["dedup=minhash", "masking.dupe_factor=1"])
    with open(os.path.join(out, "manifest.json")) as f:
        stats = json.load(f)["statistics"]
    removed = removed_by_job(out)
    kinds, originals, wrong = score(removed, corpus, copies)
    print(
        f"1. the job (dedup=minhash, {WORKERS} workers) on {len(corpus)} documents + {len(copies)} planted copies "
        f"(edits at {rate:.0%}): {r['job_seconds']:.1f} s"
    )
    for kind, s in kinds.items():
        print(f"   {kind:10s} recall {s.recall:.3f} ({s.found} of {s.planted})")
    total = sum(s.found for s in kinds.values()) / sum(s.planted for s in kinds.values())
    print(f"   all kinds  recall {total:.3f}   (goal >= 0.95)")
    fp = originals + wrong
    print(
        f"   false positives: {originals} corpus documents removed, {wrong} removals keeping another's "
        f"document = {fp / len(corpus):.2%} of {len(corpus)} distinct documents   (goal < 0.5%)"
    )
    of_copies = [kept for r, kept in removed.items() if r != family(r)]
    originals_kept = sum(family(kept) == kept for kept in of_copies)
    print(
        f"   the document kept is the original (the first in input order) for {originals_kept} of {len(of_copies)} copies removed"
    )
    print(f"   statistics: near_duplicates {stats.get('near_duplicates')}, rejected {stats.get('rejected')}")


def each_kind_alone(corpus: list[Text], work: str, rates: list[float]) -> None:
    cfg = DedupConfig(enabled=True)
    print(f"\n2. each kind alone (FindNearDuplicates, defaults: {cfg})")
    plan = [("edited", r) for r in rates] + [("reordered", 0.0), ("header", 0.0), ("all", 0.02)]
    for kind, rate in plan:
        copies = plant(corpus, kind, rate, seed=1)
        kinds, originals, wrong = score(removed_by_transform(corpus + copies, cfg, work), corpus, copies)
        s = kinds[kind]
        what = f"{kind} {rate:.0%}" if kind in ("edited", "all") else kind
        print(
            f"   {what:14s} recall {s.recall:.3f} ({s.found} of {s.planted}); false positives "
            f"{originals + wrong} ({(originals + wrong) / len(corpus):.2%})"
        )


def shuffled_copy_text(docs: list[list[str]], k: int) -> str:
    """Copy ``k`` of the sample as pre-split text, each sentence's words in an order of its own."""
    rng = random.Random(k)
    out = []
    for sentences in docs:
        lines = []
        for s in sentences:
            words = s.split(" ")
            rng.shuffle(words)
            lines.append(" ".join(words))
        out.append("\n".join(lines) + "\n\n")
    return "".join(out)


def cost(work: str, scales: list[int], repeats: int) -> None:
    from pipeline_memory import SCALED, minilm_vocab, sample_documents
    from pipeline_throughput import run_job

    docs = sample_documents()
    print(
        f"\n3. cost: the sample x {scales} as pre-split text, copies made distinct; {WORKERS} workers; {' '.join(SCALED)}"
    )
    for scale in scales:
        path = os.path.join(work, f"distinct-x{scale}.txt")
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as f:
                for k in range(scale):
                    f.write(shuffled_copy_text(docs, k))
        best: dict[str, dict] = {}
        for _ in range(repeats):
            for dedup in ("none", "minhash"):
                r = run_job([path], os.path.join(work, "cost"), WORKERS, minilm_vocab(), [*SCALED, f"dedup={dedup}"])
                if dedup not in best or r["job_seconds"] < best[dedup]["job_seconds"]:
                    best[dedup] = r
        off, on = best["none"], best["minhash"]
        cpu = {k: r["worker_cpu"] + r["runner_cpu"] for k, r in best.items()}
        print(
            f"   {scale:3d}x: {off['tokens']:,} tokens, {off['docs']:,} documents kept; dedup=none {off['job_seconds']:.1f} s "
            f"({cpu['none']:.0f} CPU s), dedup=minhash {on['job_seconds']:.1f} s ({cpu['minhash']:.0f} CPU s, "
            f"{on['docs']:,} kept): {on['job_seconds'] / off['job_seconds'] - 1:+.0%} of the job's time, "
            f"{cpu['minhash'] / cpu['none'] - 1:+.0%} of its CPU time; peak RSS runner {off['runner_peak'] / 2**20:,.0f} -> "
            f"{on['runner_peak'] / 2**20:,.0f} MiB, largest worker {off['worker_peak'] / 2**20:,.0f} -> "
            f"{on['worker_peak'] / 2**20:,.0f} MiB",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--edit-rates", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05])
    ap.add_argument("--cost-scales", type=int, nargs="*", default=[16, 64])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each cost measurement (best kept)")
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], help="which of the three to run")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench-dedup-")
    os.makedirs(work, exist_ok=True)
    texts = wikipedia_texts() + lee_texts()
    corpus, left_out = distinct(texts)
    sizes = sorted(len(words_of(t.text)) for t in corpus)
    print(
        f"# near-duplicate removal on {len(corpus)} distinct real documents ({sizes[0]:,} to {sizes[-1]:,} words, "
        f"median {sizes[len(sizes) // 2]:,}): the Wikipedia sample's articles and gensim's Lee corpus; "
        f"{len(left_out)} left out as near-copies of an earlier one "
        f"({', '.join(f'{t.record_id}~{k.record_id} {s:.2f}' for t, k, s in left_out)})\n"
    )
    if 1 in args.parts:
        job_with_planted_copies(corpus, work, rate=0.03)
    if 2 in args.parts:
        each_kind_alone(corpus, work, args.edit_rates)
    if 3 in args.parts:
        cost(work, args.cost_scales, args.repeats)


if __name__ == "__main__":
    main()
