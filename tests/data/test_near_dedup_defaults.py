"""Near-duplicate removal at loom's default settings, through the real clean stage on real files:
copies at a word 5-gram Jaccard of 0.6-0.85 are found, and no document is removed in favour of a
document it is not similar to (no chains of band collisions, no JavaScript file in a Python
cluster). The Jaccard similarities are computed here from the texts, independently of loom."""

import io
import json
import random
import re

import numpy as np
import pytest
import zstandard

from loom.config import load_config
from loom.data import build_dataset, clean_documents
from loom.data.clean import clean_corpus, clean_dir

WORD = re.compile(r"\w+")
LICENSE = ("Licensed under the Apache License, Version 2.0 (the License); you may not use this file except in "
           "compliance with the License. You may obtain a copy of the License at the address given in the NOTICE "
           "file distributed with this work. Unless required by applicable law or agreed to in writing, software "
           "distributed under the License is distributed on an AS IS BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY "
           "KIND, either express or implied. See the License for the specific language governing permissions and "
           "limitations under the License. ")


def word_shingles(text, n=5):
    words = WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def true_jaccard(a, b):
    sa, sb = word_shingles(a), word_shingles(b)
    return len(sa & sb) / len(sa | sb)


def vocabulary(seed, size=3000):
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(size)]


def prose(rng, vocab, n_words):
    return " ".join(rng.choice(vocab) for _ in range(n_words))


def edited(text, rate, rng, vocab):
    words = text.split()
    for i in rng.sample(range(len(words)), round(rate * len(words))):
        words[i] = rng.choice(vocab) if rng.random() < 0.5 else ""
    return " ".join(w for w in words if w)


def settings(root, source, extra=()):
    """Loom's defaults, except where the test corpus needs otherwise (no quality rules: the
    documents are synthetic)."""
    return load_config(None, [f"data.sources=[{source}]", f'data.dir="{root}/data"', "data.workers=1",
                              "quality.enabled=false", "data.scrub_pii=false", *extra])


def clean_ids(cfg):
    """Every clean document's (id, text) in the merge's order, and what each is a duplicate of."""
    out = clean_dir(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    docs = []
    for index in range(manifest["tasks"]):
        with open(out / "tasks" / f"{index:05d}.jsonl.zst", "rb") as raw:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8"):
                rec = json.loads(line)
                docs.append((rec["id"], rec["text"]))
    return docs, np.load(out / "duplicate_of.npy")


def removals(cfg):
    """(removed id, id of the document kept in its place, their true Jaccard) for each removal."""
    docs, duplicate_of = clean_ids(cfg)
    out = []
    for i in np.flatnonzero(duplicate_of >= 0):
        k = int(duplicate_of[i])
        while duplicate_of[k] >= 0:
            k = int(duplicate_of[k])
        out.append((docs[i][0], docs[k][0], true_jaccard(docs[i][1], docs[k][1])))
    return out


def test_planted_copies_between_0_6_and_0_85_are_found_at_the_defaults(tmp_path):
    rng = random.Random(11)
    vocab = vocabulary(1)
    texts = tmp_path / "texts"
    texts.mkdir()
    similarities = []
    for i in range(30):
        original = prose(rng, vocab, rng.randint(250, 600))
        target = 0.6 + 0.25 * i / 29
        rate = 1 - (2 * target / (1 + target)) ** (1 / 5)  # a copy keeps about (1 - rate)^5 of its shingles
        while True:
            copy = edited(original, rate, rng, vocab)
            j = true_jaccard(original, copy)
            if 0.6 <= j <= 0.85:
                break
            rate *= 1.1 if j > 0.85 else 0.9
        similarities.append(j)
        (texts / f"a{i:02d}.txt").write_text(original)
        (texts / f"b{i:02d}.txt").write_text(copy)
    for i in range(30):
        (texts / f"c{i:02d}.txt").write_text(prose(rng, vocab, 400))  # unrelated
    assert min(similarities) < 0.63 and max(similarities) > 0.82  # the span the defaults must cover

    cfg = settings(tmp_path, f'{{name="t", kind="text_dir", path="{texts}"}}')
    clean_corpus(cfg)
    kept = {d.id.split("/", 1)[1] for d in clean_documents(cfg)}
    assert {f"b{i:02d}.txt" for i in range(30)}.isdisjoint(kept)  # every copy removed
    assert {f"a{i:02d}.txt" for i in range(30)} | {f"c{i:02d}.txt" for i in range(30)} <= kept
    for removed, keeper, j in removals(cfg):
        assert keeper.replace("/a", "/b") == removed and j >= 0.6


def test_a_chain_of_similar_documents_does_not_pull_in_dissimilar_ones(tmp_path):
    # D0 ~ D1 ~ ... ~ D7, each a window of distinct words shifted by 15 from the one before:
    # neighbours share 185 of 215 shingles (J 0.86), D0 and D7 only 95 of 305 (0.31).
    texts = tmp_path / "texts"
    texts.mkdir()
    words = [f"token{i}x" for i in range(400)]
    for d in range(8):
        (texts / f"d{d}.txt").write_text(" ".join(words[15 * d : 15 * d + 204]))
    cfg = settings(tmp_path, f'{{name="t", kind="text_dir", path="{texts}"}}')
    clean_corpus(cfg)
    found = removals(cfg)
    assert found  # the near duplicates are removed...
    assert all(j >= 0.6 for _, _, j in found), found  # ...each in favour of a document it resembles
    assert len({k for _, k, _ in found}) >= 2  # so the chain is cut into several clusters


@pytest.mark.parametrize("lsh", [(), ("dedup.bands=28", "dedup.rows=4"), ("dedup.bands=20", "dedup.rows=3")],
                         ids=["defaults", "28x4", "20x3"])
def test_a_javascript_file_never_joins_python_files_that_share_its_licence(tmp_path, lsh):
    """Twelve Python files and a JavaScript file share a licence header and nothing else
    (pairwise J 0.35-0.55): band collisions between them are likely, merges must not happen."""
    rng = random.Random(5)
    vocab = vocabulary(2)
    repo = tmp_path / "repo"
    repo.mkdir()
    header = LICENSE + prose(rng, vocab, 160) + "."
    for i in range(12):
        body = "\n".join(f"def f{i}_{k}(x):\n    return x * {k} + {rng.choice(vocab)}_{rng.choice(vocab)}"
                         for k in range(16))
        (repo / f"m{i:02d}.py").write_text(f'"""{header}"""\n\n{body}\n')
    js = "\n".join(f"function g{k}(x) {{ return x * {k} + {rng.choice(vocab)}; }}" for k in range(18))
    (repo / "zz.js").write_text(f"/* {header} */\n\n{js}\n")
    texts = [f.read_text() for f in sorted(repo.iterdir())]
    similarities = [true_jaccard(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :]]
    assert 0.35 < min(similarities) and max(similarities) < 0.55

    cfg = settings(tmp_path, f'{{name="r", kind="code_repo", path="{repo}"}}', lsh)
    manifest = clean_corpus(cfg)
    assert manifest["accounting"]["duplicates"] == 0, removals(cfg)
    assert "r/zz.js" in {d.id for d in clean_documents(cfg)}


def test_the_data_card_reports_the_jaccard_of_removed_near_duplicates(tmp_path):
    rng = random.Random(3)
    vocab = vocabulary(4)
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(40):
        original = prose(rng, vocab, 300)
        (texts / f"a{i:02d}.txt").write_text(original)
        if i % 2 == 0:
            (texts / f"b{i:02d}.txt").write_text(edited(original, 0.01 + 0.0015 * i, rng, vocab))
    cfg = settings(tmp_path, f'{{name="t", kind="text_dir", path="{texts}"}}',
                   ["tokenizer.vocab_size=300", "data.val_fraction=0.2"])
    build_dataset(cfg)
    data_dir = tmp_path / "data"
    card = json.loads((data_dir / "data_card.json").read_text())
    dist = card["near_duplicate_jaccard"]
    truth = sorted(j for _, _, j in removals(cfg))
    assert dist["all"]["pairs"] == card["duplicates_by_kind"]["near"] == len(truth) >= 15
    assert dist["all"]["min"] == pytest.approx(truth[0], abs=1e-3)
    assert dist["all"]["max"] == pytest.approx(truth[-1], abs=1e-3)
    assert dist["all"]["median"] == pytest.approx(float(np.median(truth)), abs=1e-3)
    assert dist["all"]["below_threshold"] == 0 and dist["all"]["threshold"] == 0.6
    assert sum(c for _, _, c in dist["all"]["histogram"]) == len(truth)
    assert dist["text"]["pairs"] == len(truth)
    markdown = (data_dir / "data_card.md").read_text()
    assert "of the document kept in its place (`dedup.min_jaccard` = 0.6)" in markdown
