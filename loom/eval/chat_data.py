"""The instruction-tuning mix, made offline from what loom and Python already hold.

`chat_mix` writes conversations (`loom.chat`'s JSONL) of three kinds, nothing downloaded:

- **the suites' training splits** (`loom.eval.suites`), each question a user message and its
  answer the assistant's, at the suite's default difficulty and the next; addition and
  multiplication also as a calculator tool call (the assistant calls `calculator` with the
  expression, the tool answers, the assistant states the result) under a system message that
  offers the tool, and without it answered directly, as `loom eval --set eval.format=chat` asks;
- **questions about the standard library** answered from its own docstrings, read with `ast`
  (nothing imported): "What does `textwrap.dedent` do?" gets the signature and the docstring's
  first paragraph; modules too ("What is the `textwrap` module for?");
- **greetings and identity**: hello, who are you, what can you do, thanks; some followed by a
  library question in the same conversation.

Then the decontamination of the data pipeline (`loom.data.contamination`, GPT-3's 13-gram rule)
against every test item `loom eval` asks (`loom.eval.contamination.item_texts`, HumanEval
included), and besides it an exact check of each user question against the suites' test
questions (short ones, "What is 12 + 7?", are below the 13-gram rule's floor). The suites draw
their train and test questions from disjoint partitions, so what the rule drops are templated
items that share 13 words with a test item (programs of the same shape); the card counts them
by kind.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
from pathlib import Path

from loom.data.contamination import ContaminationIndex, ngrams
from loom.data.stdlib_corpus import TEST_DIRS, stdlib_files, stdlib_root
from loom.errors import ConfigError
from loom.util import atomic_write_text

CALCULATOR_SYSTEM = "You can use the calculator tool: call it with an arithmetic expression."
ARITHMETIC = re.compile(r"What is (\d+) ([+*]) (\d+)\?")
DOC_QUESTIONS = ["What does `{name}` do?", "What is `{name}` for?", "Explain `{name}` briefly.",
                 "How do I use `{name}`?", "Tell me about `{name}`."]
MODULE_QUESTIONS = ["What is the `{name}` module for?", "What does the `{name}` module do?",
                    "Explain the `{name}` module."]
GREETINGS = [
    (["Hi", "Hello!", "Hey there", "Good morning!", "hello", "Hi, how are you?"],
     ["Hello! How can I help you today?", "Hi! What would you like to know?",
      "Hello! Ask me about Python or give me a puzzle."]),
    (["Who are you?", "What are you?", "Are you a person?", "What is your name?"],
     ["I am a small language model trained with loom, on Python's standard library.",
      "I'm a language model trained with loom. I know some Python and can solve small puzzles."]),
    (["What can you do?", "How can you help me?", "What are you good at?"],
     ["I can answer questions about Python's standard library, do arithmetic, and solve small word "
      "and letter puzzles.", "Ask me what a standard-library function does, or give me a sum or a puzzle."]),
    (["Thanks!", "Thank you", "thanks, that helps", "Great, thanks."],
     ["You're welcome!", "Glad to help.", "Any time!"]),
    (["Bye", "Goodbye!", "See you later"], ["Goodbye!", "Bye! Come back any time."]),
]
MAX_ANSWER_WORDS = 60


def chat_mix(out: str | Path, eval_cfg, suite_items: int = 400, doc_items: int = 4000, greetings: int = 400,
             seed: int = 0) -> dict:
    """Writes the mix to `out` (JSONL, atomically) and returns its card: counts by kind and
    how many decontamination dropped."""
    from loom.eval.contamination import item_texts
    from loom.eval.suites import SUITES

    if min(suite_items, doc_items, greetings) < 0:
        raise ConfigError("the numbers of suite items, library questions and greetings must be 0 or more")
    rng = random.Random(seed)
    kinds: dict[str, list[list[dict]]] = {"suites": [], "library": [], "greetings": []}
    for suite in SUITES.values():
        levels = [suite.default_difficulty]
        if suite.max_difficulty is None or suite.default_difficulty + 1 <= suite.max_difficulty:
            levels.append(suite.default_difficulty + 1)
        for level in levels:
            for item in suite.items("train", suite_items // len(levels), level, seed):
                kinds["suites"].append([user(item.question), assistant(item.answer)])
                calc = ARITHMETIC.fullmatch(item.question)
                if calc:
                    kinds["suites"].append(calculator(item.question, " ".join(calc.groups()), item.answer))
    library = library_questions(rng, doc_items)
    kinds["library"] = library
    for _ in range(greetings):
        asks, answers = rng.choice(GREETINGS)
        turns = [user(rng.choice(asks)), assistant(rng.choice(answers))]
        if library and rng.random() < 0.3:  # a greeting, then a real question
            turns += rng.choice(library)
        kinds["greetings"].append(turns)

    tests = item_texts(["all"], eval_cfg)
    index = ContaminationIndex(ngrams(tests))
    test_questions = {item.question for suite in SUITES.values()
                      for level in {suite.default_difficulty, *(eval_cfg.difficulty.get(suite.name) or [])}
                      for item in suite.items("test", eval_cfg.items, level, eval_cfg.seed)}
    lines, card = [], {"conversations": 0, "by_kind": {}, "dropped_as_contaminated": {}}
    for kind, conversations in kinds.items():
        kept = 0
        for messages in conversations:
            text = " ".join(m["content"] for m in messages)
            if index.contains(text) or any(m["role"] == "user" and m["content"] in test_questions for m in messages):
                card["dropped_as_contaminated"][kind] = card["dropped_as_contaminated"].get(kind, 0) + 1
                continue
            lines.append(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            kept += 1
        card["by_kind"][kind] = kept
    random.Random(seed + 1).shuffle(lines)  # kinds interleaved, so every validation slice holds all
    card["conversations"] = len(lines)
    atomic_write_text(Path(out), "".join(lines))
    return card


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def calculator(question: str, expression: str, answer: str) -> list[dict]:
    call = {"type": "function", "function": {"name": "calculator",
                                             "arguments": json.dumps({"expression": expression})}}
    return [{"role": "system", "content": CALCULATOR_SYSTEM}, user(question),
            {"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "tool", "content": answer},
            assistant(answer)]


def library_questions(rng: random.Random, n: int) -> list[list[dict]]:
    """Up to `n` conversations asking what a standard-library module, function or class does,
    answered from its docstring; a seeded sample of all there are."""
    facts = library_facts()
    rng.shuffle(facts)
    out = []
    for kind, name, answer in facts[:n]:
        template = rng.choice(MODULE_QUESTIONS if kind == "module" else DOC_QUESTIONS)
        out.append([user(template.format(name=name)), assistant(answer)])
    return out


def library_facts(root: str | None = None) -> list[tuple[str, str, str]]:
    """(kind, dotted name, answer) for every public, documented module and top-level function or
    class of the standard library, sorted by name."""
    root = root or stdlib_root()
    facts = []
    for rel in stdlib_files(root):
        parts = Path(rel).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or any(p.startswith("_") or p in TEST_DIRS or "-" in p for p in parts):
            continue
        module = ".".join(parts)
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        summary = first_paragraph(ast.get_docstring(tree))
        if summary:
            facts.append(("module", module, f"The `{module}` module: {summary}"))
        for node in tree.body:
            facts += definition_facts(node, module)
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for member in node.body:  # its public methods
                    if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        facts += definition_facts(member, f"{module}.{node.name}", method=True)
    facts.sort(key=lambda fact: fact[1])
    return facts


def definition_facts(node, owner: str, method: bool = False) -> list[tuple[str, str, str]]:
    """The fact about one public, documented function or class defined in `owner`."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
        return []
    summary = first_paragraph(ast.get_docstring(node))
    if not summary:
        return []
    name = f"{owner}.{node.name}"
    if isinstance(node, ast.ClassDef):
        return [("class", name, f"`{name}` is a class. {summary}")]
    arguments = node.args
    if method and arguments.args and arguments.args[0].arg in ("self", "cls"):
        arguments = ast.arguments(posonlyargs=arguments.posonlyargs, args=arguments.args[1:],
                                  vararg=arguments.vararg, kwonlyargs=arguments.kwonlyargs,
                                  kw_defaults=arguments.kw_defaults, kwarg=arguments.kwarg,
                                  defaults=arguments.defaults[-len(arguments.args) + 1:] if len(arguments.args) > 1
                                  else [])
    signature = ast.unparse(arguments)
    signature = signature if len(signature) <= 60 else signature[:57] + "..."
    return [("method" if method else "function", name, f"`{name}({signature})`: {summary}")]


def first_paragraph(doc: str | None) -> str | None:
    """The docstring's first paragraph on one line, cut at a sentence end near `MAX_ANSWER_WORDS`
    words; None when it says too little (fewer than four words) or is a signature line."""
    if not doc:
        return None
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    words = paragraph.split(" ")
    if len(words) < 4 or re.match(r"^[\w.]+\(.*\)( ->.*)?$", paragraph):
        return None
    if len(words) > MAX_ANSWER_WORDS:
        cut = " ".join(words[:MAX_ANSWER_WORDS])
        end = cut.rfind(". ")
        paragraph = cut[: end + 1] if end > len(cut) // 2 else cut + " ..."
    return paragraph
