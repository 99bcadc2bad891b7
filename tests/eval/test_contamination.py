"""Decontamination: n-grams of evaluation items, and `loom data build` dropping the documents
that share one, counted in the data card."""

from __future__ import annotations

import json

from loom.config import load_config
from loom.eval.contamination import ContaminationIndex, item_texts, ngrams
from loom.eval.humaneval import load_problems
from loom.pipeline import build_data


def test_ngrams_and_short_items():
    words = " ".join(f"w{i}" for i in range(15))
    grams = ngrams([words, "Only Five Words Are Here", "eight words: one two three four five six seven"], n=13)
    assert "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12" in grams
    assert len([g for g in grams if g.startswith("w")]) == 3  # 15 words: three 13-grams
    assert "only five words are here" not in grams  # under the 8-word floor: too generic to match on
    assert "eight words one two three four five six seven" in grams  # 8 to 12 words: the whole item


def test_index_finds_a_shared_ngram_anywhere_and_ignores_case_and_punctuation():
    item = "def add(a, b): return the sum of the two numbers a and b exactly once"
    index = ContaminationIndex(ngrams([item]))
    assert index.contains("Some preface.\nDEF ADD(A, B):\n  return the SUM of the two numbers, a and b exactly!")
    assert not index.contains("def add(a, b): return the product of the two numbers a and b exactly once")
    assert not ContaminationIndex([]).contains(item)


def test_build_drops_documents_holding_a_test_item(tmp_path):
    problem = load_problems()[0]
    clean = ("The river runs past the old mill and the stone bridge, and the miller has to wait "
             "for the water to rise before the wheel can turn again in the spring.")
    leak = "A blog post that copies a benchmark:\n" + problem.prompt + problem.canonical_solution
    docs = [{"id": "leak", "text": leak},
            {"id": "fine", "text": clean}, {"id": "fine2", "text": clean.replace("river", "canal")}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    overrides = [f'data.sources=[{{name="docs", kind="jsonl", path="{tmp_path}/docs.jsonl"}}]',
                 "quality.enabled=false", "dedup.near=false", f'data.dir="{tmp_path}/data"',
                 "tokenizer.vocab_size=300", "data.val_fraction=0.3"]
    build_data(load_config(None, overrides))
    card = json.loads((tmp_path / "data" / "data_card.json").read_text())
    assert card["decontamination"] is None and card["kept"] == 3

    cfg = load_config(None, [*overrides, 'data.decontaminate=["humaneval"]'])
    build_data(cfg)  # the settings changed: the clean corpus is rebuilt
    card = json.loads((tmp_path / "data" / "data_card.json").read_text())
    assert card["kept"] == 2 and card["dropped_by_rule"] == {"decontamination": 1}
    assert card["decontamination"]["dropped"] == 1 and card["decontamination"]["suites"] == ["humaneval"]
    assert card["decontamination"]["test_ngrams"] == len(ngrams(item_texts(["humaneval"], cfg.eval)))
    assert "Decontamination: 1 documents" in (tmp_path / "data" / "data_card.md").read_text()
