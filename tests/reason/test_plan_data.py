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
from loom.eval.suites.base import Item
from loom.eval.suites.scan import SCAN_TRAIN_MAX_ACTIONS, SCAN_VERBS, scan_actions
from loom.reason import Executor, load_program
from loom.reason.constrained import PlanDecoder
from loom.reason.expressions import final_answer
from loom.reason.plan_code import compile_plan
from loom.reason.plan_data import (
    COT_PROMPT,
    FORMS,
    PLANS,
    SUB_SKILLS,
    chain_of_thought,
    evaluation_lengths,
    plan_examples,
    planning_documents,
    training_lengths,
    verb_steps,
)
from loom.tokenizer import train_tokenizer

CAP = 4  # the longest question in training, here


def oracle() -> RuleBackend:
    """Answers every step question the plans ask, as a perfect model would."""
    return RuleBackend([(r'What is the last letter of "(\w+)"\?', lambda m: m.group(1)[-1]),
                        (r'What are the actions of "([a-z ]+)"\?', lambda m: " ".join(scan_actions(m.group(1))))])


@pytest.mark.parametrize("suite", list(PLANS))
def test_each_plan_answers_its_suite_at_every_length(suite, tmp_path):
    program = load_program(compile_plan(PLANS[suite]))
    low = SUITES[suite].min_difficulty
    for length in evaluation_lengths(suite, [low, CAP, 2 * CAP, 4 * CAP]):  # the training cap and beyond it
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
        for level in evaluation_lengths(name, list(range(suite.min_difficulty, min(top, 4 * CAP) + 1))):
            test = {item.question for item in suite.items("test", 30, level, seed=0)}
            assert not test & asked, name
    for suite in PLANS:  # plans for every suite, at lengths up to the cap and no further
        examples = plan_examples(suite, 20, CAP)
        assert len(examples) == 20 and {e["difficulty"] for e in examples} <= set(training_lengths(suite, CAP))
        assert all(e["plan"] == PLANS[suite] and e["question"] in e["prompt"] for e in examples)
    # and none is caught by the 13-gram rule against the test questions (templated questions must
    # not share 13 words with every test item)
    from loom.data.contamination import ContaminationIndex, ngrams

    tests = [item.question for name in {*PLANS, *(s for skills in SUB_SKILLS.values() for s in skills)}
             for item in SUITES[name].items("test", 30, SUITES[name].default_difficulty, seed=0)]
    index = ContaminationIndex(ngrams(tests))
    assert not [d for d in documents if index.contains(d)]
    steps = [q for d in documents for q in re.findall(r'^Q: What is the last letter of "(\w+)"', d, re.M)]
    assert len(steps) >= 60 and {len(word) for word in steps} == set(range(3, 10))
    # SCAN: commands of its training side only (at most 22 actions), every verb's actions taught
    scan = [e["answer"] for e in plan_examples("scan", 60, CAP)]
    assert max(len(a.split()) for a in scan) <= SCAN_TRAIN_MAX_ACTIONS < 24 <= min(evaluation_lengths("scan", []))
    verbs = set(re.findall(r'^Q: What are the actions of "([a-z ]+)"\?\nA: ', "\n".join(documents), re.M))
    assert verbs == {v.command() for v in SCAN_VERBS} and len(verb_steps()) == 34


def test_step_questions_survive_exact_deduplication():
    """A step suite has one question per word (or verb); grouped into documents, 4,000 items of
    each stay 4,000."""
    documents = [d for d in planning_documents(n_plans=1, n_steps=4000, max_difficulty=CAP, forms=("direct",))
                 if d.startswith(('Q: What is the last letter of "', 'Q: What are the actions of "'))]
    assert len(set(documents)) == len(documents) == -(-(7 * -(-4000 // 7) + 4000) // 8)
    assert sum(d.count("\nA: ") for d in documents) >= 8000


@pytest.mark.parametrize("suite", list(PLANS))
def test_each_question_is_written_as_plan_answer_and_worked_steps(suite):
    """The same training questions in the three forms the strategies are asked in; the chain of
    thought ends in the suite's answer, read back the way the cot strategy reads it."""
    documents = list(planning_documents(n_plans=8, n_steps=1, max_difficulty=CAP, forms=FORMS))
    mine = [d for d in documents if any(e["question"] + "\n" in d for e in plan_examples(suite, 8, CAP))]
    assert len(mine) == 3 * 8
    for plan, direct, cot in zip(mine[0::3], mine[1::3], mine[2::3]):
        question = re.match(r"# Question: (.*)\n", plan).group(1)
        assert direct.startswith(f"Q: {question}\nA: ") and cot.startswith(COT_PROMPT.format(question=question))
        item = Item(suite, "x", question, direct.split("\nA: ", 1)[1].strip(), 0)
        assert SUITES[suite].check(item) and final_answer(cot) == item.answer
    for length in evaluation_lengths(suite, [CAP, 4 * CAP]):  # the worked steps are right beyond the cap too
        for item in SUITES[suite].items("test", 5, length, seed=2):
            steps = chain_of_thought(suite, item.question, item.answer)
            assert final_answer(steps) == item.answer
            assert steps.count(".") >= (item.question.count(" and ") + item.question.count(" after ") + 1
                                        if suite == "scan" else length)
    only_plans = list(planning_documents(n_plans=8, n_steps=1, max_difficulty=CAP, forms=("plan",)))
    steps = ("Q: What is the last letter", "Q: What are the actions")
    assert all(d.startswith(("# Question", *steps)) for d in only_plans)
    with pytest.raises(ValueError, match="choose from plan, direct, cot"):
        list(planning_documents(forms=("plans",)))


def test_loom_reason_data_writes_the_documents(tmp_path):
    import json

    out = tmp_path / "plans.jsonl"
    said = run_loom("reason", "data", "--out", str(out), "--plans", "5", "--steps", "6", "--max-difficulty", "3",
                    cwd=tmp_path).stdout
    lines = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert lines == list(planning_documents(5, 6, 3)) and f"{len(lines)} documents (25 plans)" in said
    run_loom("reason", "data", "--out", str(out), "--plans", "5", "--forms", "plan", cwd=tmp_path)
    assert len(out.read_text().splitlines()) == 25 + -(-(7 * -(-400 // 7) + 400) // 8)  # 25 plans, the steps
    bad = run_loom("reason", "data", "--out", str(out), "--forms", "plan,answers", cwd=tmp_path, ok=False)
    assert bad.returncode != 0 and "--forms" in bad.stderr and "choose from" in bad.stderr
