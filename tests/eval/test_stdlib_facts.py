"""The standard-library knowledge task: facts read from source without importing it, one module
per name, a fixed train/test split of the questions, and passages that hold the answers."""

from __future__ import annotations

from loom.eval.stdlib_facts import fact_items, questions, stdlib_facts
from loom.eval.suites import score


def test_facts_come_from_public_documented_functions_one_module_per_name(tmp_path):
    (tmp_path / "alpha.py").write_text(
        'import sys\nsys.exit("imported: the task must only parse")\n\n'
        'def shared(a):\n    """In two modules."""\n\n'
        'def only_alpha(path, *, mode="r"):\n    """Open PATH.\n\n    More.\n    """\n\n'
        'def _private(x):\n    """Hidden."""\n\n'
        'def bare(y):\n    pass\n\n'
        'class Thing:\n    def method(self):\n        """A method, not a function of the module."""\n')
    (tmp_path / "beta.py").write_text('def shared(b):\n    """Again."""\n\nasync def fetch():\n    """Fetch it."""\n')
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "_internal.py").write_text('def hidden(z):\n    """Private module."""\n')
    facts = stdlib_facts(root=tmp_path)
    assert [(f.module, f.name, f.parameters, f.summary) for f in facts] == [
        ("alpha", "only_alpha", ("path", "mode"), "Open PATH."), ("beta", "fetch", (), "Fetch it.")]
    assert questions(facts[1]) == [('Which module of the standard library defines the function "fetch"?', "beta")]
    assert facts[0].passage.startswith("alpha.only_alpha(path, mode): a function of the module alpha.")


def test_the_running_standard_library_gives_a_fixed_split_whose_passages_hold_the_answers():
    facts = stdlib_facts(200, seed=3)
    assert len(facts) == 200 and facts == stdlib_facts(200, seed=3) and facts != stdlib_facts(200, seed=4)
    assert len({f.name for f in facts}) == 200
    train, test = fact_items(facts, "train"), fact_items(facts, "test")
    assert test and len(train) > 2 * len(test)
    assert not {i.question for i in train} & {i.question for i in test}
    passages = {f.name: f.passage for f in facts}
    for item in train + test:
        name = item.question.split('"')[1].split(".")[-1]
        assert item.answer in passages[name] and score(item, f" {item.answer}\nmore")
        assert not score(item, item.answer + "_")
