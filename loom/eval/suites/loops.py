"""Suites whose decomposition is a loop, for planning (`loom.reason.plan_data`): the sum of K
numbers (one addition per step), a number walked K times through "halve if even, else triple
and add one" (a branch inside a loop; the rule of the Collatz problem), and doubling until a
bound is passed (a loop whose length the model must find: an `until`/`while` loop); with
`step`, the one-step questions those decompositions ask.

Every generator computes with its own loop over Python ints; every checker parses the question
back with a regular expression and recomputes another way (a closed form, `sum`, a logarithm
bound checked by multiplication), so a generator bug shows as a failed check.
"""

from __future__ import annotations

import re

from loom.eval.suites.base import Suite, match_question


class SumList(Suite):
    name = "sum_list"
    description = "the sum of K numbers of one or two digits"
    default_difficulty = 4
    min_difficulty = 2
    _question = re.compile(r"What is the sum of ((?:\d+, )+\d+)\?")

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 8

    def _draw(self, rng, split, difficulty):
        numbers = [rng.randint(1, 99) for _ in range(difficulty)]
        total = 0
        for n in numbers:
            total += n
        return f"What is the sum of {', '.join(map(str, numbers))}?", str(total)

    def _solve(self, question):
        return str(sum(int(n) for n in match_question(self._question, question).group(1).split(", ")))


class HalveOrTriple(Suite):
    name = "halve_or_triple"
    description = "start at N and apply K times: halve if even, else triple and add one"
    default_difficulty = 4
    # No run of 13 words is the same in every question, or the 13-gram decontamination of training
    # data (loom.data.contamination) would find every training question in the test split.
    _question = re.compile(r"Start at (\d+)\. Apply (\d+) times: halve if even, else triple and add one\. Result\?")

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 12

    def _draw(self, rng, split, difficulty):
        start = rng.randint(2, 999)
        n = start
        for _ in range(difficulty):
            n = n // 2 if n % 2 == 0 else 3 * n + 1
        return f"Start at {start}. Apply {difficulty} times: halve if even, else triple and add one. Result?", str(n)

    def _solve(self, question):
        start, times = (int(g) for g in match_question(self._question, question).groups())
        value = start
        steps = [value]
        while len(steps) <= times:  # a table of the walk, then its last entry
            steps.append(steps[-1] >> 1 if not steps[-1] & 1 else steps[-1] * 3 + 1)
        return str(steps[times])


class Doubling(Suite):
    name = "doubling"
    description = "how many doublings take a number past a bound (K doublings)"
    default_difficulty = 4
    _question = re.compile(r"Start at (\d+)\. Double it until it is over (\d+)\. How many doublings\?")

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 4

    def _draw(self, rng, split, difficulty):
        start = rng.randint(2, 9)
        # a bound between start * 2**(K-1) and start * 2**K, so exactly K doublings pass it
        bound = rng.randint(start * 2 ** (difficulty - 1), start * 2 ** difficulty - 1)
        n, count = start, 0
        while n <= bound:
            n, count = n * 2, count + 1
        return f"Start at {start}. Double it until it is over {bound}. How many doublings?", str(count)

    def _solve(self, question):
        start, bound = (int(g) for g in match_question(self._question, question).groups())
        k = max(0, (bound // start).bit_length() - 1)
        while start << k <= bound:  # the smallest k with start * 2**k > bound
            k += 1
        return str(k)


class Step(Suite):
    """The one-step questions the plans of the suites above ask: each a single operation."""

    name = "step"
    description = "one step: add two numbers, say whether a number is even, halve, triple and add one, double"
    default_difficulty = 2  # digits of the numbers
    _forms = (
        (re.compile(r"What is (\d+) plus (\d+)\?"), lambda a, b: str(a + b)),
        (re.compile(r"Is (\d+) even\?"), lambda a: "yes" if a % 2 == 0 else "no"),
        (re.compile(r"What is half of (\d+)\?"), lambda a: str(a // 2)),
        (re.compile(r"What is 3 times (\d+) plus 1\?"), lambda a: str(3 * a + 1)),
        (re.compile(r"What is (\d+) doubled\?"), lambda a: str(a * 2)),
    )

    def answer_chars(self, difficulty: int | None = None) -> int:
        return (difficulty or self.default_difficulty) + 5

    def _draw(self, rng, split, difficulty):
        a = rng.randint(10 ** (difficulty - 1) if difficulty > 1 else 0, 10 ** difficulty - 1)
        b = rng.randint(10 ** (difficulty - 1) if difficulty > 1 else 0, 10 ** difficulty - 1)
        form = rng.randrange(5)
        if form == 0:
            return f"What is {a} plus {b}?", str(a + b)
        if form == 1:
            return f"Is {a} even?", ("no", "yes")[a % 2 == 0]
        if form == 2:
            a += a % 2  # halving even numbers only
            return f"What is half of {a}?", str(a // 2)
        if form == 3:
            return f"What is 3 times {a} plus 1?", str(a * 3 + 1)
        return f"What is {a} doubled?", str(a + a)

    def _solve(self, question):
        for pattern, answer in self._forms:
            m = pattern.fullmatch(question)
            if m:
                return answer(*(int(g) for g in m.groups()))
        raise ValueError(f"not a question of this suite: {question[:80]!r}")
