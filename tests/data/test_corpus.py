import pytest

from loom.data.documents import hash_fraction, split_of
from loom.data.stdlib_corpus import module_docstrings, stdlib_documents, stdlib_files


def test_documents_are_deterministic_with_unique_ids_and_both_domains():
    a = list(stdlib_documents(max_files=40, workers=2))
    b = list(stdlib_documents(max_files=40, workers=1))
    assert [(d.id, d.text) for d in a] == [(d.id, d.text) for d in b]
    assert len({d.id for d in a}) == len(a)
    domains = {d.domain for d in a}
    assert domains == {"text", "code:python"}
    code = [d for d in a if d.domain == "code:python"]
    assert len(code) == len([f for f in stdlib_files(max_files=40)])
    assert all(d.source == "stdlib" for d in a)


def test_code_documents_are_the_files_verbatim():
    doc = next(d for d in stdlib_documents(max_files=5, workers=1) if d.domain == "code:python")
    from loom.data.stdlib_corpus import stdlib_root

    with open(f"{stdlib_root()}/{doc.meta['path']}", encoding="utf-8") as f:
        assert f.read() == doc.text


def test_docstrings_in_source_order_and_short_ones_dropped():
    source = '''"""Module docstring with several words here."""

class A:
    """Class docstring that is long enough."""

    def f(self):
        """Short."""

def g():
    """Function docstring that is long enough too."""
'''
    assert module_docstrings(source) == [
        "Module docstring with several words here.",
        "Class docstring that is long enough.",
        "Function docstring that is long enough too.",
    ]


def test_split_is_stable_and_about_the_requested_share():
    ids = [f"code/module_{i}.py" for i in range(20000)]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    share = splits.count("val") / len(ids)
    assert 0.09 < share < 0.11
    # Growing the fraction only moves documents from train to val, never back.
    assert all(split_of(i, 0.2) == "val" for i, s in zip(ids, splits) if s == "val")
    assert 0 <= hash_fraction("x") < 1


def test_block_comments_in_source_order_without_tool_lines():
    from loom.data.stdlib_corpus import module_comments

    source = '''#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Docstring."""
import os  # noqa: F401

# The cache is filled lazily: the first lookup
# of a name pays for it.
#
#     cache[name] = compute(name)
CACHE = {}
x = 1  # a trailing comment is not a block comment
# type: ignore
    # Indented blocks count too, when long enough.
y = 2
# Short.
'''
    assert module_comments(source) == [
        "The cache is filled lazily: the first lookup\nof a name pays for it.\n\n    cache[name] = compute(name)",
        "Indented blocks count too, when long enough.",
    ]


def test_text_documents_carry_their_markup():
    docs = list(stdlib_documents(max_files=40, workers=1))
    kinds = {d.meta.get("kind") for d in docs if d.domain == "text"}
    assert {"pydoc", "docstrings", "comments"} <= kinds
    assert all(d.meta["markup"] == "rst" for d in docs if d.meta.get("kind") in ("pydoc", "docstrings", "comments"))
    prose = [d for d in docs if d.meta.get("kind") == "prose"]
    assert all(d.meta["markup"] in ("plain", "rst", "markdown") and d.id == f"prose/{d.meta['path']}" for d in prose)


def test_stdlib_prose_files_are_prose_and_skip_test_fixtures():
    from loom.data.filetypes import is_prose_file
    from loom.data.stdlib_corpus import stdlib_prose_files

    files = stdlib_prose_files()
    assert files == sorted(files) and all(is_prose_file(f) for f in files)
    for rel in files:
        if {"test", "tests", "idle_test"} & set(rel.split("/")[:-1]):
            assert rel.split("/")[-1].lower().startswith("readme")


@pytest.mark.slow
def test_the_quickstart_corpus_is_a_real_share_text_and_the_card_says_so(tmp_path):
    import json

    from loom.config import load_config
    from loom.data import build_dataset, read_data_card

    cfg = load_config("quickstart", [f'data.dir="{tmp_path}"', "tokenizer.vocab_size=1024",
                                     "tokenizer.train_bytes=1_000_000"])
    cfg.data.sources[0].max_files = 60
    build_dataset(cfg)
    card = json.loads((tmp_path / "data_card.json").read_text())
    train = card["tokens"]["train"]
    share = train["text"] / sum(train.values())
    assert share >= 0.2  # the preset asks for a quarter of the bytes
    assert card["token_share"]["train"]["text"] == pytest.approx(share)
    first = read_data_card(tmp_path).split("\n")[2]
    assert first.startswith(f"Training split: {sum(train.values()):,} tokens, {share:.1%} text")
    assert "mixture weights text 0.25" in first and "each text document" in first
