"""Addition and multiplication of N-digit numbers, computed on digit strings and checked with ints."""

from __future__ import annotations

import random
import re
from itertools import zip_longest

from loom.eval.suites.base import Suite, match_question


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


def add_digit_strings(a: str, b: str) -> str:
    """Column addition with carries, right to left, on decimal digit strings."""
    out = []
    carry = 0
    for da, db in zip_longest(reversed(a), reversed(b), fillvalue="0"):
        total = int(da) + int(db) + carry
        out.append(str(total % 10))
        carry = total // 10
    if carry:
        out.append(str(carry))
    return "".join(reversed(out)).lstrip("0") or "0"


def multiply_digit_strings(a: str, b: str) -> str:
    """Long multiplication: one partial product per digit of `b`, shifted, then summed by columns."""
    total = "0"
    for shift, db in enumerate(reversed(b)):
        partial = []
        carry = 0
        for da in reversed(a):
            product = int(da) * int(db) + carry
            partial.append(str(product % 10))
            carry = product // 10
        if carry:
            partial.append(str(carry))
        total = add_digit_strings(total, "".join(reversed(partial)) + "0" * shift)
    return total


class Addition(Suite):
    name = "addition"
    description = "the sum of two N-digit numbers"
    default_difficulty = 3
    _question = re.compile(r"What is (\d+) \+ (\d+)\?")

    def answer_chars(self, difficulty: int | None = None) -> int:
        return (difficulty or self.default_difficulty) + 4

    def _draw(self, rng, split, difficulty):
        a, b = _digits(rng, difficulty), _digits(rng, difficulty)
        return f"What is {a} + {b}?", add_digit_strings(a, b)

    def _solve(self, question):
        a, b = match_question(self._question, question).groups()
        return str(int(a) + int(b))


class Multiplication(Suite):
    name = "multiplication"
    description = "the product of two N-digit numbers"
    default_difficulty = 2
    _question = re.compile(r"What is (\d+) \* (\d+)\?")

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 2 * (difficulty or self.default_difficulty) + 4

    def _draw(self, rng, split, difficulty):
        a, b = _digits(rng, difficulty), _digits(rng, difficulty)
        return f"What is {a} * {b}?", multiply_digit_strings(a, b)

    def _solve(self, question):
        a, b = match_question(self._question, question).groups()
        return str(int(a) * int(b))
