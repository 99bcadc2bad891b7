"""Executor semantics against a rule-based backend that stands in for an outside model:
dependency order, parallel steps, batching, the cache, branches, loops and their cap, budgets,
and resuming after a failure or a kill mid-graph."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from rules_backend import RuleBackend

from loom.errors import LoomError
from loom.reason import Budget, Executor, load_program
from loom.reason.backends import BackendError, GenerationSettings


def echo_backend(**kw) -> RuleBackend:
    """Answers "say X" with X, "last letter of "w"" with its last letter, "Join "a" and "b"" with ab."""
    return RuleBackend([(r'last letter of "(\w+)"', lambda m: m.group(1)[-1]),
                        (r'Join "(\w*)" and "(\w*)"', lambda m: m.group(1) + m.group(2)),
                        (r"say (\S+)", lambda m: m.group(1))], **kw)


def events(workdir, kind=None):
    rows = [json.loads(line) for line in (workdir / "trace.jsonl").read_text().splitlines()]
    return [r for r in rows if kind is None or r["event"] == kind]


DIAMOND = {"name": "diamond", "inputs": ["x"], "nodes": [
    {"id": "d", "kind": "model", "prompt": "say {b}-{c}", "output": "out"},
    {"id": "a", "kind": "model", "prompt": "say {x}a", "output": "av"},
    {"id": "b", "kind": "model", "prompt": "say {av}b", "output": "b", "max_tokens": 10},
    {"id": "c", "kind": "model", "prompt": "say {av}c", "output": "c", "max_tokens": 11},
    {"id": "answer", "kind": "answer", "value": "{out}"}]}


def test_dependency_order_and_parallel_independent_steps(tmp_path):
    backend = echo_backend(delay=0.3)
    started = time.monotonic()
    result = Executor(backend, tmp_path, max_parallel=4).run(load_program(DIAMOND), {"x": "1"})
    elapsed = time.monotonic() - started
    assert result.status == "done" and result.answer == "1ab-1ac"
    ends = {e["node"]: e["t"] for e in events(tmp_path, "node_end")}
    starts = {e["node"]: e["t"] for e in events(tmp_path, "node_start")}
    assert starts["b"] >= ends["a"] and starts["c"] >= ends["a"]
    assert starts["d"] >= max(ends["b"], ends["c"]) and starts["answer"] >= ends["d"]
    # b and c (different settings, so separate calls) ran at the same time: 3 delays, not 4
    assert backend.peak_concurrency == 2 and backend.calls == 4
    assert elapsed < 4 * 0.3


def test_same_settings_are_one_batch_and_identical_calls_are_cached(tmp_path):
    program = load_program({"name": "fan", "inputs": [], "nodes": [
        {"id": "p", "kind": "model", "prompt": "say x", "output": "p"},
        {"id": "q", "kind": "model", "prompt": "say y", "output": "q"},
        {"id": "r", "kind": "model", "prompt": "say x", "output": "r"},
        {"id": "answer", "kind": "answer", "value": "{p}{q}{r}"}]})
    backend = echo_backend()
    result = Executor(backend, tmp_path).run(program, {})
    assert result.answer == "xyx"
    assert backend.calls == 1 and backend.prompts == ["say x", "say y"]  # one batch, "say x" asked once
    assert result.model_calls == 2 and result.cache_hits == 1
    assert [e["batch"] for e in events(tmp_path, "model_call") if not e["cached"]] == [2, 2]


BRANCHY = {"name": "branchy", "inputs": ["n"], "nodes": [
    {"id": "check", "kind": "branch", "condition": "int(n) > 10", "then": ["big"], "else": ["small", "extra"]},
    {"id": "big", "kind": "tool", "tool": "expr", "expr": "'big'", "output": "size"},
    {"id": "small", "kind": "model", "prompt": "say small", "output": "size"},
    {"id": "extra", "kind": "tool", "tool": "calc", "text": "{n} * 2", "output": "double"},
    {"id": "uses_extra", "kind": "tool", "tool": "expr", "expr": "int(double) + 1", "output": "plus"},
    {"id": "report", "kind": "branch", "condition": "size == 'big'", "then": ["answer_big"], "else": ["answer_small"]},
    {"id": "answer_big", "kind": "answer", "value": "{size}"},
    {"id": "answer_small", "kind": "answer", "value": "{size} {plus}"}]}


@pytest.mark.parametrize("n, answer, skipped", [("42", "big", {"small", "extra", "uses_extra", "answer_small"}),
                                                ("3", "small 7", {"big", "answer_big"})])
def test_branch_runs_one_arm_and_skips_what_depends_on_the_other(tmp_path, n, answer, skipped):
    backend = echo_backend()
    result = Executor(backend, tmp_path).run(load_program(BRANCHY), {"n": n})
    assert result.status == "done" and result.answer == answer
    assert {e["node"] for e in events(tmp_path, "node_skipped")} == skipped
    assert backend.calls == (0 if n == "42" else 1)


def test_model_decided_branch(tmp_path):
    program = load_program({"name": "ask", "inputs": ["q"], "nodes": [
        {"id": "decide", "kind": "branch", "ask": "Is {q} a fruit? Answer yes or no.", "then": ["yes"], "else": ["no"]},
        {"id": "yes", "kind": "tool", "tool": "expr", "expr": "'fruit'", "output": "v"},
        {"id": "no", "kind": "tool", "tool": "expr", "expr": "'not a fruit'", "output": "v"},
        {"id": "answer", "kind": "answer", "value": "{v}"}]})
    backend = RuleBackend([(r"Is apple a", "Yes."), (r"Is rock a", "no")])
    assert Executor(backend).run(program, {"q": "apple"}).answer == "fruit"
    assert Executor(backend).run(program, {"q": "rock"}).answer == "not a fruit"


def test_loops_for_each_with_carry_and_collect(tmp_path):
    from loom.reason.strategies import builtin_program

    program = builtin_program("last_letters")
    question = 'Take the last letter of each word in "feather leg fruit dog" and join them.'
    result = Executor(echo_backend(), tmp_path).run(program, {"question": question})
    assert result.status == "done" and result.answer == "rgtg"
    assert result.variables["last_letters"] == ["r", "g", "t", "g"]
    assert result.model_calls == 4 + 3  # a last letter per word, a join per word after the first
    taken = [e["taken"] for e in events(tmp_path, "branch")]
    assert taken == ["then", "else", "else", "else"]
    from loom.reason.render import mermaid, read_trace

    picture = mermaid(program, read_trace(tmp_path / "trace.jsonl"))
    assert "n_each_word_0__ --> n_each_word_1__" in picture  # carried letters chain the iterations
    assert 'n_each_word_1__join["join (model)<br/>letters = rg"]:::done' in picture
    assert 'n_each_word_0__join["join (model)"]:::skipped' in picture


def test_until_loop_stops_at_its_cap(tmp_path):
    program = load_program({"name": "count", "inputs": [], "nodes": [
        {"id": "grow", "kind": "loop", "until": "total > 1000000", "max_iterations": 5, "carry": ["total"],
         "init": {"total": 1}, "body": [
             {"id": "double", "kind": "tool", "tool": "calc", "text": "{total} * 2", "output": "total"}]},
        {"id": "answer", "kind": "answer", "value": "{total}"}]})
    result = Executor(echo_backend(), tmp_path).run(program, {})
    assert result.answer == "32"  # 5 doublings, then the cap
    assert events(tmp_path, "loop_cap")[0]["iterations"] == 5
    stopping = load_program({**program.raw, "nodes": [{**program.raw["nodes"][0], "until": "total >= 8"},
                                                      program.raw["nodes"][1]]})
    assert Executor(echo_backend()).run(stopping, {}).answer == "8"


CHAIN = {"name": "chain", "inputs": ["x"], "nodes": [
    {"id": f"s{i}", "kind": "model", "prompt": f"say {{{'x' if i == 0 else f'v{i - 1}'}}}{i}", "output": f"v{i}"}
    for i in range(5)] + [{"id": "answer", "kind": "answer", "value": "{v4}"}]}


def test_budget_stops_between_steps_and_resume_finishes(tmp_path):
    program = load_program(CHAIN)
    fresh = Executor(echo_backend()).run(program, {"x": "a"})
    assert fresh.answer == "a01234" and fresh.model_calls == 5

    backend = echo_backend()
    stopped = Executor(backend, tmp_path, budget=Budget(max_model_calls=2)).run(program, {"x": "a"})
    assert stopped.status == "budget" and stopped.answer is None and backend.calls == 2
    assert "2 model calls reached the budget of 2" in stopped.budget
    assert events(tmp_path, "budget_stop")
    again = echo_backend()
    resumed = Executor(again, tmp_path).run(program, {"x": "a"}, resume=True)
    assert resumed.status == "done" and resumed.answer == fresh.answer
    assert again.calls == 3 and resumed.model_calls == 5  # only the three steps not done before

    slow = echo_backend(delay=0.2)
    timed = Executor(slow, budget=Budget(max_seconds=0.3)).run(program, {"x": "a"})
    assert timed.status == "budget" and slow.calls < 5
    tokens = Executor(echo_backend(), budget=Budget(max_tokens=3)).run(program, {"x": "a"})
    assert tokens.status == "budget" and tokens.model_calls == 1


def test_resume_after_a_failure_mid_loop(tmp_path):
    from loom.reason.strategies import builtin_program

    program = builtin_program("last_letters")
    question = 'Take the last letter of each word in "apple river stone cloud" and join them.'
    calls = {"n": 0}

    def flaky(m):
        calls["n"] += 1
        if calls["n"] == 3:
            raise BackendError("the model server went away")
        return m.group(1)[-1]

    broken = RuleBackend([(r'last letter of "(\w+)"', flaky),
                          (r'Join "(\w*)" and "(\w*)"', lambda m: m.group(1) + m.group(2))])
    failed = Executor(broken, tmp_path).run(program, {"question": question})
    assert failed.status == "error" and "the model server went away" in failed.error
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["loops"]["each_word"]["iteration"] == 2  # two words done, the third cut short
    backend = echo_backend()
    resumed = Executor(backend, tmp_path).run(program, {"question": question}, resume=True)
    assert resumed.status == "done" and resumed.answer == "ered"
    assert resumed.model_calls == 7
    assert len(backend.prompts) == 7 - 3  # the calls that succeeded before are not asked again
    with pytest.raises(LoomError, match="another program or other inputs"):
        Executor(backend, tmp_path).run(program, {"question": "other"}, resume=True)


def test_resume_after_the_process_is_killed_mid_graph(tmp_path):
    """A real process runs a slow chain and is SIGKILLed after two steps; a second run resumes."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from loom.reason import Executor, load_program
        from rules_backend import RuleBackend
        program = load_program(json.loads({json.dumps(json.dumps(CHAIN))}))
        backend = RuleBackend([(r"say (\\S+)", lambda m: m.group(1))], delay=float(sys.argv[1]))
        result = Executor(backend, sys.argv[2]).run(program, {{"x": "a"}}, resume=True)
        print(json.dumps({{"answer": result.answer, "asked": len(backend.prompts), "calls": result.model_calls}}))
    """))
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, str(script), "1.0", str(work)], env={**os.environ})
    deadline = time.time() + 60
    while time.time() < deadline:
        state = work / "state.json"
        if state.is_file() and sum(v == "done" for v in json.loads(state.read_text())["status"].values()) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sum(v == "done" for v in json.loads((work / "state.json").read_text())["status"].values())
    assert 2 <= done_before < 5
    out = subprocess.run([sys.executable, str(script), "0", str(work)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answer"] == "a01234" and result["calls"] == 5 and result["asked"] == 5 - done_before
    assert [e for e in events(work, "run_start")][-1]["resumed"] is True


def test_step_errors_name_the_node(tmp_path):
    program = load_program({"name": "bad", "inputs": ["x"], "nodes": [
        {"id": "divide", "kind": "tool", "tool": "expr", "expr": "1 / int(x)", "output": "y"},
        {"id": "answer", "kind": "answer", "value": "{y}"}]})
    result = Executor(echo_backend(), tmp_path).run(program, {"x": "0"})
    assert result.status == "error" and "'divide'" in result.error and "ZeroDivisionError" in result.error
    with pytest.raises(LoomError, match="needs input"):
        Executor(echo_backend()).run(program, {})


def test_python_tool_runs_in_the_sandbox(tmp_path):
    program = load_program({"name": "py", "inputs": ["xs"], "nodes": [
        {"id": "sum", "kind": "tool", "tool": "python", "inputs": ["xs"],
         "code": "import json, sys\nprint(sum(json.load(sys.stdin)['xs']))", "output": "total"},
        {"id": "answer", "kind": "answer", "value": "{total}"}]})
    assert Executor(echo_backend(), tmp_path).run(program, {"xs": [1, 2, 39]}).answer == "42"
    escape = load_program({"name": "py", "inputs": [], "nodes": [
        {"id": "net", "kind": "tool", "tool": "python", "code": "import socket\nsocket.socket()", "output": "o"},
        {"id": "answer", "kind": "answer", "value": "{o}"}]})
    result = Executor(echo_backend(), tmp_path / "2").run(escape, {})
    assert result.status == "error" and "'net'" in result.error and "blocked" in result.error


def test_generation_settings_reach_the_backend():
    seen = []

    class Recording(RuleBackend):
        def complete(self, prompts, settings: GenerationSettings):
            seen.append(settings)
            return super().complete(prompts, settings)

    program = load_program({"name": "s", "inputs": [], "nodes": [
        {"id": "m", "kind": "model", "prompt": "say hi", "output": "o", "max_tokens": 7, "temperature": 0.5,
         "seed": 3, "stop": ["X"]},
        {"id": "answer", "kind": "answer", "value": "{o}"}]})
    Executor(Recording([(r"say (\S+)", lambda m: m.group(1))])).run(program, {})
    assert (seen[0].max_tokens, seen[0].temperature, seen[0].seed, tuple(seen[0].stop)) == (7, 0.5, 3, ("X",))


MAP = {"name": "map", "inputs": ["xs"], "nodes": [
    {"id": "each", "kind": "loop", "for_each": "xs", "as": "x", "collect": {"shouted": "loud"}, "body": [
        {"id": "shout", "kind": "model", "prompt": "say {x}!", "output": "loud"}]},
    {"id": "answer", "kind": "answer", "value": "{shouted}"}]}


def test_for_each_without_carry_runs_its_iterations_at_once(tmp_path):
    backend = echo_backend(delay=0.3)
    started = time.monotonic()
    result = Executor(backend, tmp_path, max_parallel=4).run(load_program(MAP), {"xs": ["a", "b", "c", "d"]})
    elapsed = time.monotonic() - started
    assert result.status == "done" and result.variables["shouted"] == ["a!", "b!", "c!", "d!"]  # item order
    assert backend.peak_concurrency == 4 and elapsed < 2 * 0.3
    from loom.reason.render import mermaid, read_trace

    picture = mermaid(load_program(MAP), read_trace(tmp_path / "trace.jsonl"))
    assert 'subgraph n_each_3__["iteration 3"]' in picture  # every iteration drawn...
    assert "n_each_0__ --> n_each_1__" not in picture  # ... side by side: nothing chains them
    capped = load_program({**MAP, "nodes": [{**MAP["nodes"][0], "max_iterations": 2}, MAP["nodes"][1]]})
    assert Executor(echo_backend()).run(capped, {"xs": ["a", "b", "c"]}).variables["shouted"] == ["a!", "b!"]


def test_a_parallel_loop_resumes_only_its_unfinished_iterations(tmp_path):
    failing = {"left": 1}

    def shout(m):
        if m.group(1) == "c!" and failing["left"]:
            failing["left"] -= 1
            raise BackendError("timeout on c")
        return m.group(1)

    flaky = RuleBackend([(r"say (\S+)", shout)])
    program = load_program(MAP)
    failed = Executor(flaky, tmp_path, max_parallel=1).run(program, {"xs": ["a", "b", "c", "d"]})
    assert failed.status == "error" and "timeout on c" in failed.error
    done = json.loads((tmp_path / "state.json").read_text())["loops"]["each"]["done"]
    assert sorted(done) == [0, 1]
    backend = echo_backend()
    resumed = Executor(backend, tmp_path).run(program, {"xs": ["a", "b", "c", "d"]}, resume=True)
    assert resumed.status == "done" and resumed.variables["shouted"] == ["a!", "b!", "c!", "d!"]
    assert sorted(backend.prompts) == ["say c!", "say d!"]
