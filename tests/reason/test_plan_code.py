"""Plans in loom's Python subset: each compiles to the graph its JSON equivalent spells out, runs
to the same answers, and everything outside the subset is refused with its line."""

from __future__ import annotations

import json
import textwrap

import pytest
from rules_backend import RuleBackend

from loom.reason import Executor, load_program
from loom.reason.plan_code import PlanError, compile_plan
from loom.reason.program import ProgramError

LAST_LETTERS = '''
"""Least-to-most last letters."""
word_list = words(quoted(question)[0])
letters = ""
firsts = []
for word in word_list:
    letter = ask(f'Q: What is the last letter of "{word}"?\\nA:')
    if letters == "":
        letters = letter
    else:
        letters = ask(f'Q: Join "{letters}" and "{letter}".\\nA:')
    firsts.append(word[0])
answer(letters)
'''
LAST_LETTERS_JSON = {"inputs": ["question"], "nodes": [
    {"id": "w", "kind": "tool", "tool": "expr", "expr": "words(quoted(question)[0])", "output": "word_list"},
    {"id": "loop", "kind": "loop", "for_each": "word_list", "as": "word", "carry": ["letters"], "body": [
        {"id": "last", "kind": "model", "prompt": 'Q: What is the last letter of "{word}"?\nA:', "output": "letter"},
        {"id": "first", "kind": "branch", "condition": "letters == ''", "then": ["start"], "else": ["join"]},
        {"id": "start", "kind": "tool", "tool": "expr", "expr": "letter", "output": "letters"},
        {"id": "join", "kind": "model", "prompt": 'Q: Join "{letters}" and "{letter}".\nA:', "output": "letters"},
    ], "init": {"letters": ""}},
    {"id": "a", "kind": "answer", "value": "{letters}"},
]}  # `firsts` is collected but never read: the compiler drops it

COLLATZ = '''
n = int(numbers(question)[0])
steps = 0
while n != 1:
    if n % 2 == 0:
        n = n // 2
    else:
        n = calc(f"3 * {n} + 1")
    steps += 1
answer(f"{steps} steps")
'''
COLLATZ_JSON = {"inputs": ["question"], "nodes": [
    {"id": "n", "kind": "tool", "tool": "expr", "expr": "int(numbers(question)[0])", "output": "n"},
    {"id": "loop", "kind": "loop", "max_iterations": 100, "while": "n_2 != 1", "carry": ["n_2", "steps"], "body": [
        {"id": "even", "kind": "branch", "condition": "n_2 % 2 == 0", "then": ["halve"], "else": ["triple"]},
        {"id": "halve", "kind": "tool", "tool": "expr", "expr": "n_2 // 2", "output": "n_2"},
        {"id": "triple", "kind": "tool", "tool": "calc", "text": "3 * {n_2} + 1", "output": "n_2"},
        {"id": "count", "kind": "tool", "tool": "expr", "expr": "steps + 1", "output": "steps"},
    ], "init_from": {"n_2": "n"}, "init": {"steps": 0}},
    {"id": "a", "kind": "answer", "value": "{steps} steps"},
]}

ASK_BRANCH = '''
kind = ask("Q: What is {thing}?\\nA:", thing=quoted(question)[0], max_tokens=4)
if ask(f"Q: Is a {kind} alive?\\nA:"):
    answer("alive")
elif kind == "rock":
    answer("a rock")
else:
    answer(f"not alive: {kind}")
'''
ASK_BRANCH_JSON = {"inputs": ["question"], "nodes": [
    {"id": "t", "kind": "tool", "tool": "expr", "expr": "quoted(question)[0]", "output": "value_2"},
    {"id": "k", "kind": "model", "prompt": "Q: What is {value_2}?\nA:", "output": "kind", "max_tokens": 4},
    {"id": "alive", "kind": "branch", "ask": "Q: Is a {kind} alive?\nA:", "then": ["yes"], "else": ["rock"]},
    {"id": "yes", "kind": "answer", "value": "alive"},
    {"id": "rock", "kind": "branch", "condition": "kind == 'rock'", "then": ["r"], "else": ["no"]},
    {"id": "r", "kind": "answer", "value": "a rock"},
    {"id": "no", "kind": "answer", "value": "not alive: {kind}"},
]}

SUMS = '''
parts = []
total = 0
for i, x in enumerate(numbers(question)):
    total = int(calc(f"{total} + {x}"))
    parts.append(f"{i}:{total}")
answer(join(parts, " "))
'''
SUMS_JSON = {"inputs": ["question"], "nodes": [
    {"id": "items", "kind": "tool", "tool": "expr", "expr": "list(numbers(question))", "output": "items_4"},
    {"id": "loop", "kind": "loop", "for_each": "items_4", "as": "x", "index": "i", "carry": ["total"], "body": [
        {"id": "c", "kind": "tool", "tool": "calc", "text": "{total} + {x}", "output": "calc_5"},
        {"id": "int", "kind": "tool", "tool": "expr", "expr": "int(calc_5)", "output": "total_3"},
        # inside the body `total` is the value the iteration started with, so the new one has its own name
        {"id": "part", "kind": "tool", "tool": "expr", "expr": "f'{i}:{total_3}'", "output": "value_6"},
        {"id": "next", "kind": "tool", "tool": "expr", "expr": "total_3", "output": "total"},
    ], "init": {"total": 0}, "collect": {"parts": "value_6"}},
    {"id": "joined", "kind": "tool", "tool": "expr", "expr": "join(parts, ' ')", "output": "value_7"},
    {"id": "a", "kind": "answer", "value": "{value_7}"},
]}


def canonical(raw: dict) -> dict:
    """A program with its node ids replaced by their order, so that two spellings compare."""
    ids: dict[str, str] = {}

    def number(nodes):
        for n in nodes:
            ids[n["id"]] = f"node{len(ids)}"
            if n["kind"] == "loop":
                number(n["body"])

    def rewrite(nodes):
        out = []
        for n in nodes:
            n = {k: v for k, v in n.items() if k != "note"}
            n["id"] = ids[n["id"]]
            for arm in ("then", "else"):
                if arm in n:
                    n[arm] = [ids[i] for i in n[arm]]
            if "body" in n:
                n["body"] = rewrite(n["body"])
            out.append(n)
        return out

    number(raw["nodes"])
    return {"inputs": raw["inputs"], "nodes": rewrite(raw["nodes"])}


def backend() -> RuleBackend:
    return RuleBackend([(r'last letter of "(\w+)"', lambda m: m.group(1)[-1]),
                        (r'Join "(\w*)" and "(\w*)"', lambda m: m.group(1) + m.group(2)),
                        (r"What is (\w+)\?", lambda m: {"cat": "cat", "stone": "rock"}.get(m.group(1), "idea")),
                        (r"Is a (\w+) alive", lambda m: "yes" if m.group(1) == "cat" else "no")])


@pytest.mark.parametrize("plan, equivalent, questions", [
    (LAST_LETTERS, LAST_LETTERS_JSON, ['Take the last letters of "apple banana cherry".', 'Words: "x".']),
    (COLLATZ, COLLATZ_JSON, ["Start at 6.", "Start at 1.", "Start at 27."]),
    (ASK_BRANCH, ASK_BRANCH_JSON, ['What of "cat"?', 'What of "stone"?', 'What of "love"?']),
    (SUMS, SUMS_JSON, ["Add 3, 4 and 10.", "Nothing to add."]),
])
def test_a_plan_compiles_to_the_graph_its_json_spells_out(plan, equivalent, questions, tmp_path):
    compiled = compile_plan(plan)
    assert canonical(compiled) == canonical(equivalent), json.dumps(compiled, indent=1)
    for i, question in enumerate(questions):
        from_code, from_json = backend(), backend()
        a = Executor(from_code, tmp_path / f"code{i}").run(load_program(compiled), {"question": question})
        b = Executor(from_json, tmp_path / f"json{i}").run(load_program(equivalent), {"question": question})
        assert a.answer == b.answer and from_code.prompts == from_json.prompts


def test_the_plans_answer_what_python_would(tmp_path):
    def run(plan, question):
        return Executor(backend(), tmp_path / str(abs(hash((plan, question))))).run(
            load_program(compile_plan(plan)), {"question": question}).answer

    assert run(LAST_LETTERS, 'Take the last letters of "apple banana cherry".') == "eay"
    assert run(COLLATZ, "Start at 6.") == "8 steps"  # 6 3 10 5 16 8 4 2 1
    assert run(COLLATZ, "Start at 1.") == "0 steps"  # the condition is checked before the first iteration
    assert run(ASK_BRANCH, 'What of "stone"?') == "a rock"
    assert run(SUMS, "Add 3, 4 and 10.") == "0:3 1:7 2:17"
    assert run(SUMS, "Nothing to add.") == ""
    nested = """
    grid = []
    for row in numbers(question):
        best = 0
        for col in range(row):
            if col * row > best:
                best = col * row
        grid.append(best)
    answer(sum(grid))
    """
    assert run(textwrap.dedent(nested), "rows 3 4") == str(2 * 3 + 3 * 4)  # an answer is text


def test_a_plan_file_loads_like_a_json_program(tmp_path):
    path = tmp_path / "letters.py"
    path.write_text(LAST_LETTERS)
    program = load_program(path)
    assert program.name == "letters" and program.description == "Least-to-most last letters."
    assert Executor(backend(), tmp_path / "w").run(program, {"question": '"go on"'}).answer == "on"
    bad = tmp_path / "bad.py"
    bad.write_text("x = ask('hi')\nimport os\nanswer(x)\n")
    with pytest.raises(ProgramError, match=r"bad\.py, line 2: import is outside the plan language"):
        load_program(bad)


@pytest.mark.parametrize("plan, line, message", [
    ("import os\nanswer(question)", 1, "import is outside the plan language"),
    ("def f():\n    pass\nanswer(question)", 1, "def is outside the plan language"),
    ("x = 1\nwhile x < 3:\n    x += 1\n    break\nanswer(x)", 4, "break is outside the plan language"),
    ("for w in words(question):\n    answer(w)", 2, "answer(...) inside a loop"),
    ("answer(question)\nx = 1", 2, "nothing may follow answer"),
    ("x = ask('hi')", None, "never calls answer"),
    ("answer(y)", 1, "'y' is not defined here"),
    ("if question:\n    y = 1\nanswer(y)", 3, "'y' is assigned in only one arm of the if at line 1"),
    ("for w in words(question):\n    y = w\nanswer(y)", 3, "'y' belongs to the loop at line 1"),
    ("if question:\n    answer(1)\nelse:\n    x = 2\nanswer(x)", 1, "only one arm of this if calls answer"),
    ("x = 1\nwhile ask('go on?'):\n    x += 1\nanswer(x)", 2, "a while condition is an expression"),
    ("x = 1\nwhile x < 3:\n    y = 2\nanswer(x)", 2, "changes nothing its condition reads"),
    ("xs = [1]\nfor w in words(question):\n    xs.append(w)\nanswer(xs)", 2, "not a list made empty"),
    ("xs = []\nfor w in words(question):\n    if w:\n        xs.append(w)\nanswer(xs)", 4, "collects only at the top"),
    ("xs = []\nxs.append(1)\nanswer(xs)", 2, "collects only at the top of a loop's body"),
    ("x = ask(f'{question!r}')\nanswer(x)", 1, "conversions and format specs"),
    ("words = words(question)\nanswer(words)", 1, "'words' cannot be a variable here"),
    ("x = ask('{q}', y=question)\nanswer(x)", 1, "the prompt's {q} is neither a variable nor a keyword"),
    ("x = ask('{question}', y=question)\nanswer(x)", 1, "keyword argument(s) y name no {field}"),
    ("x = search(question)\nanswer(x)", 1, "search needs a retrieval index"),
    ("x = ask(question, y=1)\nanswer(x)", 1, "keyword fields go with a string prompt"),
    ("ask('hi')\nanswer(question)", 1, "the result of ask(...) is not used"),
    ("x = question.__class__\nanswer(x)", 1, ".__class__ is not allowed"),
    ("x = [i for i in\nanswer(x)", 1, "not valid Python"),
    ("a = b = question\nanswer(a)", 1, "assign one name at a time"),
    ("x = ask('hi', max_tokens=question)\nanswer(x)", 1, "max_tokens= must be a constant"),
])
def test_what_the_subset_refuses_names_its_line(plan, line, message):
    with pytest.raises(PlanError) as caught:
        compile_plan(plan, where="p.py")
    text = str(caught.value)
    assert message in text, text
    assert text.startswith(f"p.py, line {line}: " if line else "p.py: "), text


def test_json_programs_take_the_new_loop_forms():
    base = {"inputs": ["n"], "nodes": [
        {"id": "l", "kind": "loop", "while": "m < 10", "carry": ["m"], "init_from": {"m": "n"},
         "body": [{"id": "s", "kind": "tool", "tool": "expr", "expr": "m * 2", "output": "m"}]},
        {"id": "a", "kind": "answer", "value": "{m}"}]}
    assert Executor(RuleBackend()).run(load_program(base), {"n": 3}).answer == "12"
    assert Executor(RuleBackend()).run(load_program(base), {"n": 30}).answer == "30"  # never ran
    both = json.loads(json.dumps(base))
    both["nodes"][0]["init"] = {"m": 1}
    with pytest.raises(ProgramError, match="carries 'm': give it one start value"):
        load_program(both)
    two = json.loads(json.dumps(base))
    two["nodes"][0]["until"] = "m > 5"
    with pytest.raises(ProgramError, match='exactly one of "for_each", "until" and "while"'):
        load_program(two)
