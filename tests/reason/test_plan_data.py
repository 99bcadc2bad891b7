"""The planning data: each suite's plan is in the canonical form the constrained decoder writes,
answers the suite's test questions at every length when its steps are answered right (an oracle
stands in for the model), and no training question is a test question."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from rules_backend import RuleBackend

from conftest import run_loom
from loom.eval.suites import SUITES, score
from loom.reason import Executor, load_program
from loom.reason.constrained import PlanDecoder
from loom.reason.plan_code import compile_plan
from loom.reason.plan_data import PLANS, SUB_SKILLS, plan_examples, planning_documents
from loom.tokenizer import train_tokenizer

CAP = 4  # the longest question in training, here


def oracle() -> RuleBackend:
    """Answers every step question the plans ask, as a perfect model would."""
    return RuleBackend([
        (r'What is the last letter of "(\w+)"\?', lambda m: m.group(1)[-1]),
        (r'Join "(\w*)" and "(\w*)"\.', lambda m: m.group(1) + m.group(2)),
        (r"What is (\d+) plus (\d+)\?", lambda m: str(int(m.group(1)) + int(m.group(2)))),
        (r"Is (\d+) even\?", lambda m: "yes" if int(m.group(1)) % 2 == 0 else "no"),
        (r"What is half of (\d+)\?", lambda m: str(int(m.group(1)) // 2)),
        (r"What is 3 times (\d+) plus 1\?", lambda m: str(3 * int(m.group(1)) + 1)),
        (r"What is (\d+) doubled\?", lambda m: str(2 * int(m.group(1)))),
    ])


@pytest.mark.parametrize("suite", list(PLANS))
def test_each_plan_answers_its_suite_at_every_length(suite, tmp_path):
    program = load_program(compile_plan(PLANS[suite]))
    low = SUITES[suite].min_difficulty
    for length in (low, CAP, 2 * CAP, 4 * CAP):  # the training cap and beyond it
        for i, item in enumerate(SUITES[suite].items("test", 5, length, seed=1)):
            result = Executor(oracle(), tmp_path / f"{length}-{i}").run(program, {"question": item.question})
            assert result.status == "done" and score(item, result.answer), (item, result)


@pytest.mark.parametrize("corpus", ["stdlib", "plans"])
def test_every_plan_is_in_the_form_the_constrained_decoder_writes(corpus):
    """Token by token, as the tokenizer splits it; with a tokenizer trained on the planning data
    itself, whose whitespace merges differ ("\n   " then " total")."""
    if corpus == "stdlib":
        stdlib = Path(sys.modules["os"].__file__).parent
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:30]]
    else:
        texts = list(planning_documents(n_plans=300, n_steps=300, max_difficulty=CAP))
    tok = train_tokenizer(texts, 600 if corpus == "stdlib" else 1024)
    decoder = PlanDecoder(tok)
    for suite, plan in PLANS.items():
        state = decoder.start()
        for token in tok.encode(plan):
            assert decoder.mask(state)[token], f"{suite}: {tok.decode([token])!r} refused after {state.text!r}"
            decoder.advance(state, token)
        assert decoder.mask(state)[tok.eos_id], suite


def test_the_planning_data_holds_no_test_question_and_asks_each_sub_skill():
    documents = list(planning_documents(n_plans=60, n_steps=60, max_difficulty=CAP))
    questions = {m for d in documents for m in re.findall(r"^# Question: (.*)$|^Q: (.*)$", d, re.M)}
    asked = {q for pair in questions for q in pair if q}
    for name in {*PLANS, *(s for skills in SUB_SKILLS.values() for s in skills)}:
        suite = SUITES[name]
        top = suite.max_difficulty or 4 * CAP
        for level in range(suite.min_difficulty, min(top, 4 * CAP) + 1):
            test = {item.question for item in suite.items("test", 30, level, seed=0)}
            assert not test & asked, name
    for suite in PLANS:  # plans for every suite, at lengths up to the cap and no further
        examples = plan_examples(suite, 20, CAP)
        assert len(examples) == 20 and {e["difficulty"] for e in examples} <= set(range(1, CAP + 1))
        assert all(e["plan"] == PLANS[suite] and e["question"] in e["prompt"] for e in examples)
    # and none is caught by the 13-gram rule against the test questions (templated questions must
    # not share 13 words with every test item)
    from loom.data.contamination import ContaminationIndex, ngrams

    tests = [item.question for name in {*PLANS, *(s for skills in SUB_SKILLS.values() for s in skills)}
             for item in SUITES[name].items("test", 30, SUITES[name].default_difficulty, seed=0)]
    index = ContaminationIndex(ngrams(tests))
    assert not [d for d in documents if index.contains(d)]
    steps = [d for d in documents if d.startswith("Q: ")]
    for form in ("plus", "even", "half of", "3 times", "doubled", "last letter", "Join"):
        assert any(form in d for d in steps), form


def test_loom_reason_data_writes_the_documents(tmp_path):
    import json

    out = tmp_path / "plans.jsonl"
    said = run_loom("reason", "data", "--out", str(out), "--plans", "5", "--steps", "6", "--max-difficulty", "3",
                    cwd=tmp_path).stdout
    lines = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert lines == list(planning_documents(5, 6, 3)) and f"{len(lines)} documents (20 plans)" in said
