"""Constrained decoding of plans: whatever the logits, what comes out compiles and validates; the
canonical plans a model is taught are all within reach; names are read only where they hold a
value."""

from __future__ import annotations

import collections
import re
import sys

import numpy as np
import pytest

from loom.reason import solve
from loom.reason.backends import GenerationSettings
from loom.reason.backends.loom_run import LoomBackend
from loom.reason.constrained import PlanDecoder, sample_plan
from loom.reason.plan_code import compile_plan
from loom.reason.program import load_program
from loom.tokenizer import train_tokenizer

KEYWORDS = ("for", "while", "if", "elif", "else", "answer", "ask", "calc", "[]", ".append(")


@pytest.fixture(scope="module")
def tok():
    """A byte-level BPE tokenizer trained on some of the standard library, like loom's own."""
    from pathlib import Path

    stdlib = Path(sys.modules["os"].__file__).parent
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:30]]
    return train_tokenizer(texts, 600)


def random_logits(tok, rng):
    """Random logits, nudged towards whitespace and towards finishing a keyword or a name already
    written, so that loops, branches, while conditions and appends all occur across seeds."""
    pieces = [tok.decode([i], skip_special_tokens=False) for i in range(tok.vocab_size)]
    by_text = collections.defaultdict(list)
    for i, piece in enumerate(pieces):
        by_text[piece.strip(" ")].append(i)
    spaces = [i for i, piece in enumerate(pieces) if piece and not piece.strip()]

    focus = set(rng.choice(KEYWORDS, size=3, replace=False))  # this seed's favourite constructs

    def logits(ids):
        text = "".join(pieces[i] for i in ids)
        names = set(re.findall(r"[a-z_][a-z0-9_]*", text)) - set(KEYWORDS)
        started = re.search(r"[a-z_0-9.\[\]]*$", text).group()  # the word being written
        x = rng.normal(size=tok.vocab_size) * 3
        x[spaces] += 4
        for word, bonus in [*((n, 6) for n in names), *((k, 12) for k in focus)]:
            if word.startswith(started) and len(word) > len(started):
                rest = word[len(started):]
                for k in range(1, len(rest) + 1):
                    x[by_text.get(rest[:k], [])] += bonus
        return x

    return logits


def test_every_plan_written_under_random_logits_compiles_and_validates(tok):
    decoder = PlanDecoder(tok, max_lines=12)
    seen = collections.Counter()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        plan, ended = sample_plan(decoder, random_logits(tok, rng), rng, max_tokens=4000)
        assert ended, plan
        program = load_program(compile_plan(plan, where=f"seed {seed}"))  # raises on anything invalid
        assert program.nodes and plan.count("\n") <= 12 + 3
        for construct in ("for ", "while ", "if ", "else:", ".append(", "ask(", "        "):
            seen[construct] += construct in plan
    # the property was exercised on each construct, not only on straight-line plans
    assert all(seen[c] for c in ("for ", "while ", "if ", "ask(", "        ")), seen


@pytest.mark.parametrize("plan", [
    'word_list = words(quoted(question)[0])\nletters = ""\nfor word in word_list:\n'
    '    letter = ask("Q: What is the last letter of \\"{word}\\"?\\nA:")\n    if letters == "":\n'
    '        letters = letter\n    else:\n        letters = ask("Q: Join \\"{letters}\\" and \\"{letter}\\".\\nA:")\n'
    'answer(letters)\n',
    "n = int(numbers(question)[0])\nsteps = 0\nwhile n != 1:\n    if n % 2 == 0:\n        n = n // 2\n"
    "    else:\n        n = 3 * n + 1\n    steps += 1\nanswer(steps)\n",
    "parts = []\nfor x in numbers(question):\n    parts.append(x)\ntotal = 0\nfor p in parts:\n"
    '    total = int(calc("{total} + {p}"))\nanswer(total)\n',
    'kind = ask("Q: What is {question}?\\nA:")\nif ask("Q: Is a {kind} alive?\\nA:"):\n    verdict = "alive"\n'
    'elif kind == "rock":\n    verdict = "a rock"\nelse:\n    verdict = "no"\nanswer(kind)\n',
])
def test_the_canonical_plans_are_within_reach(tok, plan):
    decoder = PlanDecoder(tok, max_lines=24)
    state = decoder.start()
    for token in tok.encode(plan):
        assert decoder.mask(state)[token], f"{tok.decode([token])!r} refused after {state.text!r}"
        decoder.advance(state, token)
    assert decoder.mask(state)[tok.eos_id]
    load_program(compile_plan(plan))


def test_names_are_read_only_where_they_hold_a_value(tok):
    decoder = PlanDecoder(tok)

    def writable(text: str, then: str) -> bool:
        """Whether `then` may follow `text`, token by token (the tokens of the whole text)."""
        state, ids = decoder.start(), tok.encode(text + then)
        for i, token in enumerate(ids):
            if not decoder.mask(state)[token]:
                assert len(tok.decode(ids[:i])) >= len(text), f"{text!r} itself was refused"
                return False
            decoder.advance(state, token)
        return True

    assert writable("y = ", "question\nanswer(y)") and not writable("y = ", "zq\nanswer(y)")  # zq: undefined
    # a name first assigned in a loop's body has no value after the loop; the loop variable neither
    loop = "for wx in words(question):\n    tmp = wx\n"
    assert writable(loop, "answer(question)") and not writable(loop, "answer(tmp)")
    assert not writable(loop, "answer(wx)") and writable(loop, "    answer_ = wx\nanswer(question)")
    # a while loop cannot end before its body changes what its condition reads
    loop = "n = 3\nwhile n > 1:\n    m = 1\n"
    assert not writable(loop, "answer(n)") and writable(loop, "    n = n - 1\nanswer(n)")
    # the end comes only after answer(...)
    assert not decoder.mask(decoder.start())[tok.eos_id]
    assert writable("", "xs = []\nfor v in words(question):\n    xs.append(v)\nanswer(xs)")
    assert not writable("", "xs = []\nfor v in words(question):\n    xs.append(v)\n    xs.append(v)\n")  # once


def test_a_loom_model_writes_plans_under_the_constraint_and_the_code_strategy_runs_them(short_docs, tmp_path):
    import dataclasses

    import torch

    from loom.eval.lm import LoomLM
    from loom.model import GPT

    cfg, small = short_docs
    torch.manual_seed(0)  # a random model of its own (what it writes is noise, but noise that compiles),
    # with room for a plan: 1024 positions
    lm = LoomLM(GPT(dataclasses.replace(cfg.model, max_seq_len=1024)), small.tok)
    backend = LoomBackend.from_lm(lm)
    for seed in range(3):
        text, ended, completion = backend.complete_constrained(
            "# Question: what?\n", lambda t: PlanDecoder(t, max_lines=2),
            GenerationSettings(max_tokens=1000, temperature=1.0, seed=seed))
        assert ended and completion.finish_reason == "stop", text
        load_program(compile_plan(text))
    result = solve('Take the last letters of "ab cd".', backend, "code", workdir=tmp_path / "code")
    plan = result["plan"]
    assert plan["text"] and plan["tokens"] > 0
    if plan["fallback"]:  # cut short by the token budget: answered directly, and the reason is there
        assert result["program"] == "direct" and "did not reach answer" in plan["error"]
    else:
        assert result["program"] == "planned by the model (code)"
        load_program(compile_plan(plan["text"]))
    assert result["status"] in ("done", "error", "empty-answer")  # a random plan may fail as it runs, in words
    if result["status"] == "error":
        assert result["error"]
