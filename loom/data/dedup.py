"""Deduplication across all sources: exact (content hash) and near-duplicate (MinHash LSH).

Exact: documents whose normalized text has the same 128-bit BLAKE2b hash; the first one in
input order is kept.

Near: each document becomes a set of shingles (word n-grams of lower-cased words for text,
n-grams of code tokens for code; n = 5 by default), summarized by a MinHash signature of
`bands * rows` values. Two documents whose signatures agree on all `rows` values of any band
are candidates (locality-sensitive hashing: Broder 1997; Leskovec et al., Mining of Massive
Datasets, ch. 3). The default 14 bands x 8 rows is FineWeb's (Penedo et al. 2024); it catches
pairs above a Jaccard similarity of about 0.75.

Clusters, and which document each keeps:
  - `min_jaccard = 0` (the default, as FineWeb): every band collision merges, clusters are the
    connected components (union-find), and each keeps its earliest document. A chain of
    collisions can put documents that share little in one cluster.
  - `min_jaccard > 0`: documents are taken in input order, and each joins the cluster of the
    kept document, among those it shares a band bucket with (directly, or through a member of
    their cluster), whose signature agrees with its own on the largest share of values, if that
    share (an estimate of their Jaccard similarity) reaches `min_jaccard`; otherwise it is kept
    and starts a cluster. Every removed document is thus checked against the very document
    kept in its place, so chains cannot carry a cluster away from its first document.

Signatures come from `rensa` (MinHash in Rust): on the standard library's text it computed
signatures about 100x faster than `datasketch` in our measurement (0.011 s against ~1.1 s for
400 files, 716k shingles), and faster than a numpy implementation whose Python-level shingle
hashing dominated. Banding and union-find are vectorized with numpy here because they are a few
lines over the signature matrix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import rensa

WORD = re.compile(r"\w+")
CODE_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    shingle_size: int = 5  # words (text) or code tokens per shingle; FineWeb uses word 5-grams
    bands: int = 14  # FineWeb: 14 bands of 8 hashes
    rows: int = 8
    min_jaccard: float = 0.0  # 0: every band collision merges (as FineWeb); else verify candidates
    seed: int = 1


def content_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def shingles(text: str, domain: str, n: int) -> list[str]:
    """Word n-grams (text) or code-token n-grams (code); short documents give one shingle."""
    if domain.startswith("code"):
        tokens = CODE_TOKEN.findall(text)
    else:
        tokens = WORD.findall(text.lower())
    if len(tokens) <= n:
        return [" ".join(tokens)]
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def signature(text: str, domain: str, cfg: DedupConfig) -> np.ndarray:
    """The MinHash signature of a document: (bands * rows,) uint32."""
    m = rensa.RMinHash(cfg.bands * cfg.rows, cfg.seed)
    m.update(shingles(text, domain, cfg.shingle_size))
    return np.asarray(m.digest(), dtype=np.uint32)


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


def near_duplicates(signatures: np.ndarray, cfg: DedupConfig, candidates: np.ndarray | None = None) -> np.ndarray:
    """For each row of `signatures` (N, bands * rows), the index of the document its cluster
    keeps when it is a near duplicate of an earlier one, else -1 (see the module docstring for
    how clusters form). Rows where `candidates` is False take no part (e.g. exact duplicates
    already removed)."""
    n = len(signatures)
    out = np.full(n, -1, dtype=np.int64)
    active = np.arange(n) if candidates is None else np.flatnonzero(candidates)
    if len(active) < 2:
        return out
    if cfg.min_jaccard > 0:
        return _verified_clusters(signatures, cfg, active, out)
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
            out[i] = root
    return out


def _verified_clusters(signatures: np.ndarray, cfg: DedupConfig, active: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Clusters for `min_jaccard > 0`: each document, in input order, is compared with the kept
    documents of the clusters met in its band buckets and joins the most similar one that
    reaches `min_jaccard` (the earliest on a tie), or is kept itself."""
    parts = list(_shared_buckets(signatures, cfg, active))
    if not parts:
        return out
    docs = np.concatenate([d for d, _ in parts])
    buckets = np.concatenate([g for _, g in parts])
    order = np.argsort(docs, kind="stable")
    docs, buckets = docs[order], buckets[order]
    bounds = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1], True])
    kept_in: dict[int, set[int]] = {}  # bucket -> kept documents of the clusters seen in it
    for start, end in zip(bounds[:-1], bounds[1:]):
        doc = int(docs[start])
        mine = buckets[start:end].tolist()
        seen = sorted({k for bucket in mine for k in kept_in.get(bucket, ())})
        keeper = doc
        if seen:
            agree = np.mean(signatures[seen] == signatures[doc], axis=1)
            best = int(np.argmax(agree))  # the first of the largest: the earliest on a tie
            if agree[best] >= cfg.min_jaccard:
                keeper = seen[best]
                out[doc] = keeper
        for bucket in mine:
            kept_in.setdefault(bucket, set()).add(keeper)
    return out
