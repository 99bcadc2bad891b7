"""The instruction-tuning mix made offline: every kind present and well formed, arithmetic with a
calculator tool call, library answers taken from the docstrings, nothing that matches a test
item; and `loom eval --set eval.format=chat` asking the suites as conversations."""

import json
import shutil

from conftest import run_loom
from loom.chat import END_OF_TURN, Message, read_conversations, render
from loom.config import EvalConfig
from loom.eval.chat_data import ARITHMETIC, chat_mix, first_paragraph, library_facts
from loom.eval.contamination import item_texts
from loom.eval.lm import LoomLM
from loom.eval.suites import SUITES


def test_the_mix_holds_every_kind_and_no_test_item(tmp_path):
    out = tmp_path / "mix.jsonl"
    eval_cfg = EvalConfig(items=50)
    card = chat_mix(out, eval_cfg, suite_items=20, doc_items=200, greetings=50, seed=3)
    conversations = list(read_conversations(out, require_assistant=True))  # every line a valid conversation
    assert len(conversations) == card["conversations"] == sum(card["by_kind"].values())
    assert card["by_kind"]["library"] == 200 and card["by_kind"]["greetings"] == 50

    users = [m.content for c in conversations for m in c if m.role == "user"]
    tests = {item.question for suite in SUITES.values()
             for item in suite.items("test", 50, suite.default_difficulty, 0)}
    assert not tests & set(users)
    test_texts = item_texts(["all"], eval_cfg)
    assert not any(t in " ".join(m.content for m in c) for c in conversations for t in test_texts if len(t) > 40)
    for suite in SUITES.values():  # each suite's training split is there
        train = {i.question for i in suite.items("train", 10, suite.default_difficulty, 3)}
        assert train & set(users), suite.name

    tool_uses = [c for c in conversations if any(m.tool_calls for m in c)]
    assert tool_uses
    for c in tool_uses:
        roles = [m.role for m in c]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        a, b = (int(x) for x in ARITHMETIC.fullmatch(c[1].content).group(1, 3))
        expression = json.loads(c[2].tool_calls[0].arguments)["expression"]
        assert c[2].tool_calls[0].name == "calculator" and eval(expression) == int(c[3].content) == int(c[4].content)
        assert a in (int(p) for p in expression.split() if p.isdigit())

    again = tmp_path / "again.jsonl"
    chat_mix(again, eval_cfg, suite_items=20, doc_items=200, greetings=50, seed=3)
    assert again.read_bytes() == out.read_bytes()  # deterministic: a resumed SFT run reuses its mix


def test_library_answers_come_from_the_docstrings():
    facts = {name: (kind, answer) for kind, name, answer in library_facts()}
    kind, answer = facts["textwrap.dedent"]
    import textwrap

    assert kind == "function" and answer.startswith("`textwrap.dedent(text)`: ")
    assert answer.split(": ", 1)[1].split()[:4] == textwrap.dedent.__doc__.split()[:4]
    assert facts["json"][0] == "module" and not any(name.split(".")[-1].startswith("_") for name in facts)
    assert any(kind == "method" for kind, _ in facts.values())
    assert first_paragraph("f(x) -> int") is None and first_paragraph("Too short.") is None
    long = first_paragraph(("A sentence of some words here. " * 30).strip())
    assert long.endswith(".") and len(long.split()) <= 60


def test_eval_in_chat_format_asks_each_question_as_a_user_message(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    run_loom("eval", "--run", str(run), "--suite", "addition", "--set", "eval.items=3", "--set", "eval.shots=1",
             "--set", 'eval.format="chat"', cwd=tmp_path)
    result = json.loads((run / "eval" / "addition.json").read_text())
    level = SUITES["addition"].default_difficulty
    assert set(result["metrics"]) == {f"d{level}/chat-zero-shot/exact_match", f"d{level}/chat-1-shot/exact_match"}
    assert result["settings"]["format"] == "chat"
    records = [json.loads(line) for line in (run / "eval" / "addition.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["correct"] == (r["prediction"] == r["answer"]) for r in records)
    # what the model was asked: the question alone as a user message, an open assistant turn
    lm = LoomLM.from_run(run)
    item = SUITES["addition"].items("test", 3, level, 0)[0]
    ids = render(lm.tok, [Message("user", item.question)], add_generation_prompt=True).ids
    budget = 2 * max(len(lm.encode(" " + i.answer)) for i in SUITES["addition"].items("test", 3, level, 0)) + 4
    (expected,) = lm.generate_ids(ids, budget, stop=("\n",), skip_leading_whitespace=True,
                                  stop_ids=[lm.tok.token_id(END_OF_TURN)])
    assert records[0]["mode"] == "chat-zero-shot" and records[0]["prediction"] == expected.strip()
    bad = run_loom("eval", "--run", str(run), "--suite", "addition", "--set", 'eval.format="dialogue"',
                   cwd=tmp_path, ok=False)
    assert 'eval.format must be "few-shot" or "chat"' in bad.stderr


def test_the_mix_from_the_command_line_and_sft_asks_for_one_source(tmp_path, tiny_run):
    out = tmp_path / "mix.jsonl"
    said = run_loom("eval", "emit", "--chat", "--items", "4", "--out", str(out), cwd=tmp_path).stdout
    assert "conversations" in said and len(list(read_conversations(out, require_assistant=True))) > 100
    both = run_loom("sft", "--run", str(tiny_run[0]), "--mix", "--data", str(out), cwd=tmp_path, ok=False)
    neither = run_loom("sft", "--run", str(tiny_run[0]), cwd=tmp_path, ok=False)
    assert "not both" in both.stderr and "not neither" in neither.stderr
