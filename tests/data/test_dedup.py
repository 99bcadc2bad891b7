import random

import numpy as np
import pytest

from loom.data.dedup import (
    DedupConfig,
    UnionFind,
    content_hash,
    exact_duplicates,
    near_duplicates,
    shingles,
    signature,
)


def prose(n_words, seed):
    rng = random.Random(seed)
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
                    for _ in range(n_words))


def edit(text, fraction, seed):
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), int(len(words) * fraction)):
        words[i] = "edited" + str(i)
    return " ".join(words)


def test_exact_duplicates_point_at_first_copy():
    hashes = [content_hash(t) for t in ["a", "b", "a", "c", "b", "a"]]
    assert exact_duplicates(hashes).tolist() == [-1, -1, 0, -1, 1, 0]


def test_shingles_for_text_and_code():
    assert shingles("The cat SAT on the mat", "text", 3) == ["the cat sat", "cat sat on", "sat on the", "on the mat"]
    assert shingles("x=f(a)", "code:python", 2) == ["x =", "= f", "f (", "( a", "a )"]
    assert shingles("two words", "text", 5) == ["two words"]


def test_signature_is_deterministic_and_seeded():
    cfg = DedupConfig()
    text = prose(200, 1)
    a, b = signature(text, "text", cfg), signature(text, "text", cfg)
    assert a.dtype == np.uint32 and a.shape == (112,) and np.array_equal(a, b)
    assert not np.array_equal(a, signature(text, "text", DedupConfig(seed=2)))


def test_near_duplicates_found_and_distinct_documents_kept():
    cfg = DedupConfig()
    base = [prose(300, s) for s in range(20)]
    docs = base + [edit(base[3], 0.01, 7), edit(base[11], 0.01, 8)]
    sigs = np.stack([signature(d, "text", cfg) for d in docs])
    dup = near_duplicates(sigs, cfg)
    assert dup[:20].tolist() == [-1] * 20
    assert dup[20:].tolist() == [3, 11]


def test_clusters_are_transitive_and_keep_the_earliest():
    cfg = DedupConfig(shingle_size=1, bands=20, rows=2)
    a = prose(100, 0)
    b = edit(a, 0.05, 1)
    c = edit(b, 0.05, 2)
    sigs = np.stack([signature(t, "text", cfg) for t in (c, prose(100, 9), a, b)])
    dup = near_duplicates(sigs, cfg)
    assert dup.tolist() == [-1, -1, 0, 0]


def test_candidates_mask_and_verification():
    cfg = DedupConfig()
    a = prose(300, 0)
    sigs = np.stack([signature(t, "text", cfg) for t in (a, a, edit(a, 0.01, 1))])
    assert near_duplicates(sigs, cfg, candidates=np.array([True, False, True])).tolist() == [-1, -1, 0]
    strict = DedupConfig(min_jaccard=0.999)
    assert near_duplicates(sigs, strict).tolist() == [-1, 0, -1]


def spans(*ranges):
    """Documents of distinct one-word shingles w<i>, one per (start, end) range: with
    shingle_size=1 their Jaccard similarity is exact (shared / union)."""
    return [" ".join(f"w{i}" for i in range(start, end)) for start, end in ranges]


def test_verified_clusters_check_each_document_against_the_kept_one():
    # a ~ b and b ~ c (J = 160 / 240 = 0.67), but a and c share only 120 / 280 = 0.43
    docs = spans((0, 200), (40, 240), (80, 280))
    cfg = DedupConfig(shingle_size=1, bands=20, rows=2, min_jaccard=0.55)
    sigs = np.stack([signature(t, "text", cfg) for t in docs])
    assert near_duplicates(sigs, cfg).tolist() == [-1, 0, -1]  # c is unlike a, the document kept for b
    chained = DedupConfig(shingle_size=1, bands=20, rows=2)  # no check: collisions chain
    assert near_duplicates(sigs, chained).tolist() == [-1, 0, 0]


def test_verified_clusters_join_the_most_similar_kept_document():
    # the third document is like the first (J = 0.33) and more like the second (0.6)
    docs = spans((0, 200), (150, 350), (100, 300))
    cfg = DedupConfig(shingle_size=1, bands=20, rows=2, min_jaccard=0.3)
    sigs = np.stack([signature(t, "text", cfg) for t in docs])
    assert near_duplicates(sigs, cfg).tolist() == [-1, -1, 1]


@pytest.mark.parametrize("jaccard", [0.5, 0.75, 0.9])
def test_detection_rate_follows_the_lsh_curve(jaccard):
    """With one-word shingles over distinct words the true Jaccard is exact; the share of pairs
    caught must match 1 - (1 - J^rows)^bands."""
    cfg = DedupConfig(shingle_size=1, bands=14, rows=8)
    pairs, caught = 150, 0
    for p in range(pairs):
        shared = round(200 * jaccard / (1 + jaccard))  # |A| = |B| = 200 -> J = s / (400 - s)
        words = [f"w{p}_{i}" for i in range(400 - shared)]
        a = " ".join(words[:200])
        b = " ".join(words[200 - shared :])
        sigs = np.stack([signature(a, "text", cfg), signature(b, "text", cfg)])
        caught += near_duplicates(sigs, cfg)[1] == 0
    true_j = shared / (400 - shared)
    expected = 1 - (1 - true_j**8) ** 14
    assert abs(caught / pairs - expected) < 0.12, (caught / pairs, expected)


def test_union_find_keeps_smallest_root():
    uf = UnionFind(6)
    uf.union(4, 5)
    uf.union(5, 2)
    uf.union(0, 4)
    assert [uf.find(i) for i in range(6)] == [0, 1, 0, 3, 0, 0]
