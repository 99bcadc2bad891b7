"""Reasoning programs: parsing, validation errors that name the node, and the expression whitelist."""

from __future__ import annotations

import json

import pytest

from loom.reason.expressions import ExpressionError, calculate, evaluate, expression_names, final_answer, majority
from loom.reason.program import ProgramError, load_program
from loom.reason.strategies import PROGRAM_DIR, builtin_program


def prog(*nodes, inputs=("q",)):
    return {"name": "t", "inputs": list(inputs), "nodes": list(nodes)}


ANSWER = {"id": "answer", "kind": "answer", "value": "{a}"}
ASK = {"id": "ask", "kind": "model", "prompt": "Q: {q}\nA:", "output": "a"}


def test_a_good_program_round_trips_through_json(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prog(ASK, ANSWER)))
    program = load_program(path)
    assert [n.id for n in program.nodes] == ["ask", "answer"]
    assert program.dependencies() == {"ask": set(), "answer": {"ask"}}
    assert load_program(json.dumps(prog(ASK, ANSWER))).raw == program.raw


def test_every_builtin_program_is_valid():
    for path in PROGRAM_DIR.glob("*.json"):
        assert builtin_program(path.stem).nodes


@pytest.mark.parametrize("program, message", [
    (prog(ASK, {**ANSWER, "value": "{b}"}), "node 'answer' reads b, which no node writes"),
    (prog(ASK, ANSWER, {"id": "ask", "kind": "answer", "value": "x"}), "node id 'ask' is used twice"),
    (prog(ASK, ANSWER, {"id": "orphan", "kind": "model", "prompt": "hi", "output": "z"}),
     "node 'orphan' is unreachable"),
    (prog({"id": "x", "kind": "model", "prompt": "{y}", "output": "x1"},
          {"id": "y", "kind": "model", "prompt": "{x1}", "output": "y"}, {**ANSWER, "value": "{y}"}),
     "depends on itself through"),
    (prog({"id": "m", "kind": "magic"}), "node 'm': kind 'magic' is not one of"),
    (prog({**ASK, "temprature": 1}, ANSWER), "node 'ask' (model): unknown field(s) temprature"),
    (prog({"id": "e", "kind": "tool", "tool": "expr", "expr": "__import__('os')", "output": "a"}, ANSWER),
     "node 'e': expression"),
    (prog({"id": "e", "kind": "tool", "tool": "expr", "expr": "q.__class__", "output": "a"}, ANSWER),
     ".__class__ is not allowed"),
    (prog({"id": "b", "kind": "branch", "condition": "q", "then": ["nowhere"]}, ASK, ANSWER),
     "branch 'b': 'then' names 'nowhere'"),
    (prog({"id": "l", "kind": "loop", "for_each": "q", "carry": ["acc"], "body": [
        {"id": "s", "kind": "model", "prompt": "{item}{acc}", "output": "acc"}]}, {**ANSWER, "value": "{acc}"}),
     "loop 'l' carries 'acc': give it one start value"),
    (prog({"id": "l", "kind": "loop", "until": "True", "max_iterations": 100000, "body": [ASK]}, ANSWER),
     "max_iterations must be 1 to 1000"),
    (prog(ASK, {**ASK, "id": "ask2"}, ANSWER), "only the arms of one branch may write the same variable"),
    (prog(ASK, ANSWER, {**ANSWER, "id": "answer2"}), "a program has one answer"),
    (prog(ASK), "no answer node"),
    (prog({**ASK, "prompt": "{q"}, ANSWER), "bad template"),
    ({"nodes": []}, "non-empty \"nodes\" list"),
])
def test_validation_errors_name_the_node(program, message):
    with pytest.raises(ProgramError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_program(program)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"nodes": [\n  {"id": "a",,}\n]}')
    with pytest.raises(ProgramError, match=r"p.json: not valid JSON \(line 2"):
        load_program(path)


def test_expressions():
    assert evaluate("words(quoted(q)[0])", {"q": 'Take "apple pie" now'}) == ["apple", "pie"]
    assert evaluate("join([w[-1] for w in ws])", {"ws": ["ab", "cd"]}) == "bd"
    assert evaluate("len(xs) > 2 and xs[0] == 'a'", {"xs": ["a", "b", "c"]}) is True
    assert expression_names("len(xs) + sum(x for x in ys) + n") == {"xs", "ys", "n"}
    for bad in ("2 ** 100000", "'x' * 10**7", "list(range(10**8))", "open('/etc/passwd')", "(lambda: 1)()",
                "().__class__.__bases__", "_pow(2, 3)"):
        with pytest.raises(ExpressionError):
            evaluate(bad, {})
    assert calculate("12 * (3 + 4)") == 84 and calculate("7 / 2") == 3.5 and calculate("6 / 3 =") == 2
    with pytest.raises(ExpressionError, match="holds more than numbers"):
        calculate("len('abc')")
    assert final_answer("First 2 + 2 = 4. So the answer is 4.") == "4"
    assert final_answer("step one\nstep two\n42") == "42"
    assert majority(["4", "5", "4", "", "5", "4"]) == "4"
