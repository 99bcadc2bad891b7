"""Strategies, the least-to-most planner, retrieval and the pictures, on a rule-based backend."""

from __future__ import annotations

import json

import pytest
from rules_backend import RuleBackend

from loom.errors import LoomError
from loom.reason import build_index, evaluate_strategies, search, solve, strategies_plot, strategies_table
from loom.reason.planner import decompose, parse_decomposition, plan_program
from loom.reason.retrieval import folder_passages, passages


def test_parse_decomposition_repairs_replies():
    q = "How old is Bo?"
    assert parse_decomposition(" How old is Al?\n2. How old is Bo?\n\nQ: next", q) == ["How old is Al?", q]
    assert parse_decomposition(" How old is Al?\n2) Al is 3; Bo is 2 older\n", q) == [
        "How old is Al?", "Al is 3; Bo is 2 older", q]  # the question is appended when it is not last
    assert parse_decomposition(" a\n- a\n* b\nStep 4: How old is Bo", q) == ["a", "b", "How old is Bo"]
    assert parse_decomposition("   \n", q) == []  # nothing to repair: the planner asks again
    assert len(parse_decomposition("\n".join(f"{i}. s{i}" for i in range(1, 30)), q, max_steps=5)) == 5


def test_least_to_most_plans_and_answers_in_order(tmp_path):
    q = "Ann has 2 boxes of 3 pens and 1 more pen. How many pens does she have?"
    backend = RuleBackend([
        (r"Q: " + q.replace("?", r"\?").replace(".", r"\.") + r"\n1\.$",
         " How many pens are in 2 boxes of 3 pens?\n2. " + q),
        (r"Q: How many pens are in 2 boxes of 3 pens\?\nA:$", "6"),
        (r"A: 6\n\nQ: Ann has .*\nA:$", "7"),
    ])
    result = solve(q, backend, "graph", workdir=tmp_path)
    assert result["status"] == "done" and result["answer"] == "7"
    assert result["plan"]["sub_questions"] == ["How many pens are in 2 boxes of 3 pens?", q]
    assert result["plan"]["fallback"] is False and result["model_calls"] == 3
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert trace[1]["event"] == "plan"
    assert (tmp_path / "graph.html").is_file() and "q2 (model)" in (tmp_path / "graph.mmd").read_text()


def test_planner_falls_back_to_direct_and_says_so():
    backend = RuleBackend([(r"\n1\.$", "\n\n"), (r"Q: What is up\?\nA:$", "the sky")])
    plan = decompose("What is up?", backend, retries=2)
    assert plan.fallback and plan.attempts == 3 and backend.calls == 3
    program = plan_program(plan)
    assert program.name == "direct (no decomposition)"
    result = solve("What is up?", backend, "graph")
    assert result["answer"] == "the sky" and result["plan"]["fallback"] is True


def test_direct_cot_and_self_consistency():
    backend = RuleBackend([
        (r"step by step\.$", lambda m: "Two and two. The answer is 4."),
        (r"Q: What is 2\+2\?\nA:$", "5"),
    ])
    assert solve("What is 2+2?", backend, "direct")["answer"] == "5"
    assert solve("What is 2+2?", backend, "cot")["answer"] == "4"
    votes = iter(["The answer is 4.", "The answer is 3.", "The answer is 4."])
    sampler = RuleBackend([(r"step by step\.$", lambda m: next(votes))])
    result = solve("What is 2+2?", sampler, "sc", samples=3)
    assert result["answer"] == "4" and result["model_calls"] == 3
    with pytest.raises(LoomError, match="unknown strategy"):
        solve("x", backend, "magic")


def test_retrieval_and_rag(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "paris.md").write_text("The Eiffel Tower stands in Paris.\n\nIt opened in 1889.")
    (docs / "peaks.txt").write_text("Mount Everest is the highest mountain on Earth.")
    (docs / "ignored.bin").write_bytes(b"\x00\x01")
    info = build_index(tmp_path / "index", folder_passages(docs))
    assert info["passages"] == 2
    hits = search(tmp_path / "index", "When did the Eiffel Tower open?", k=2)
    assert hits[0]["id"] == "paris.md#0" and hits[0]["score"] > 0
    assert search(tmp_path / "index", "zebra", k=2) == []
    backend = RuleBackend([(r"Context:\n\[paris\.md#0\] The Eiffel .*\n\nQ: When did .*\nA:$", "1889")])
    result = solve("When did the Eiffel Tower open?", backend, "direct", workdir=tmp_path / "run",
                   rag_index=str(tmp_path / "index"), k=1)
    assert result["answer"] == "1889"
    trace = [json.loads(line) for line in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    assert [e["citations"] for e in trace if e["event"] == "retrieval"] == [["paris.md#0"]]
    planned = RuleBackend([(r"\n1\.$", " When did the Eiffel Tower open?"),
                           (r"Context:\n\[paris\.md#0\] .*\n\nQ: When did the Eiffel Tower open\?\nA:$", "1889")])
    result = solve("When did the Eiffel Tower open?", planned, "graph", rag_index=str(tmp_path / "index"), k=1)
    assert result["answer"] == "1889" and result["plan"]["sub_questions"] == ["When did the Eiffel Tower open?"]
    long = " ".join(f"w{i}" for i in range(400))
    pieces = list(passages("doc", long + "\n\nshort tail", "src", words=150))
    assert [p["id"] for p in pieces] == ["doc#0", "doc#1", "doc#2"]  # 150 + 150 + (100 + the 2-word tail)
    assert pieces[2]["text"].endswith("w399 short tail")
    assert all(len(p["text"].split()) <= 150 for p in pieces)


def test_strategies_on_a_suite(tmp_path):
    backend = RuleBackend([
        (r'last letter of "(\w+)"\?\nA:$', lambda m: m.group(1)[-1]),
        (r'Join "(\w*)" and "(\w*)"\.\nA:$', lambda m: m.group(1) + m.group(2)),
        (r"and join them\.\nA:$", "zz"),
    ])
    rows = evaluate_strategies("last_letters", backend, ["direct", "graph"], [3, 6], items=5, log=lambda *_: None)
    by = {(r["strategy"], r["difficulty"]): r for r in rows}
    assert by[("graph", 3)]["accuracy"] == 1.0 and by[("graph", 6)]["accuracy"] == 1.0
    assert by[("direct", 6)]["accuracy"] == 0.0 and by[("graph", 6)]["calls_per_item"] == 11
    assert by[("graph", 3)]["program"] == "last-letters, least-to-most"
    assert ("| last_letters | 6 | graph (last-letters, least-to-most) | 100% [57%, 100%] | 5 / 5 | 11.0 |"
            in strategies_table(rows))
    # a second seed draws other items; the table pools them, its interval narrowing with the count
    rows += evaluate_strategies("last_letters", backend, ["direct", "graph"], [3, 6], items=5, seed=1,
                                log=lambda *_: None)
    table = strategies_table(rows)
    assert "| last_letters | 6 | graph (last-letters, least-to-most) | 100% [72%, 100%] | 10 / 10 | 11.0 |" in table
    assert "| last_letters | 6 | direct | 0% [0%, 28%] | 0 / 10 |" in table and len(table.splitlines()) == 2 + 4
    image = strategies_plot(rows, tmp_path / "plots" / "accuracy.png", cap=4)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(image.parent.glob("*.tmp"))


def test_an_empty_answer_is_a_failure_with_its_cause_and_the_trace_counts_every_call(tmp_path):
    """A model that answers nothing: the planner falls back after three empty replies, the direct
    question gets an empty answer too; the result says so, names the step, and its counts (the
    planning calls included) are the trace's."""
    backend = RuleBackend(default="")
    result = solve("What is up?", backend, "graph", workdir=tmp_path)
    assert result["status"] == "empty-answer" and result["answer"] == ""
    assert "model node 'q1' answered nothing" in result["error"]
    assert result["plan"]["fallback"] is True and result["model_calls"] == backend.calls == 4
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    end = trace[-1]
    assert end["event"] == "run_end" and end["status"] == "empty-answer" and end["error"] == result["error"]
    assert (end["model_calls"], end["tokens"]) == (result["model_calls"], result["tokens"])
    assert result["tokens"] == result["plan"]["tokens"] + sum(
        e["prompt_tokens"] + e["completion_tokens"] for e in trace if e["event"] == "model_call")


def test_a_program_that_never_answers_says_why():
    backend = RuleBackend(default="yes")
    program = {"inputs": ["question"], "nodes": [
        {"id": "check", "kind": "model", "prompt": "{question}", "output": "v"},
        {"id": "pick", "kind": "branch", "condition": "v == 'no'", "then": ["answer"], "else": []},
        {"id": "answer", "kind": "answer", "value": "{v}"}]}
    from loom.reason.program import load_program

    result = solve("Is it?", backend, "graph", load_program(program))
    assert result["status"] == "no-answer" and "without reaching an answer node" in result["error"]
