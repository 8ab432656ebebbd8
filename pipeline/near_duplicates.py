"""Near-duplicate removal (``dedup=minhash``): MinHash signatures over word n-grams, locality-sensitive
hashing bands, candidate pairs verified by their estimated Jaccard similarity, clusters of the verified
pairs, one document kept per cluster.

The math first (no Beam): ``shingle_hashes``, ``MinHasher``, ``band_keys``, ``pairs_of_bucket``,
``estimated_similarity``, ``candidate_probability``. Then the composite transforms, chained by
``FindNearDuplicates``:

    chunks of Document
      -Signatures->        nodes (doc id, name, signature) and bucket entries (band key, doc id)
      -CandidatePairs->    (doc id, doc id) of the ids sharing a bucket
      -PairSimilarities->  (name, name, similarity), each pair once, both signatures joined back to it
      -_Verify->           the pairs whose similarity reaches dedup.threshold
      -Clusters->          (removed name, kept name): connected components, the least name kept
      -PairSimilarities->  NearDuplicate: the removed text, the kept copy, their similarity

Nodes, entries and pairs travel as chunk files (``pipeline.spill``) of ``parts_for(documents)``
partitions, by a hash of the doc id or bucket key; only references pass through the runner, and a
worker holds one partition at a time (about DOCUMENTS_PER_PART documents' signatures and entries).
Only the clustering meets on one worker, and its input is the verified pairs (``Clusters``).

A text is named by (source, position, record id, doc id) of its first copy: the kept one of a cluster
is the first in input order (path, then place in the file), the same whatever the runner, the workers
or the order the inputs are listed or read in. Exact copies of a text are one node (they share an id,
hence a partition), named by the copy ``cleaning.drop_duplicates`` keeps."""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from itertools import groupby
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np

from pipeline import storage
from pipeline.config import DedupConfig
from pipeline.seeding import mix64, rng_for
from pipeline.spill import KeyedChunkWriter, ReadChunks, Spill, in_window
from pipeline.stats import STATS_TAG, CountingDoFn

# A word: a run of letters, digits or underscores; each CJK ideograph or kana on its own (those
# scripts are written without spaces, as BERT's pre-tokeniser splits them).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
WORD = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
SIGNATURE_BLOCK = 1024  # shingles hashed at once: a (permutations, block) uint64 array, 1 MiB at 128
_UINT32_MAX = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
SIGNATURE = np.dtype("<u4")  # a signature's values, as they cross the shuffles (bytes)
STAT = "near_duplicates"  # prefix of this stage's statistics: near_duplicates/<what>


# --- the math ---------------------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """The lowercased words of ``text`` (``WORD``): punctuation and spacing do not count."""
    return WORD.findall(text.lower())


def _word_hashes(words: list[str]) -> np.ndarray:
    """(W,) uint64 < 2**32: CRC-32 of each word's UTF-8 (stable across processes, unlike ``hash``)."""
    return np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))


# An odd 64-bit multiplier per position in an n-gram, so "a b" and "b a" hash apart.
_POSITION_MULTIPLIERS = rng_for("near_duplicates", "shingle positions").integers(
    0, 2**64, size=64, dtype=np.uint64, endpoint=False
) | np.uint64(1)


def shingle_hashes(words: list[str], n: int) -> np.ndarray:
    """(S,) uint64 < 2**32: a hash of each run of ``n`` consecutive words (S = W - n + 1); a text of
    fewer words is one shingle of all of them, a text of none has no shingle. Repeats are kept (they
    change no minimum)."""
    if not words:
        return np.zeros(0, dtype=np.uint64)
    w = _word_hashes(words)
    n = min(n, len(w))
    count = len(w) - n + 1
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h += w[k : k + count] * _POSITION_MULTIPLIERS[k % len(_POSITION_MULTIPLIERS)]
    return mix64(h, 0) >> _SHIFT


class MinHasher:
    """``permutations`` hash functions h(x) = ((a x + b) mod 2**64) >> 32 (multiply-shift, a odd), their
    (a, b) drawn from the job's seed (``pipeline.seeding``): the same on every worker and every run."""

    def __init__(self, permutations: int, seed: int):
        rng = rng_for("near_duplicates", "permutations", seed)
        self.a = (rng.integers(0, 2**64, size=permutations, dtype=np.uint64) | np.uint64(1))[:, None]  # (P, 1)
        self.b = rng.integers(0, 2**64, size=permutations, dtype=np.uint64)[:, None]  # (P, 1)

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        """(P,) little-endian uint32 (``SIGNATURE``, whatever the machine, so the bytes and the band
        keys are the same on every worker): the least hash of the shingles under each function."""
        least = np.full(len(self.a), _UINT32_MAX, dtype=np.uint64)
        block = np.empty((len(self.a), SIGNATURE_BLOCK), dtype=np.uint64)  # (P, block), reused in place
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), SIGNATURE_BLOCK):
                x = shingles[None, start : start + SIGNATURE_BLOCK]  # (1, n)
                h = block[:, : x.shape[1]]
                np.multiply(self.a, x, out=h)
                np.add(h, self.b, out=h)
                np.right_shift(h, _SHIFT, out=h)
                np.minimum(least, h.min(axis=1), out=least)
        return least.astype(SIGNATURE)

    def of_text(self, text: str, n: int) -> np.ndarray | None:
        """The signature of ``text``'s word n-grams; None for a text without a word."""
        shingles = shingle_hashes(words_of(text), n)
        return self.signature(shingles) if len(shingles) else None


def estimated_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of positions where two signatures agree: an unbiased estimate of the Jaccard
    similarity of their shingle sets (standard error sqrt(J (1 - J) / permutations))."""
    return float(np.count_nonzero(a == b)) / len(a)


def band_keys(signature: np.ndarray, bands: int) -> list[int]:
    """A 64-bit key per band, a hash of its index and its rows: two signatures share a band's key
    exactly when they agree on every row of that band (up to a 2**-64 collision)."""
    rows = signature.reshape(bands, -1)
    return [
        int.from_bytes(hashlib.blake2b(i.to_bytes(4, "little") + r.tobytes(), digest_size=8).digest(), "little")
        for i, r in enumerate(rows)
    ]


def pairs_of_bucket(ids: list[int], cap: int) -> Iterator[tuple[int, int]]:
    """The candidate pairs of one bucket's ``ids`` (distinct, ascending), smaller id first: every two
    of the ``cap`` smallest, and the smallest with each id beyond them (a bucket of thousands of
    copies of one boilerplate page still joins one cluster, in a number of pairs linear in its size)."""
    first = ids[:cap]
    for i, a in enumerate(first):
        for b in first[i + 1 :]:
            yield a, b
    for b in ids[cap:]:
        yield ids[0], b


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """The chance that two documents of Jaccard ``similarity`` share at least one bucket: 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def jaccard(a: set, b: set) -> float:
    """The exact Jaccard similarity of two sets (1.0 for two empty ones)."""
    return len(a & b) / len(a | b) if a or b else 1.0


# --- what the stage passes on -------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class DocumentName:
    """A text's name: its first copy's source, place in it and record id, then the text's id. Names
    order as the inputs are written (path, then position), whatever order they are read in."""

    source: str
    position: int  # ``Document.position``: the line, row or page where it starts
    record_id: str
    doc_id: int


@dataclass(frozen=True)
class NearDuplicate:
    """A text removed as a near-duplicate (every copy of ``doc_id``), the document kept in its place
    and the estimated Jaccard similarity of the two; ``direct``: false when the two joined one
    cluster only through other near-duplicates (the similarity may then be below the threshold)."""

    doc_id: int
    kept: DocumentName
    similarity: float
    direct: bool = True

    def detail(self) -> str:
        via = "" if self.direct else ", through other near-duplicates"
        return (
            f"near-duplicate of {self.kept.source} record {self.kept.record_id} "
            f"(estimated Jaccard similarity {self.similarity:.2f}{via})"
        )


@dataclass(frozen=True)
class Counted:
    """A step's output and its counts."""

    items: beam.PCollection
    stats: beam.PCollection  # dict of per-bundle counters (``pipeline.stats``)


@dataclass(frozen=True)
class NearDuplicates:
    """What ``FindNearDuplicates`` gives."""

    removed: beam.PCollection  # NearDuplicate, one per removed text
    stats: beam.PCollection  # dict of per-bundle counters under near_duplicates/ (``pipeline.stats``)


# --- partitions -------------------------------------------------------------------------------

DOCUMENTS_PER_PART = 20_000  # a partition's signatures (~700 B each), bucket entries (16 x ~40 B) and pairs: ~30 MB
MIN_PARTS = 16  # partitions at least: units of work for every core of a large machine, even for a small corpus
NODES, ENTRIES, PAIRS, HALVES = "nodes", "entries", "pairs", "halves"  # what a chunk of a partition holds


def parts_for(documents: int) -> int:
    """How many partitions the signatures, bucket entries and pairs are spread over."""
    return max(MIN_PARTS, -(-documents // DOCUMENTS_PER_PART))


def part_of(key: int, parts: int) -> int:
    """The partition of a doc id or a bucket key (both uniform 64-bit hashes)."""
    return key % parts


def _nodes_of(chunks: Iterable) -> dict:
    """Chunks of (doc id, DocumentName, signature bytes) -> {doc id: (name, signature)}, the name of
    a text's copies the one ``cleaning.drop_duplicates`` keeps (least source, record id)."""
    nodes: dict = {}
    for chunk in chunks:
        for doc_id, name, signature in chunk.read():
            held = nodes.get(doc_id)
            if held is None or _copy_order(name) < _copy_order(held[0]):
                nodes[doc_id] = (name, signature)
    return nodes


def _copy_order(name: DocumentName) -> tuple:
    return name.source, name.record_id, name.position


class _SpillingDoFn(CountingDoFn):
    """A counting DoFn that writes its values into chunk files of a partition each (``spill``)."""

    def __init__(self, spill: Spill):
        self.spill = spill

    def setup(self):
        storage.configure_filesystems(self.spill.storage_cfg)


def _by_kind(kind: str):
    return lambda part_chunk: (part_chunk[0], (kind, part_chunk[1]))


# --- signatures ---------------------------------------------------------------------------------


class _Sign(_SpillingDoFn):
    """Document -> its node (doc id, DocumentName, signature bytes) into its id's partition, and one
    bucket entry (band key, doc id) per band into the key's partition. Only (part, SpilledChunk)
    references leave: nodes on the main output, entries on ``entries``. A document without a word
    gives nothing (counted)."""

    def __init__(self, cfg: DedupConfig, seed: int, spill: Spill):
        super().__init__(spill)
        self.cfg, self.seed = cfg, seed

    def setup(self):
        super().setup()
        self._hasher = MinHasher(self.cfg.permutations, self.seed)

    def start_bundle(self):
        super().start_bundle()
        self._writer = KeyedChunkWriter(self.spill, "signatures")

    def _references(self, flushed, window=False):
        for (kind, part), chunk in flushed:
            ref = in_window((part, chunk)) if window else (part, chunk)
            yield beam.pvalue.TaggedOutput(ENTRIES, ref) if kind == ENTRIES else ref

    def process(self, doc, parts: int):
        signature = self._hasher.of_text(" ".join(doc.sentences), self.cfg.shingle_words)
        if signature is None:
            self.count(f"{STAT}/documents_without_words")
            return
        self.count(f"{STAT}/documents_signed")
        name = DocumentName(doc.source, doc.position, doc.record_id, doc.doc_id)
        flushed = self._writer.add((NODES, part_of(doc.doc_id, parts)), (doc.doc_id, name, signature.tobytes()))
        for key in band_keys(signature, self.cfg.bands):
            flushed += self._writer.add((ENTRIES, part_of(key, parts)), (key, doc.doc_id))
        yield from self._references(flushed)

    def finish_bundle(self):
        yield from self._references(self._writer.flush(), window=True)
        yield from super().finish_bundle()


@dataclass(frozen=True)
class Signed:
    """What ``Signatures`` gives: references to chunk files, by partition."""

    nodes: beam.PCollection  # (part, SpilledChunk of (doc id, DocumentName, signature bytes))
    entries: beam.PCollection  # (part, SpilledChunk of (band key, doc id))
    stats: beam.PCollection


class Signatures(beam.PTransform):
    """Chunks of Document -> Signed: every document's signature and bucket entries, written to the
    chunk files of ``parts`` (a singleton int) partitions. Exact copies share an id, hence a
    partition, where they become one node."""

    def __init__(self, cfg: DedupConfig, seed: int, spill: Spill, parts):
        super().__init__()
        self.cfg, self.seed, self.spill, self.parts = cfg, seed, spill, parts

    def expand(self, doc_chunks) -> Signed:
        signed = (
            doc_chunks
            | "Documents" >> ReadChunks(self.spill)
            | "Sign"
            >> beam.ParDo(
                _Sign(self.cfg, self.seed, self.spill), parts=beam.pvalue.AsSingleton(self.parts)
            ).with_outputs(ENTRIES, STATS_TAG, main=NODES)
        )
        return Signed(signed[NODES], signed[ENTRIES], signed[STATS_TAG])


# --- candidate pairs ----------------------------------------------------------------------------


class _PairsOfPartition(_SpillingDoFn):
    """(part, chunks of bucket entries) -> (part, SpilledChunk of (doc id, doc id)): the pairs of each
    bucket of the partition (``pairs_of_bucket``), each into its first id's partition. A worker
    holds one partition's entries, sorted by key."""

    def __init__(self, spill: Spill, cap: int):
        super().__init__(spill)
        self.cap = cap

    def process(self, element, parts: int):
        _, chunks = element
        entries = sorted({entry for chunk in chunks for entry in chunk.read()})  # copies' entries repeat
        writer = KeyedChunkWriter(self.spill, "pairs")
        for _, bucket in groupby(entries, key=lambda entry: entry[0]):
            ids = [doc_id for _, doc_id in bucket]
            if len(ids) > self.cap:
                self.count(f"{STAT}/capped_buckets")
                self.count(f"{STAT}/documents_beyond_bucket_cap", len(ids) - self.cap)
            for a, b in pairs_of_bucket(ids, self.cap):
                yield from writer.add(part_of(a, parts), (a, b))
        yield from writer.flush()


class CandidatePairs(beam.PTransform):
    """(part, chunks of bucket entries) -> (part, SpilledChunk of (doc id, doc id)), smaller id first:
    the texts that agree on every row of at least one of ``cfg.bands`` bands (a pair sharing several
    bands is listed once per band, and counted once where it is verified)."""

    def __init__(self, cfg: DedupConfig, spill: Spill, parts):
        super().__init__()
        self.cfg, self.spill, self.parts = cfg, spill, parts

    def expand(self, entries) -> Counted:
        pairs = (
            entries
            | "ByPart" >> beam.GroupByKey()
            | "PairsOfBuckets"
            >> beam.ParDo(
                _PairsOfPartition(self.spill, self.cfg.max_bucket_documents), parts=beam.pvalue.AsSingleton(self.parts)
            ).with_outputs(STATS_TAG, main=PAIRS)
        )
        return Counted(pairs[PAIRS], pairs[STATS_TAG])


# --- verification -------------------------------------------------------------------------------


class _WithFirstSignature(_SpillingDoFn):
    """(part, [(NODES or PAIRS, chunk)...]) -> (part of b, SpilledChunk of (b, name a, signature a)):
    each distinct pair (a, b) of the partition (a's) with a's node, sent on to b's partition. A
    partition without pairs is not read."""

    def process(self, element, parts: int):
        _, tagged = element
        pair_chunks = [chunk for kind, chunk in tagged if kind == PAIRS]
        if not pair_chunks:
            return
        nodes = _nodes_of(chunk for kind, chunk in tagged if kind == NODES)
        writer = KeyedChunkWriter(self.spill, "halves")
        for a, b in sorted({pair for chunk in pair_chunks for pair in chunk.read()}):
            name, signature = nodes[a]
            yield from writer.add(part_of(b, parts), (b, name, signature))
        yield from writer.flush()


class _Similarities(beam.DoFn):
    """(part, [(NODES or HALVES, chunk)...]) -> (name a, name b, estimated similarity) for each half
    pair (b, name a, signature a) of the partition (b's), read a chunk at a time."""

    def __init__(self, spill: Spill):
        self.spill = spill

    def setup(self):
        storage.configure_filesystems(self.spill.storage_cfg)

    def process(self, element):
        _, tagged = element
        half_chunks = [chunk for kind, chunk in tagged if kind == HALVES]
        if not half_chunks:
            return
        nodes = _nodes_of(chunk for kind, chunk in tagged if kind == NODES)
        for chunk in half_chunks:
            for b, name_a, signature_a in chunk.read():
                name_b, signature_b = nodes[b]
                a, b_ = (np.frombuffer(sig, dtype=SIGNATURE) for sig in (signature_a, signature_b))
                yield name_a, name_b, estimated_similarity(a, b_)


class PairSimilarities(beam.PTransform):
    """(part, SpilledChunk of (doc id a, doc id b)) -> (name a, name b, estimated similarity), once per
    distinct pair: both signatures joined back to the pair in two grouped passes over ``nodes``
    (Signed.nodes), by a's partition, then by b's (the pair carries a's signature to b's). Each pass
    reads, partition by partition, only the partitions that have pairs."""

    def __init__(self, nodes, spill: Spill, parts):
        super().__init__()
        self.nodes, self.spill, self.parts = nodes, spill, parts

    def expand(self, pairs):
        halves = (
            (self.nodes | "FirstNodes" >> beam.Map(_by_kind(NODES)), pairs | "Pairs" >> beam.Map(_by_kind(PAIRS)))
            | "NodesAndPairs" >> beam.Flatten()
            | "ByFirst" >> beam.GroupByKey()
            | "WithFirst" >> beam.ParDo(_WithFirstSignature(self.spill), parts=beam.pvalue.AsSingleton(self.parts))
        )
        return (
            (self.nodes | "SecondNodes" >> beam.Map(_by_kind(NODES)), halves | "Halves" >> beam.Map(_by_kind(HALVES)))
            | "NodesAndHalves" >> beam.Flatten()
            | "BySecond" >> beam.GroupByKey()
            | "Similarity" >> beam.ParDo(_Similarities(self.spill))
        )


class _Verify(CountingDoFn):
    """(name a, name b, similarity) -> the same when the similarity reaches ``threshold``."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def process(self, pair):
        self.count(f"{STAT}/candidate_pairs")
        if pair[2] >= self.threshold:
            self.count(f"{STAT}/verified_pairs")
            yield pair


class _SpillPairs(_SpillingDoFn):
    """(doc id a, doc id b) -> (part of a, SpilledChunk of pairs), for ``PairSimilarities``."""

    def start_bundle(self):
        super().start_bundle()
        self._writer = KeyedChunkWriter(self.spill, "pairs")

    def process(self, pair, parts: int):
        yield from self._writer.add(part_of(pair[0], parts), pair)

    def finish_bundle(self):
        for ref in self._writer.flush():
            yield in_window(ref)


# --- clusters -----------------------------------------------------------------------------------


def _root(parent: dict, name):
    while parent[name] != name:
        parent[name] = parent[parent[name]]  # path halving
        name = parent[name]
    return name


def _union(parent: dict, a, b) -> None:
    """Join the clusters of a and b under the smaller root: every root is its cluster's least name."""
    parent.setdefault(a, a)
    parent.setdefault(b, b)
    ra, rb = _root(parent, a), _root(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


class _UnionFind(beam.CombineFn):
    """Verified pairs -> [(name, its cluster's least name)] for every name of a pair that is not
    the least. The accumulator holds one parent per name seen, not the pairs."""

    def create_accumulator(self):
        return {}

    def add_input(self, parent, pair):
        _union(parent, pair[0], pair[1])
        return parent

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for parent in accumulators:
            for name, up in parent.items():
                _union(merged, name, up)
        return merged

    def extract_output(self, parent):
        return sorted((name, root) for name in parent if (root := _root(parent, name)) != name)


class _CountClusters(CountingDoFn):
    """The one list of (removed, kept) -> its pairs, counting the clusters and the texts removed."""

    def process(self, removals):
        self.count(f"{STAT}/clusters", len({kept for _, kept in removals}))
        self.count(f"{STAT}/texts_removed", len(removals))
        yield from removals


class Clusters(beam.PTransform):
    """Verified pairs -> (removed name, kept name): the connected components of the pairs, the
    least name of each kept. This step runs on one worker: its input is the verified pairs, and the
    names it holds are those of the texts that have a near-duplicate, so its memory follows the
    number of duplicates in the corpus, not the number of documents."""

    def expand(self, verified) -> Counted:
        out = (
            verified
            | "Components" >> beam.CombineGlobally(_UnionFind())
            | "Removals" >> beam.ParDo(_CountClusters()).with_outputs(STATS_TAG, main="removals")
        )
        return Counted(out.removals, out[STATS_TAG])


def _near_duplicate(threshold: float):
    def make(removed: DocumentName, kept: DocumentName, similarity: float) -> NearDuplicate:
        return NearDuplicate(removed.doc_id, kept, similarity, direct=similarity >= threshold)

    return make


class FindNearDuplicates(beam.PTransform):
    """Chunks of Document -> NearDuplicates: every text to remove, with the document kept in its
    place and their estimated similarity (the chain in the module's docstring). ``doc_counts`` (one
    {split: documents}) sizes the partitions (``parts_for``). Signatures, bucket entries and pairs
    cross the shuffles as chunk files (``pipeline.spill``), a partition of at most about
    DOCUMENTS_PER_PART documents' worth held by a worker at a time; only references pass through
    the runner. Only ``Clusters`` gathers, and only the verified pairs."""

    def __init__(self, cfg: DedupConfig, seed: int, spill: Spill, doc_counts):
        super().__init__()
        self.cfg, self.seed, self.spill, self.doc_counts = cfg, seed, spill, doc_counts

    def expand(self, doc_chunks) -> NearDuplicates:
        spill = self.spill
        parts = self.doc_counts | "Parts" >> beam.Map(lambda counts: parts_for(sum(counts.values())))
        signed = doc_chunks | "Signatures" >> Signatures(self.cfg, self.seed, spill, parts)
        candidates = signed.entries | "CandidatePairs" >> CandidatePairs(self.cfg, spill, parts)
        verified = (
            candidates.items
            | "Similarities" >> PairSimilarities(signed.nodes, spill, parts)
            | "Verify" >> beam.ParDo(_Verify(self.cfg.threshold)).with_outputs(STATS_TAG, main="verified")
        )
        clusters = verified.verified | "Clusters" >> Clusters()
        removed = (
            clusters.items
            | "RemovedAndKept" >> beam.MapTuple(lambda removed, kept: (removed.doc_id, kept.doc_id))
            | "SpillRemovals" >> beam.ParDo(_SpillPairs(spill), parts=beam.pvalue.AsSingleton(parts))
            | "SimilarityToKept" >> PairSimilarities(signed.nodes, spill, parts)
            | "NearDuplicate" >> beam.MapTuple(_near_duplicate(self.cfg.threshold))
        )
        stats = (signed.stats, candidates.stats, verified[STATS_TAG], clusters.stats) | "Stats" >> beam.Flatten()
        return NearDuplicates(removed=removed, stats=stats)
