"""`loom reason` and `loom index` through the real command line, on a tiny trained loom run."""

from __future__ import annotations

import json

from conftest import run_loom

loom = run_loom  # the command line, in a subprocess


def test_reason_ask_and_eval_on_a_loom_checkpoint(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    work = tmp_path / "ask"
    out = loom("reason", "ask", "--backend", f"loom:{run_dir}", "--strategy", "direct", "--workdir", str(work),
               "What is 2 + 2?", cwd=tmp_path, ok=None)
    # A tiny model may answer something or nothing; either way the exit status, stdout and stderr
    # agree (an empty answer is said on stderr, with its cause, and fails).
    if out.returncode == 0:
        assert out.stdout.strip() and "[loom] done: 1 model calls" in out.stderr
    else:
        assert out.returncode == 1 and not out.stdout.strip()
        assert "empty-answer" in out.stderr and "answered nothing" in out.stderr
    assert "1 model calls" in out.stderr and (work / "graph.html").is_file()
    trace = [json.loads(line) for line in (work / "trace.jsonl").read_text().splitlines()]
    call = next(e for e in trace if e["event"] == "model_call")
    assert call["prompt"] == "Q: What is 2 + 2?\nA:" and call["prompt_tokens"] > 0

    graph = tmp_path / "graph"
    out = loom("reason", "ask", "--backend", f"loom:{run_dir}", "--program", "last_letters", "--workdir", str(graph),
               'Take the last letter of each word in "apple river stone" and join them.', cwd=tmp_path, ok=None)
    state = json.loads((graph / "state.json").read_text())
    calls = [json.loads(line) for line in (graph / "trace.jsonl").read_text().splitlines()]
    calls = [e for e in calls if e["event"] == "model_call" and not e["cached"]]
    # one iteration per word, at least one model call each (the join is a model call only once
    # there is something to join), and the state, the trace and the summary count the same calls
    assert state["loops"]["each_word"]["iteration"] == 3 and len(state["variables"]["last_letters"]) == 3
    assert state["model_calls"] == len(calls) >= 3 and f"{len(calls)} model calls" in out.stderr
    assert (out.returncode == 0) == bool(state["answer"].strip()), out.stderr

    table = loom("reason", "eval", "--backend", f"loom:{run_dir}", "--suite", "last_letters", "--strategies",
                 "direct,graph", "--items", "2", "--difficulty", "2", "--seeds", "2",
                 "--out", str(tmp_path / "rows.json"), "--plot", str(tmp_path / "accuracy.png"), cwd=tmp_path).stdout
    assert "| last_letters | 2 | direct |" in table and "| last_letters | 2 | graph (last-letters" in table
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert sorted((r["seed"], r["strategy"]) for r in rows) == [(0, "direct"), (0, "graph"),
                                                               (1, "direct"), (1, "graph")]
    assert table.count(" / 4 |") == 2  # each strategy pooled over the two seeds' items
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_index_commands_and_errors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("Bananas are yellow.\n\nCherries are red.")
    assert "indexed 1 passages" in loom("index", "build", "--dir", str(tmp_path / "docs"), "--out",
                                        str(tmp_path / "idx"), cwd=tmp_path).stdout
    assert "a.md#0" in loom("index", "search", str(tmp_path / "idx"), "yellow bananas", cwd=tmp_path).stdout
    err = loom("index", "build", "--out", str(tmp_path / "x"), cwd=tmp_path, ok=False).stderr
    assert "needs --dir FOLDER" in err and "Traceback" not in err
    err = loom("reason", "ask", "--backend", "nonsense", "hi", cwd=tmp_path, ok=False).stderr
    assert "unknown model backend 'nonsense'" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"inputs": ["question"], "nodes": [{"id": "a", "kind": "answer", "value": "{nope}"}]}))
    err = loom("reason", "ask", "--backend", "rules", "--program", str(bad), "hi", cwd=tmp_path, ok=False).stderr
    assert "node 'a' reads nope" in err


def mute(run_dir, tmp_path):
    """A copy of a trained run whose model says nothing: its final norm's weights are zeros, so
    every logit is 0 and greedy decoding picks id 0, <|bos|>, which decodes to no text."""
    import hashlib
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "mute"
    shutil.copytree(run_dir, copy)
    ckpt = copy / "checkpoints" / (copy / "checkpoints" / "latest").read_text().strip()
    tensors = load_file(ckpt / "model.safetensors")
    tensors["final_norm.weight"].zero_()
    save_file(tensors, ckpt / "model.safetensors")
    lines = []
    for line in (ckpt / "MANIFEST").read_text().splitlines():
        name = line.partition("  ")[2]
        lines.append(f"{hashlib.sha256((ckpt / name).read_bytes()).hexdigest()}  {name}\n")
    (ckpt / "MANIFEST").write_text("".join(lines))
    return copy


def test_reason_ask_on_a_model_that_answers_nothing_fails_and_says_why(tiny_run, tmp_path):
    work = tmp_path / "ask"
    out = loom("reason", "ask", "--backend", f"loom:{mute(tiny_run[0], tmp_path)}", "--workdir", str(work),
               "What is 2 + 2?", cwd=tmp_path, ok=False)
    assert out.returncode == 1 and out.stdout.strip() == ""
    assert "empty-answer; the answer is empty" in out.stderr and "answered nothing" in out.stderr
    trace = [json.loads(line) for line in (work / "trace.jsonl").read_text().splitlines()]
    plan, end = trace[1], trace[-1]
    # the planner's first, greedy reply is empty; its sampled retries may or may not parse
    assert plan["event"] == "plan" and plan["replies"][0] == ""
    assert ("the planner got no sub-questions from the model" in out.stderr) == plan["fallback"]
    calls = [e for e in trace if e["event"] == "model_call"]
    assert end["event"] == "run_end" and end["model_calls"] == plan["attempts"] + len(calls)
    assert f"{end['model_calls']} model calls, {end['tokens']} tokens" in out.stderr
