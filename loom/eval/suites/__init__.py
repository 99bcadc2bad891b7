"""Generated reasoning suites: seeded question/answer items with a difficulty knob, scored by exact match.

This package owns the synthetic suites of `loom eval`: how their items are generated, an independent
checker for every item, the few-shot prompt format, exact-match scoring, and the training split a
user can train on (`training_text`, written as JSONL by `loom eval emit`). It does not load models,
generate completions or write reports; those belong to the evaluator.

Suites (`SUITES`, in this order), each with `difficulty` meaning:
  - `addition`: two operands of exactly N digits (N, default 3);
  - `multiplication`: N-digit by N-digit (N, default 2);
  - `last_letters`: join the last letters of K words (K, default 4): last-letter concatenation,
    a symbolic-reasoning task of Wei et al. 2022 ("Chain-of-Thought Prompting Elicits Reasoning
    in Large Language Models"), who also test it on more words than their exemplars show; with
    its two single-step sub-skills `last_letter` (the last letter of one word of N letters,
    default 5) and `concat` (join P strings, default 2), the sub-questions a least-to-most
    decomposition asks (Zhou et al. 2022, "Least-to-Most Prompting Enables Complex Reasoning in
    Large Language Models", which solves last-letter concatenation by adding one word's letter
    at a time to the answer so far, and SCAN's length split by reducing a command to its parts);
  - `scan`: SCAN commands to action sequences (Lake & Baroni 2018, "Generalization without
    Systematicity", with the paper's grammar and interpretation rules). The splits follow its
    length split (experiment 2): train on commands whose action sequences have at most 22
    actions, test on longer ones (24 to 48 actions: no command has 23); here difficulty is the
    longest test sequence (default 48, the longest SCAN has, so at least 24);
  - `word_problems`: quantity stories and list manipulations of S steps (S, default 3);
  - `code_output`: what a short Python program prints, S statements before its one print (S,
    default 4; nested loops from 6). The truth is the program's output in `loom.sandbox`;
  - `sum_list` (K numbers, default 4), `halve_or_triple` (K steps of the Collatz rule, default 4)
    and `doubling` (K doublings past a bound, default 4): tasks whose decomposition is a loop (with
    a branch inside, or of a length to be found), for planning; `step` (numbers of N digits,
    default 2) holds the one-step questions their plans ask (`loom.eval.suites.loops`).

Every suite draws from `random.Random(f"{suite}/{split}/{difficulty}/{seed}")`, never the global
generator, so the same call gives the same items on any machine and Python version. Train and
test are disjoint: SCAN by its length split, the other suites by a fixed hash of the question that
puts a fifth of all questions on the test side, whatever the seed, so that no seed's training
split can contain another seed's test question. Within a split, questions are distinct while the
space allows.

Every suite's `check` recomputes the answer from the question text alone by a different code path
than its generator (the generators work on digit strings, grammar trees and step objects; the
checkers parse the text back with regular expressions and recompute with ints, a recursive
interpreter and a replay table), so a generator bug shows up as a failed check instead of a
wrong answer key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from loom.errors import ConfigError
from loom.eval.suites.arithmetic import Addition, Multiplication
from loom.eval.suites.base import SPLITS, Item, Suite
from loom.eval.suites.code_output import CodeOutput
from loom.eval.suites.letters import Concat, LastLetter, LastLetters
from loom.eval.suites.loops import Doubling, HalveOrTriple, Step, SumList
from loom.eval.suites.scan import Scan
from loom.eval.suites.word_problems import WordProblems

__all__ = ["SPLITS", "SUITES", "Item", "Suite", "format_prompt", "get_suite", "score", "training_text"]

SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Addition(),
        Multiplication(),
        LastLetters(),
        LastLetter(),
        Concat(),
        Scan(),
        WordProblems(),
        CodeOutput(),
        SumList(),
        HalveOrTriple(),
        Doubling(),
        Step(),
    )
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise ConfigError(f"unknown suite {name!r}: choose from {', '.join(SUITES)}") from None


def format_prompt(item: Item, shots: Sequence[Item] = ()) -> str:
    """The prompt for `item`: "Q: ...\\nA: ...\\n\\n" per shot, then "Q: <question>\\nA:"."""
    return "".join(f"Q: {s.question}\nA: {s.answer}\n\n" for s in shots) + f"Q: {item.question}\nA:"


def score(item: Item, completion: str) -> bool:
    """Exact match of the completion's first line, stripped, against the answer."""
    return completion.split("\n", 1)[0].strip() == item.answer


def training_text(suite: str, n: int, difficulty: int, seed: int = 0) -> Iterator[str]:
    """Documents "Q: ...\\nA: ...\\n" of the suite's train split, one per item."""
    for item in get_suite(suite).items("train", n, difficulty, seed):
        yield f"Q: {item.question}\nA: {item.answer}\n"
