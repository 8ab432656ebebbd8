"""Near-duplicate removal (``dedup=minhash``): MinHash signatures over word n-grams, locality-sensitive
hashing bands, candidate pairs verified by their estimated Jaccard similarity, clusters of the verified
pairs, one document kept per cluster.

The math first (no Beam): ``shingle_hashes``, ``MinHasher``, ``band_keys``, ``estimated_similarity``,
``candidate_probability``. Then the composite transforms, chained by ``FindNearDuplicates``:

    chunks of Document
      -Signatures->        (doc id, (DocumentName, signature))  one per distinct text (copies share an id)
      -CandidatePairs->    (doc id, doc id)                      ids sharing a bucket of a band, once a pair
      -PairSimilarities->  (name, name, similarity)              both signatures joined back to the pair
      -_Verify->           the pairs whose similarity reaches dedup.threshold
      -Clusters->          (removed name, kept name)             connected components, least name kept
      -PairSimilarities->  NearDuplicate                         the removed text, the kept copy, similarity

A text is named by (source, position, record id, doc id) of its first copy: the kept one of a cluster
is the first in input order (path, then place in the file), the same whatever the runner, the workers
or the order the inputs are listed or read in. Exact copies of a text are one node, named by the copy
``cleaning.drop_duplicates`` keeps. What crosses a shuffle per text is its ``bands`` bucket keys (two
ints each) and its signature (``permutations`` x 4 bytes), never its words; only the clustering meets
on one worker, and its input is the verified pairs (``Clusters``)."""

from __future__ import annotations

import hashlib
import heapq
import re
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np

from pipeline.config import DedupConfig
from pipeline.seeding import mix64, rng_for
from pipeline.spill import ReadChunks, Spill
from pipeline.stats import STATS_TAG, CountingDoFn

# A word: a run of letters, digits or underscores; each CJK ideograph or kana on its own (those
# scripts are written without spaces, as BERT's pre-tokeniser splits them).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
WORD = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
SIGNATURE_BLOCK = 4096  # shingles hashed at once: a (permutations, block) uint64 array, 4 MiB at 128
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
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), SIGNATURE_BLOCK):
                x = shingles[None, start : start + SIGNATURE_BLOCK]  # (1, block)
                np.minimum(least, ((self.a * x + self.b) >> _SHIFT).min(axis=1), out=least)
        return least.astype(SIGNATURE)

    def of_text(self, text: str, n: int) -> np.ndarray | None:
        """The signature of ``text``'s word n-grams; None for a text without a word."""
        shingles = shingle_hashes(words_of(text), n)
        return self.signature(shingles) if len(shingles) else None


def estimated_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of positions where two signatures agree: an unbiased estimate of the Jaccard
    similarity of their shingle sets (standard error sqrt(J (1 - J) / permutations))."""
    return float(np.count_nonzero(a == b)) / len(a)


def band_keys(signature: np.ndarray, bands: int) -> list[tuple[int, int]]:
    """[(band index, 64-bit hash of the band's rows)]: two signatures share a key exactly when they
    agree on every row of that band (up to a 2**-64 collision)."""
    rows = signature.reshape(bands, -1)
    return [
        (i, int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little")) for i, r in enumerate(rows)
    ]


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


# --- signatures ---------------------------------------------------------------------------------


class _Sign(CountingDoFn):
    """Document -> (doc id, (DocumentName, signature as bytes)); a document without a word -> nothing."""

    def __init__(self, cfg: DedupConfig, seed: int):
        self.cfg, self.seed = cfg, seed

    def setup(self):
        self._hasher = MinHasher(self.cfg.permutations, self.seed)

    def process(self, doc):
        signature = self._hasher.of_text(" ".join(doc.sentences), self.cfg.shingle_words)
        if signature is None:
            self.count(f"{STAT}/documents_without_words")
            return
        self.count(f"{STAT}/documents_signed")
        yield doc.doc_id, (DocumentName(doc.source, doc.position, doc.record_id, doc.doc_id), signature.tobytes())


def _copy_order(node) -> tuple:
    """Exact copies are ordered as ``cleaning.drop_duplicates`` orders them, by (source, record id):
    a text is named by the copy that stage keeps."""
    name = node[0]
    return name.source, name.record_id, name.position


def _first_copy(nodes: Iterable) -> tuple:
    return min(nodes, key=_copy_order)


class Signatures(beam.PTransform):
    """Chunks of Document -> (doc id, (DocumentName, signature bytes)), one per distinct text, named
    by the copy the exact-duplicate step keeps (exact copies share an id and a signature; combined
    where the copies are signed, so a key's copies are never held together)."""

    def __init__(self, cfg: DedupConfig, seed: int, spill: Spill):
        super().__init__()
        self.cfg, self.seed, self.spill = cfg, seed, spill

    def expand(self, doc_chunks) -> Counted:
        signed = (
            doc_chunks
            | "Documents" >> ReadChunks(self.spill)
            | "Sign" >> beam.ParDo(_Sign(self.cfg, self.seed)).with_outputs(STATS_TAG, main="signed")
        )
        return Counted(signed.signed | "FirstCopy" >> beam.CombinePerKey(_first_copy), signed[STATS_TAG])


# --- candidate pairs ----------------------------------------------------------------------------


def _bucket_keys(bands: int):
    def keys(doc_id: int, node) -> Iterator[tuple[tuple[int, int], int]]:
        for key in band_keys(np.frombuffer(node[1], dtype=SIGNATURE), bands):
            yield key, doc_id

    return keys


class _PairsOfBucket(CountingDoFn):
    """((band, hash), doc ids sharing that band) -> (smaller id, larger id) for every two of the
    ``cap`` smallest ids, and (the smallest, id) for each id beyond them (a bucket of thousands of
    copies of one boilerplate page still joins one cluster, in ``cap`` ids of memory and a number
    of pairs linear in the bucket). Ids are hashes of the texts: the ``cap`` kept do not depend on
    arrival order. Reads the grouped ids twice when a bucket is over the cap."""

    def __init__(self, cap: int):
        self.cap = cap

    def process(self, element):
        _, ids = element
        first = heapq.nsmallest(self.cap, ids)
        for i, a in enumerate(first):
            for b in first[i + 1 :]:
                yield a, b
        if len(first) < self.cap:
            return
        held, beyond = set(first), 0
        for doc_id in ids:
            if doc_id not in held:
                beyond += 1
                yield first[0], doc_id
        if beyond:
            self.count(f"{STAT}/capped_buckets")
            self.count(f"{STAT}/documents_beyond_bucket_cap", beyond)


class CandidatePairs(beam.PTransform):
    """(doc id, (name, signature)) -> (doc id, doc id), smaller first: the texts that agree on every
    row of at least one of ``cfg.bands`` bands, each pair once however many bands it shares."""

    def __init__(self, cfg: DedupConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, nodes) -> Counted:
        pairs = (
            nodes
            | "BucketKeys" >> beam.FlatMapTuple(_bucket_keys(self.cfg.bands))
            | "Buckets" >> beam.GroupByKey()
            | "PairsOfBucket"
            >> beam.ParDo(_PairsOfBucket(self.cfg.max_bucket_documents)).with_outputs(STATS_TAG, main="pairs")
        )
        return Counted(pairs.pairs | "OncePerPair" >> beam.Distinct(), pairs[STATS_TAG])


# --- verification -------------------------------------------------------------------------------


def _requests_with_node(doc_id: int, tagged: Iterable) -> Iterator:
    """One id's group: its node (tag 0) and requests (tag 1) in any order -> (request, node) each.
    Two passes over the group, so the requests stream past and are never held."""
    node = next((value for tag, value in tagged if tag == 0), None)
    if node is None:
        return
    for tag, value in tagged:
        if tag == 1:
            yield value, node


class _JoinNodes(beam.PTransform):
    """(doc id, request) -> (request, (name, signature)) of that id: one GroupByKey of the nodes
    with the requests (a CoGroupByKey that would list a key's requests in memory, streamed instead)."""

    def __init__(self, nodes):
        super().__init__()
        self.nodes = nodes

    def expand(self, requests):
        return (
            (
                self.nodes | "TagNodes" >> beam.MapTuple(lambda doc_id, node: (doc_id, (0, node))),
                requests | "TagRequests" >> beam.MapTuple(lambda doc_id, request: (doc_id, (1, request))),
            )
            | "Together" >> beam.Flatten()
            | "ById" >> beam.GroupByKey()
            | "Join" >> beam.FlatMapTuple(_requests_with_node)
        )


def _similarity(node_a, node_b) -> tuple[DocumentName, DocumentName, float]:
    a, b = (np.frombuffer(node[1], dtype=SIGNATURE) for node in (node_a, node_b))
    return node_a[0], node_b[0], estimated_similarity(a, b)


class PairSimilarities(beam.PTransform):
    """(doc id a, doc id b) -> (name a, name b, estimated similarity): both signatures joined back
    to the pair, by a, then by b (a pair carries one signature through the second shuffle)."""

    def __init__(self, nodes):
        super().__init__()
        self.nodes = nodes

    def expand(self, pairs):
        return (
            pairs
            | "WithFirst" >> _JoinNodes(self.nodes)  # (b, node a)
            | "WithSecond" >> _JoinNodes(self.nodes)  # (node a, node b)
            | "Similarity" >> beam.MapTuple(_similarity)
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
    place and their estimated similarity (the chain in the module's docstring). Nothing here holds
    the corpus or its signatures in one process: signatures and pairs meet by key in the runner's
    shuffles; only ``Clusters`` gathers, and only the verified pairs."""

    def __init__(self, cfg: DedupConfig, seed: int, spill: Spill):
        super().__init__()
        self.cfg, self.seed, self.spill = cfg, seed, spill

    def expand(self, doc_chunks) -> NearDuplicates:
        signed = doc_chunks | "Signatures" >> Signatures(self.cfg, self.seed, self.spill)
        nodes = signed.items
        candidates = nodes | "CandidatePairs" >> CandidatePairs(self.cfg)
        verified = (
            candidates.items
            | "Similarities" >> PairSimilarities(nodes)
            | "Verify" >> beam.ParDo(_Verify(self.cfg.threshold)).with_outputs(STATS_TAG, main="verified")
        )
        clusters = verified.verified | "Clusters" >> Clusters()
        removed = (
            clusters.items
            | "RemovedAndKept" >> beam.MapTuple(lambda removed, kept: (removed.doc_id, kept.doc_id))
            | "SimilarityToKept" >> PairSimilarities(nodes)
            | "NearDuplicate" >> beam.MapTuple(_near_duplicate(self.cfg.threshold))
        )
        stats = (signed.stats, candidates.stats, verified[STATS_TAG], clusters.stats) | "Stats" >> beam.Flatten()
        return NearDuplicates(removed=removed, stats=stats)
