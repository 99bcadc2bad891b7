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
