import os
import random
import subprocess
import sys

import numpy as np
import pytest

from loom.data.dedup import (
    MAX_CHECKS,
    DedupConfig,
    ShingleSets,
    UnionFind,
    content_hash,
    exact_duplicates,
    jaccard,
    jaccard_summary,
    near_duplicates,
    shingle_hashes,
    shingles,
    signature,
    sketch,
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


def dedup(docs, cfg):
    """Signatures and shingle sets of `docs`, clustered."""
    sketches = [sketch(d, cfg) for d in docs]
    sigs = np.stack([s for s, _ in sketches])
    return near_duplicates(sigs, cfg, ShingleSets.of([s for _, s in sketches]))


def true_jaccard(a, b, n):
    sa, sb = set(shingles(a, n)), set(shingles(b, n))
    return len(sa & sb) / len(sa | sb)


def test_exact_duplicates_point_at_first_copy():
    hashes = [content_hash(t) for t in ["a", "b", "a", "c", "b", "a"]]
    assert exact_duplicates(hashes).tolist() == [-1, -1, 0, -1, 1, 0]


def test_shingles_are_lower_cased_words_for_text_and_code():
    assert shingles("The cat SAT on the mat", 3) == ["the cat sat", "cat sat on", "sat on the", "on the mat"]
    assert shingles("x=f(a)", 2) == ["x f", "f a"]  # punctuation is syntax every file shares: left out
    assert shingles("two words", 5) == ["two words"]
    assert shingles("}; )", 5) == []


def test_shingle_hashes_count_distinct_shingles_and_depend_on_word_order():
    assert len(shingle_hashes("a b c a b c a b c", 3)) == 3  # "a b c", "b c a", "c a b"
    assert not np.array_equal(shingle_hashes("a b c", 3), shingle_hashes("c b a", 3))
    assert np.array_equal(shingle_hashes("A, b; c!", 3), shingle_hashes("a b c", 3))


def test_stored_sets_give_the_exact_jaccard():
    cfg = DedupConfig()
    for seed in range(20):
        a = prose(random.Random(seed).randint(20, 800), seed)
        b = edit(a, 0.02 + 0.01 * seed, seed)
        assert jaccard(sketch(a, cfg)[1], sketch(b, cfg)[1]) == pytest.approx(true_jaccard(a, b, 5), abs=1e-9)
    assert jaccard(np.array([], np.uint32), np.array([1, 2], np.uint32)) == 0.0


def test_sketches_are_the_same_in_another_process():
    """The hashes must not depend on the process (Python salts str hashes per process)."""
    text = prose(300, 4)
    code = ("import sys, numpy as np\nfrom loom.data.dedup import DedupConfig, sketch\n"
            "sig, sets = sketch(sys.stdin.read(), DedupConfig())\nsys.stdout.write(sig.tobytes().hex() + ' ' + "
            "sets.tobytes().hex())")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    sig, sets = sketch(text, DedupConfig())
    assert out == [sig.tobytes().hex(), sets.tobytes().hex()]


def test_signature_is_deterministic_and_seeded():
    cfg = DedupConfig()
    text = prose(200, 1)
    a, b = signature(text, cfg), signature(text, cfg)
    assert a.dtype == np.uint32 and a.shape == (160,) and np.array_equal(a, b)
    assert not np.array_equal(a, signature(text, DedupConfig(seed=2)))


def test_near_duplicates_found_and_distinct_documents_kept():
    cfg = DedupConfig()
    base = [prose(300, s) for s in range(20)]
    docs = base + [edit(base[3], 0.01, 7), edit(base[11], 0.01, 8)]
    found = dedup(docs, cfg)
    assert found.keeper.tolist() == [-1] * 20 + [3, 11]
    assert found.jaccard[20] == pytest.approx(true_jaccard(docs[20], base[3], 5), abs=1e-6)
    assert np.isnan(found.jaccard[:20]).all()


def test_documents_without_words_are_never_near_duplicates():
    cfg = DedupConfig()
    assert dedup(["{ }", "( )", "[ ]", prose(100, 1), prose(100, 1) + " x"], cfg).keeper.tolist() == [-1, -1, -1, -1, 3]


def test_unverified_clusters_are_transitive_and_keep_the_earliest():
    cfg = DedupConfig(shingle_size=1, bands=20, rows=2, min_jaccard=0)
    a = prose(100, 0)
    b = edit(a, 0.05, 1)
    c = edit(b, 0.05, 2)
    sigs = np.stack([signature(t, cfg) for t in (c, prose(100, 9), a, b)])
    assert near_duplicates(sigs, cfg).keeper.tolist() == [-1, -1, 0, 0]


def test_candidates_mask_and_verification():
    cfg = DedupConfig()
    a = prose(300, 0)
    docs = (a, a, edit(a, 0.01, 1))
    sketches = [sketch(t, cfg) for t in docs]
    sigs, sets = np.stack([s for s, _ in sketches]), ShingleSets.of([s for _, s in sketches])
    assert near_duplicates(sigs, cfg, sets, candidates=np.array([True, False, True])).keeper.tolist() == [-1, -1, 0]
    strict = DedupConfig(min_jaccard=0.999)
    assert near_duplicates(sigs, strict, sets).keeper.tolist() == [-1, 0, -1]
    with pytest.raises(ValueError, match="shingle_sets"):
        near_duplicates(sigs, cfg)


def spans(*ranges):
    """Documents of distinct one-word shingles w<i>, one per (start, end) range: with
    shingle_size=1 their Jaccard similarity is exact (shared / union)."""
    return [" ".join(f"w{i}" for i in range(start, end)) for start, end in ranges]


def test_verified_clusters_check_each_document_against_the_kept_one():
    # a ~ b and b ~ c (J = 160 / 240 = 0.67), but a and c share only 120 / 280 = 0.43
    docs = spans((0, 200), (40, 240), (80, 280))
    cfg = DedupConfig(shingle_size=1, bands=20, rows=2, min_jaccard=0.55)
    assert dedup(docs, cfg).keeper.tolist() == [-1, 0, -1]  # c is unlike a, the document kept for b
    chained = DedupConfig(shingle_size=1, bands=20, rows=2, min_jaccard=0)  # no check: collisions chain
    found = dedup(docs, chained)
    assert found.keeper.tolist() == [-1, 0, 0]
    assert found.jaccard[2] == pytest.approx(120 / 280)  # measured even when not checked


def test_verified_clusters_join_the_most_similar_kept_document():
    # the third document is like the first (J = 0.33) and more like the second (0.6)
    docs = spans((0, 200), (150, 350), (100, 300))
    cfg = DedupConfig(shingle_size=1, bands=20, rows=2, min_jaccard=0.3)
    found = dedup(docs, cfg)
    assert found.keeper.tolist() == [-1, -1, 1]
    assert found.jaccard[2] == pytest.approx(0.6)


def test_verified_clusters_break_ties_for_the_earliest():
    a, b = spans((0, 100), (200, 300))
    # the third document holds both kept ones entirely: J = 0.5 with each
    found = dedup([a, b, a + " " + b], DedupConfig(shingle_size=1, bands=30, rows=1, min_jaccard=0.45))
    assert found.keeper.tolist() == [-1, -1, 0]


def test_boilerplate_buckets_bound_the_work_without_losing_the_true_copy():
    """300 files share a header worth J ~ 0.45 between any two: they collide in many bands,
    none is a near duplicate; a lightly edited copy of one of them, last, must still be found."""
    cfg = DedupConfig()
    header = prose(250, 99)
    docs = [header + " " + prose(150, 1000 + i) for i in range(300)]
    docs.append(edit(docs[17], 0.02, 5))
    found = dedup(docs, cfg)
    assert found.keeper[:300].tolist() == [-1] * 300
    assert found.keeper[300] == 17
    assert found.stats["full_buckets"] > 0  # the header's buckets filled up...
    assert found.stats["exact_comparisons"] <= MAX_CHECKS * len(docs)  # ...and the checks stayed bounded


@pytest.mark.parametrize("jaccard_target", [0.3, 0.5, 0.6])
def test_detection_rate_follows_the_lsh_curve(jaccard_target):
    """With one-word shingles over distinct words the true Jaccard is exact; with verification off
    the share of pairs caught must match 1 - (1 - J^rows)^bands."""
    cfg = DedupConfig(shingle_size=1, min_jaccard=0)
    pairs, caught = 150, 0
    for p in range(pairs):
        shared = round(400 * jaccard_target / (1 + jaccard_target))  # |A| = |B| = 200 -> J = s / (400 - s)
        words = [f"w{p}_{i}" for i in range(400 - shared)]
        a = " ".join(words[:200])
        b = " ".join(words[200 - shared :])
        sigs = np.stack([signature(a, cfg), signature(b, cfg)])
        caught += near_duplicates(sigs, cfg).keeper[1] == 0
    true_j = shared / (400 - shared)
    expected = 1 - (1 - true_j**cfg.rows) ** cfg.bands
    assert abs(caught / pairs - expected) < 0.12, (caught / pairs, expected)


def test_shingle_sets_over_several_parts():
    a, b, c = (np.array(v, dtype=np.uint32) for v in ([1, 2], [], [3, 4, 5]))
    sets = ShingleSets([(np.concatenate([a, b]), np.array([0, 2, 2])), (c, np.array([0, 3]))])
    assert len(sets) == 3 and sets.sizes.tolist() == [2, 0, 3]
    assert [sets[i].tolist() for i in range(3)] == [[1, 2], [], [3, 4, 5]]


def test_jaccard_summary():
    summary = jaccard_summary(np.array([0.2, 0.65, 0.7, np.nan, 0.95]), 0.6)
    assert summary["pairs"] == 4 and summary["below_threshold"] == 1
    assert summary["min"] == 0.2 and summary["max"] == 0.95 and summary["median"] == pytest.approx(0.675)
    assert [c for _, _, c in summary["histogram"]] == [1, 0, 0, 1, 1, 0, 1]  # bins [lo, hi)
    assert jaccard_summary(np.array([]), 0.6) == {"pairs": 0, "threshold": 0.6, "below_threshold": 0,
                                                  "histogram": [[lo, hi, 0] for lo, hi, _ in summary["histogram"]]}


def test_union_find_keeps_smallest_root():
    uf = UnionFind(6)
    uf.union(4, 5)
    uf.union(5, 2)
    uf.union(0, 4)
    assert [uf.find(i) for i in range(6)] == [0, 1, 0, 3, 0, 0]
