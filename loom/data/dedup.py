"""Deduplication across all sources: exact (content hash) and near-duplicate (MinHash LSH
candidates, each verified by its exact Jaccard similarity before it joins a cluster).

Exact: documents whose normalized text has the same 128-bit BLAKE2b hash; the first one in
input order is kept.

Shingles, text and code alike: the n-grams (n = `shingle_size`, 5) of the document's lower-cased
`\\w+` words. For code this is BigCode's choice for The Stack (Kocetkov et al. 2022; C. Mou,
"Large-scale near-deduplication behind BigCode", 2023: split on non-alphanumerics, lower-cased):
punctuation tokens (`(`, `):`, `.`) are the syntax that every file of a language shares, and
counted as tokens (as loom did before) they raised the similarity of unrelated code. Each word is
hashed to 64 bits (rensa's `hash_token_sets`), each n-gram's hash is a fixed polynomial of its
words' hashes finished with splitmix64's mixer (Steele et al. 2014), so the same text gives the
same hashes in every process and on every machine. A document's shingle set is its distinct
n-gram hashes. From it come
  - its MinHash signature, `bands * rows` values (rensa, MinHash in Rust; on the standard
    library's text it was about 100x faster than `datasketch` in our measurement);
  - its stored set, the upper 32 bits of each hash, sorted: what "exact Jaccard" is computed on.
    Two different shingles share a 32-bit value with probability 2^-32, so two documents of
    10,000 shingles expect 0.02 falsely shared ones: the Jaccard is exact to about 1e-6.
    Cost: 4 bytes per distinct shingle (about 0.7 bytes per byte of English text) on disk, in
    each clean task's `.shingles.npy`, memory-mapped by the merge, which reads only the sets of
    documents it compares.
Documents without a word have no shingles and take no part in near dedup (exact dedup still
applies to them).

Candidates: two documents are candidates when their signatures agree on all `rows` values of
some band (LSH banding: Broder 1997; Leskovec et al., Mining of Massive Datasets, ch. 3), which
happens with probability 1 - (1 - J^rows)^bands for Jaccard similarity J. The default, 40 bands
of 4 rows, gives

    J      0.2    0.3    0.4    0.5    0.55   0.6    0.65   0.7
    P      0.062  0.278  0.646  0.924  0.979  0.996  0.9996 1.000

so a pair at the default threshold, `min_jaccard` 0.6, is missed by banding 0.4% of the time.
FineWeb's 14 x 8 (Penedo et al. 2024), loom's earlier default, gives 0.21 at J = 0.6 and 0.56 at
0.7: on third-party Python files edited in 5-10% of their words (J 0.57-0.84) it caught 62% of
the planted copies. More bands of fewer rows catch more but also pair up many unrelated documents
(P = 0.28 at J = 0.3), which is why every candidate is verified.

Clusters (`min_jaccard > 0`, the default): documents are taken in input order; each is compared
with the kept documents (never with other removed ones) met in its band buckets, and joins the
cluster of the one with the highest exact Jaccard similarity if that reaches `min_jaccard` (the
earliest on a tie); otherwise it is kept and starts a cluster. Every removed document is thus
within `min_jaccard` of the very document kept in its place: no chain of collisions can carry a
cluster to documents unlike its first one. A kept document is remembered in every bucket of its
cluster's members, so later copies find it through any of them. The work is bounded for
boilerplate (licence headers, near-identical test methods) that piles many documents into one
bucket:
  - a bucket remembers at most `MAX_BUCKET_KEPT` (32) kept documents; past that it is filled
    with boilerplate, and a true near duplicate still meets its kept document in the other bands
    it shares with it (2.6 of 40 beyond a shared header covering half of two files, on average);
  - candidates are ranked by how many signature values they share with the document (an
    unbiased estimate of J, standard deviation at most sqrt(0.25 / 160) = 0.04); those below
    `min_jaccard` minus 4 such deviations are not checked (a pair at the threshold falls there
    with probability 3e-5), nor are those whose set sizes alone bound J below the threshold;
  - at most `MAX_CHECKS` (8) exact comparisons per document, best estimates first.
So a document costs at most 40 x 32 signature comparisons and 8 set intersections (each
O(shingles log shingles)). Memory of the merge: the signatures (640 bytes per document), the
shared band buckets (two integers per document and shared band) and the remembered kept documents.
The exact Jaccard of each removed document with its kept one is returned, for the data card.

`min_jaccard = 0`: no verification, as FineWeb: every band collision merges, clusters are the
connected components (union-find) and keep their earliest document; a chain of collisions can
then put documents that share little in one cluster (their Jaccard is still measured and reported).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rensa

from loom.errors import ConfigError, require_positive

WORD = re.compile(r"\w+")
MAX_BUCKET_KEPT = 32  # kept documents a band bucket remembers (module docstring)
MAX_CHECKS = 8  # exact Jaccard comparisons per document
ESTIMATE_SIGMAS = 4.0  # candidates this many standard deviations of the estimate below the threshold are skipped
HISTOGRAM_EDGES = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # for the data card's Jaccard distribution

_U64 = np.uint64


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    shingle_size: int = 5  # words per shingle, text and code; FineWeb and BigCode use 5-grams
    bands: int = 40  # 40 bands of 4 rows: P(candidate) 0.996 at Jaccard 0.6 (module docstring)
    rows: int = 4
    min_jaccard: float = 0.6  # every candidate verified by exact Jaccard; 0: unverified union (FineWeb)
    seed: int = 1

    def check(self, key: str = "dedup") -> None:
        require_positive(self, key, "shingle_size", "bands", "rows")
        if not 0 <= self.min_jaccard <= 1:
            raise ConfigError(f"{key}.min_jaccard must be between 0 and 1, not {self.min_jaccard}")


def content_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def shingles(text: str, n: int) -> list[str]:
    """The word n-grams of `text`, as strings (for reading; the pipeline uses their hashes).
    A document of 1 to n words is one shingle; one without words has none."""
    tokens = words(text)
    if len(tokens) <= n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every output bit depends on every input bit."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """The distinct 64-bit hashes of the word n-grams of `text`, sorted: (k,) uint64."""
    tokens = words(text)
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    h = np.asarray(rensa.RMinHash.hash_token_sets([tokens])[0], dtype=np.uint64)
    m = max(1, len(h) - n + 1)
    acc = np.zeros(m, dtype=np.uint64)
    for k, weight in enumerate(_position_weights(n)[: len(h)]):
        acc += h[k : k + m] * weight  # uint64 arithmetic wraps: a polynomial modulo 2^64
    return np.unique(_mix(acc))


def _position_weights(n: int) -> np.ndarray:
    """One odd 64-bit weight per position of an n-gram, so that reordering its words changes its hash."""
    return _mix(np.arange(1, n + 1, dtype=np.uint64) + _U64(n << 32)) | _U64(1)


def sketch(text: str, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(MinHash signature (bands * rows,) uint32, shingle set: sorted distinct (k,) uint32)."""
    hashes = shingle_hashes(text, cfg.shingle_size)
    n_perm = cfg.bands * cfg.rows
    if len(hashes):
        digest = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            hashes, np.array([0, len(hashes)], dtype=np.uint64), n_perm, cfg.seed)
        sig = np.asarray(digest.to_rows()[0], dtype=np.uint32)
    else:
        sig = np.full(n_perm, np.iinfo(np.uint32).max, dtype=np.uint32)  # takes no part (no shingles)
    return sig, np.unique((hashes >> _U64(32)).astype(np.uint32))


def signature(text: str, cfg: DedupConfig) -> np.ndarray:
    """The MinHash signature of a document: (bands * rows,) uint32."""
    return sketch(text, cfg)[0]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct values (0 when either is empty)."""
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return 0.0
    at = np.searchsorted(b, a)
    shared = int(np.count_nonzero(b[np.minimum(at, len(b) - 1)] == a))
    return shared / (len(a) + len(b) - shared)


class ShingleSets:
    """The shingle sets of documents 0..N-1, stored as runs of one flat array per part (a clean
    task's `.shingles.npy`, memory-mapped) cut by that part's offsets (n_i + 1 of them)."""

    def __init__(self, parts: Sequence[tuple[np.ndarray, np.ndarray]]):
        self._flats = [flat for flat, _ in parts]
        self._offsets = [np.asarray(offsets, dtype=np.int64) for _, offsets in parts]
        self._starts = np.cumsum([0] + [len(o) - 1 for o in self._offsets])
        self.sizes = (np.concatenate([np.diff(o) for o in self._offsets]) if parts
                      else np.zeros(0, dtype=np.int64))

    @classmethod
    def of(cls, sets: Sequence[np.ndarray]) -> ShingleSets:
        offsets = np.cumsum([0] + [len(s) for s in sets])
        flat = np.concatenate(sets) if len(sets) else np.zeros(0, dtype=np.uint32)
        return cls([(flat, offsets)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        offsets, j = self._offsets[part], i - int(self._starts[part])
        return np.asarray(self._flats[part][offsets[j] : offsets[j + 1]])


class UnionFind:
    """Disjoint sets over 0..n-1 whose representative is always the smallest member."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def exact_duplicates(hashes: list[bytes]) -> np.ndarray:
    """For each document, the index of the earlier document with the same hash, or -1."""
    first: dict[bytes, int] = {}
    out = np.full(len(hashes), -1, dtype=np.int64)
    for i, h in enumerate(hashes):
        j = first.setdefault(h, i)
        if j != i:
            out[i] = j
    return out


@dataclass
class NearDuplicates:
    """For each document: the index of the kept document standing in for it when it is a near
    duplicate, else -1 (`keeper`), and their exact Jaccard similarity, else NaN (`jaccard`);
    `stats`: the work done (documents with candidates, signature and exact comparisons, buckets
    that were full)."""

    keeper: np.ndarray
    jaccard: np.ndarray
    stats: dict = field(default_factory=dict)


def _shared_buckets(signatures: np.ndarray, cfg: DedupConfig, active: np.ndarray):
    """Per band, the (documents, bucket numbers) of the active documents whose band values some
    other active document shares; bucket numbers are unique across bands."""
    offset = 0
    for b in range(cfg.bands):
        band = np.ascontiguousarray(signatures[active, b * cfg.rows : (b + 1) * cfg.rows])
        _, group, counts = np.unique(band.view(np.dtype((np.void, band.itemsize * cfg.rows))).ravel(),
                                     return_inverse=True, return_counts=True)
        group = group.ravel()
        shared = counts[group] > 1
        if shared.any():
            yield active[shared], group[shared] + offset
        offset += len(counts)


def near_duplicates(signatures: np.ndarray, cfg: DedupConfig, shingle_sets: ShingleSets | None = None,
                    candidates: np.ndarray | None = None) -> NearDuplicates:
    """Near-duplicate clusters of the documents whose signatures are the rows of `signatures`
    (N, bands * rows) and whose shingle sets are `shingle_sets` (needed when `cfg.min_jaccard > 0`;
    with 0 they only measure the Jaccard of each removal). Documents where `candidates` is False
    (e.g. exact duplicates already removed) or without shingles take no part."""
    n = len(signatures)
    keeper = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    result = NearDuplicates(keeper, similarity, {"documents_with_candidates": 0, "signature_comparisons": 0,
                                                 "exact_comparisons": 0, "full_buckets": 0})
    if cfg.min_jaccard > 0 and shingle_sets is None:
        raise ValueError("near_duplicates with min_jaccard > 0 verifies candidates: pass their shingle_sets")
    mask = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).copy()
    mask &= ~(signatures == np.iinfo(np.uint32).max).all(axis=1)  # documents without shingles
    if shingle_sets is not None:
        mask &= shingle_sets.sizes > 0
    active = np.flatnonzero(mask)
    if len(active) < 2:
        return result
    if cfg.min_jaccard > 0:
        _verified_clusters(signatures, cfg, shingle_sets, active, result)
        return result
    uf = UnionFind(n)
    for members, groups in _shared_buckets(signatures, cfg, active):
        order = np.lexsort((members, groups))  # by group, then input order
        members, groups = members[order], groups[order]
        starts = np.r_[True, groups[1:] != groups[:-1]]
        leaders = members[np.maximum.accumulate(np.where(starts, np.arange(len(members)), 0))]
        for leader, member in zip(leaders[~starts], members[~starts]):
            uf.union(int(leader), int(member))
    for i in active:
        root = uf.find(int(i))
        if root != i:
            keeper[i] = root
            if shingle_sets is not None:
                similarity[i] = jaccard(shingle_sets[int(i)], shingle_sets[root])
    return result


def _verified_clusters(signatures: np.ndarray, cfg: DedupConfig, sets: ShingleSets, active: np.ndarray,
                       result: NearDuplicates) -> None:
    """Clusters for `min_jaccard > 0` (module docstring): each document, in input order, joins
    the kept document of highest exact Jaccard >= min_jaccard among those met in its buckets."""
    parts = list(_shared_buckets(signatures, cfg, active))
    if not parts:
        return
    docs = np.concatenate([d for d, _ in parts])
    buckets = np.concatenate([g for _, g in parts])
    order = np.argsort(docs, kind="stable")
    docs, buckets = docs[order], buckets[order]
    bounds = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1], True])
    floor = cfg.min_jaccard - ESTIMATE_SIGMAS * math.sqrt(0.25 / signatures.shape[1])
    stats = result.stats
    kept_in: dict[int, list[int]] = {}  # bucket -> kept documents of the clusters seen in it, at most MAX_BUCKET_KEPT
    for start, end in zip(bounds[:-1], bounds[1:]):
        doc = int(docs[start])
        mine = buckets[start:end].tolist()
        seen = sorted({k for bucket in mine for k in kept_in.get(bucket, ())})
        keeper = doc
        if seen:
            stats["documents_with_candidates"] += 1
            stats["signature_comparisons"] += len(seen)
            agree = np.count_nonzero(signatures[seen] == signatures[doc], axis=1) / signatures.shape[1]
            ranked = np.argsort(-agree, kind="stable")  # best estimate first, the earliest on a tie
            ranked = ranked[agree[ranked] >= floor][:MAX_CHECKS]
            mine_set, size = sets[doc], int(sets.sizes[doc])
            best = -1.0
            for k in (seen[r] for r in ranked):
                other = int(sets.sizes[k])
                if min(size, other) < cfg.min_jaccard * max(size, other):
                    continue  # J <= |smaller| / |larger|: cannot reach the threshold
                stats["exact_comparisons"] += 1
                j = jaccard(mine_set, sets[k])
                if j >= cfg.min_jaccard and (j > best or (j == best and k < keeper)):
                    best, keeper = j, k
            if keeper != doc:
                result.keeper[doc] = keeper
                result.jaccard[doc] = best
        for bucket in mine:
            kept = kept_in.setdefault(bucket, [])
            if keeper in kept:
                continue
            if len(kept) < MAX_BUCKET_KEPT:
                kept.append(keeper)
                if len(kept) == MAX_BUCKET_KEPT:
                    stats["full_buckets"] += 1


def jaccard_summary(values: np.ndarray, threshold: float) -> dict:
    """The distribution of the Jaccard similarities of removed documents with their kept ones:
    count, min, p10, median, p90, max, how many fall below `threshold`, and a histogram over
    `HISTOGRAM_EDGES`."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    out: dict = {"pairs": int(len(values)), "threshold": threshold,
                 "below_threshold": int(np.count_nonzero(values < threshold))}
    if len(values):
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        out.update(min=round(float(values.min()), 4), p10=round(float(p10), 4), median=round(float(p50), 4),
                   p90=round(float(p90), 4), max=round(float(values.max()), 4))
    counts, _ = np.histogram(np.clip(values, 0, 1), bins=HISTOGRAM_EDGES)
    out["histogram"] = [[lo, hi, int(c)] for lo, hi, c in zip(HISTOGRAM_EDGES[:-1], HISTOGRAM_EDGES[1:], counts)]
    return out
