"""Test-set decontamination, evaluation's side: which texts are test items.

The test items are those `loom eval` would ask with the same config's `[eval]` settings (items,
seed, difficulties), plus HumanEval's prompts, solutions and tests. `loom data build` with
`data.decontaminate = ["all"]` (or suite names) is handed their word n-grams (`item_ngrams`) by
its caller, drops every training document that contains one and counts it in the data card; the
n-grams and the index that finds them are `loom.data.contamination`'s (GPT-3's 13-gram rule).
"""

from __future__ import annotations

from collections.abc import Iterable

from loom.data.contamination import ContaminationIndex, ngrams

__all__ = ["ContaminationIndex", "item_texts", "ngrams", "item_ngrams"]


def item_texts(suites: Iterable[str], eval_cfg) -> list[str]:
    """The text of every test item of the named suites (groups allowed) under `eval_cfg`."""
    from loom.eval.run import resolve_suites

    texts: list[str] = []
    for name in resolve_suites(list(suites)):
        if name == "bpb":
            continue  # validation shards are held out by construction
        if name == "humaneval":
            from loom.eval.humaneval import load_problems

            texts += [p.prompt + p.canonical_solution + "\n" + p.test for p in load_problems()]
            continue
        from loom.eval.suites import SUITES

        suite = SUITES[name]
        for difficulty in eval_cfg.difficulty.get(name) or [suite.default_difficulty]:
            texts += [f"{item.question} {item.answer}" for item in suite.items("test", eval_cfg.items, difficulty,
                                                                               eval_cfg.seed)]
    return texts


def item_ngrams(suites: Iterable[str], n: int, eval_cfg) -> list[str]:
    """The sorted word n-grams of every test item of the named suites: what `loom data build`
    with `data.decontaminate` drops training documents for."""
    return sorted(ngrams(item_texts(suites, eval_cfg), n))
