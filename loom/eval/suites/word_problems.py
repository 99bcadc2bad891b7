"""Word problems: quantity stories and list manipulations, one step per sentence, checked by
replaying each sentence from a table written apart from the generator."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from loom.eval.suites.base import Suite, match_question


@dataclass(frozen=True)
class _Person:
    name: str
    subject: str  # She / He
    object: str  # her / him
    possessive: str  # her / his


_PEOPLE = tuple(
    _Person(name, *(("She", "her", "her") if gender == "f" else ("He", "him", "his")))
    for name, gender in (
        ("Ava", "f"), ("Ben", "m"), ("Chloe", "f"), ("Dan", "m"), ("Emma", "f"), ("Finn", "m"), ("Grace", "f"),
        ("Hugo", "m"), ("Isla", "f"), ("Jack", "m"), ("Maya", "f"), ("Omar", "m"), ("Lena", "f"), ("Noah", "m"),
    )
)  # fmt: skip
_THINGS = (  # (what is counted, what it is bought in)
    ("marbles", "bags"), ("stickers", "packs"), ("apples", "baskets"), ("pencils", "boxes"), ("cards", "packs"),
    ("cookies", "jars"), ("shells", "buckets"), ("stamps", "sheets"), ("beads", "bags"), ("coins", "purses"),
)  # fmt: skip


@dataclass(frozen=True)
class _Story:
    person: _Person
    other: _Person
    thing: str
    container: str


# Each step renders its sentence and applies itself to the state; `_quantity_steps` and
# `_list_steps` offer only the steps that keep the state a small non-negative count or a non-empty
# short list, so every story is well defined. (Random numbers are drawn in a fixed order, so a
# seed always gives the same problems.)


@dataclass(frozen=True)
class _Step:
    text: Callable  # quantity steps: (story) -> sentence; list steps: () -> sentence
    apply: Callable  # quantity steps: count -> new count; list steps: edits the list in place


def _quantity_steps(rng: random.Random, v: int) -> list[_Step]:
    gain, packs, each, received = rng.randint(2, 12), rng.randint(2, 5), rng.randint(2, 6), rng.randint(2, 9)
    steps = [
        _Step(lambda s: f"{s.person.subject} buys {gain} more {s.thing}.", lambda n: n + gain),
        _Step(lambda s: f"{s.person.subject} buys {packs} {s.container} of {each} {s.thing} each.",
              lambda n: n + packs * each),
        _Step(lambda s: f"{s.other.name} gives {s.person.object} {received} {s.thing}.", lambda n: n + received),
    ]
    if v >= 2:
        given, lost = rng.randint(2, min(v, 15)), rng.randint(2, min(v, 15))
        steps += [_Step(lambda s: f"{s.person.subject} gives {given} {s.thing} to {s.other.name}.",
                        lambda n: n - given),
                  _Step(lambda s: f"{s.person.subject} loses {lost} {s.thing}.", lambda n: n - lost)]
    if v >= 2 and v % 2 == 0:
        steps.append(_Step(lambda s: f"{s.person.subject} loses half of {s.person.possessive} {s.thing}.",
                           lambda n: n // 2))
    if 0 < v <= 40:
        steps.append(_Step(lambda s: f"{s.person.subject} doubles the number of {s.thing} "
                                     f"{s.person.subject.lower()} has.", lambda n: n * 2))
    return steps


def _add_to_each(xs: list[int], k: int) -> None:
    xs[:] = [x + k for x in xs]


def _double_each(xs: list[int]) -> None:
    xs[:] = [2 * x for x in xs]


def _swap_ends(xs: list[int]) -> None:
    xs[0], xs[-1] = xs[-1], xs[0]


def _list_steps(rng: random.Random, xs: list[int]) -> list[_Step]:
    added = rng.randint(1, 5)
    steps = [_Step(lambda: "Reverse the list.", list.reverse),
             _Step(lambda: "Sort the list from smallest to largest.", list.sort),
             _Step(lambda: f"Add {added} to every item.", lambda xs: _add_to_each(xs, added))]
    if len(xs) < 8:
        appended, front = rng.randint(0, 9), rng.randint(0, 9)
        steps += [_Step(lambda: f"Append {appended}.", lambda xs: xs.append(appended)),
                  _Step(lambda: f"Insert {front} at the front.", lambda xs: xs.insert(0, front))]
    if len(xs) >= 2:
        steps += [_Step(lambda: "Remove the first item.", lambda xs: xs.pop(0)),
                  _Step(lambda: "Remove the last item.", list.pop),
                  _Step(lambda: "Swap the first and last items.", _swap_ends)]
    if max(xs) <= 40:
        steps.append(_Step(lambda: "Double every item.", _double_each))
    return steps


# The checker's replay table: each sentence pattern and what it does, written apart from the step
# classes above (ints and new lists instead of step objects and in-place edits).
_QUANTITY_RULES: tuple[tuple[re.Pattern[str], Callable[..., int]], ...] = tuple(
    (re.compile(pattern), rule)
    for pattern, rule in (
        (r"(?:She|He) buys (\d+) more \w+\.", lambda v, k: v + int(k)),
        (r"(?:She|He) buys (\d+) \w+ of (\d+) \w+ each\.", lambda v, p, e: v + int(p) * int(e)),
        (r"\w+ gives (?:her|him) (\d+) \w+\.", lambda v, k: v + int(k)),
        (r"(?:She|He) gives (\d+) \w+ to \w+\.", lambda v, k: v - int(k)),
        (r"(?:She|He) loses (\d+) \w+\.", lambda v, k: v - int(k)),
        (r"(?:She|He) loses half of (?:her|his) \w+\.", lambda v: _exact_half(v)),
        (r"(?:She|He) doubles the number of \w+ (?:she|he) has\.", lambda v: v + v),
    )
)
_LIST_RULES: tuple[tuple[re.Pattern[str], Callable[..., list[int]]], ...] = tuple(
    (re.compile(pattern), rule)
    for pattern, rule in (
        (r"Append (\d+)\.", lambda xs, k: [*xs, int(k)]),
        (r"Insert (\d+) at the front\.", lambda xs, k: [int(k), *xs]),
        (r"Remove the first item\.", lambda xs: xs[1:]),
        (r"Remove the last item\.", lambda xs: xs[:-1]),
        (r"Reverse the list\.", lambda xs: xs[::-1]),
        (r"Sort the list from smallest to largest\.", sorted),
        (r"Add (\d+) to every item\.", lambda xs, k: [x + int(k) for x in xs]),
        (r"Double every item\.", lambda xs: [x + x for x in xs]),
        (r"Swap the first and last items\.", lambda xs: [xs[-1], *xs[1:-1], xs[0]] if len(xs) > 1 else xs),
    )
)


def _exact_half(v: int) -> int:
    if v % 2:
        raise ValueError(f"half of {v} is not a whole number")
    return v // 2


def _replay(rules: tuple[tuple[re.Pattern[str], Callable], ...], state, sentence: str):
    for pattern, rule in rules:
        m = pattern.fullmatch(sentence)
        if m:
            return rule(state, *m.groups())
    raise ValueError(f"no rule for the sentence {sentence!r}")


class WordProblems(Suite):
    name = "word_problems"
    description = "multi-step quantity stories and list manipulations of S steps"
    default_difficulty = 3
    _story_start = re.compile(r"(\w+) has (\d+) (\w+)\.")
    _story_question = re.compile(r"How many (\w+) does (\w+) have now\?")
    _list_start = re.compile(r"Start with the list \[([\d, ]*)\]\.")

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 64  # a list of at most 8 items of at most 4 digits, or a count of a few digits

    def _draw(self, rng, split, difficulty):
        if rng.random() < 0.5:
            return self._draw_story(rng, difficulty)
        return self._draw_list(rng, difficulty)

    def _draw_story(self, rng: random.Random, steps: int) -> tuple[str, str]:
        person, other = rng.sample(_PEOPLE, 2)
        story = _Story(person, other, *rng.choice(_THINGS))
        value = rng.randint(5, 30)
        sentences = [f"{person.name} has {value} {story.thing}."]
        for _ in range(steps):
            step = rng.choice(_quantity_steps(rng, value))
            sentences.append(step.text(story))
            value = step.apply(value)
        sentences.append(f"How many {story.thing} does {person.name} have now?")
        return " ".join(sentences), str(value)

    def _draw_list(self, rng: random.Random, steps: int) -> tuple[str, str]:
        xs = [rng.randint(1, 9) for _ in range(rng.randint(3, 5))]
        sentences = [f"Start with the list {xs}."]
        for _ in range(steps):
            step = rng.choice(_list_steps(rng, xs))
            sentences.append(step.text())
            step.apply(xs)
        sentences.append("What is the list now?")
        return " ".join(sentences), str(xs)

    def _solve(self, question):
        first, *steps, last = re.split(r"(?<=[.?]) ", question)
        if last == "What is the list now?":
            xs = [int(x) for x in re.findall(r"\d+", match_question(self._list_start, first).group(1))]
            for sentence in steps:
                xs = _replay(_LIST_RULES, xs, sentence)
            return "[" + ", ".join(str(x) for x in xs) + "]"
        name, count, thing = match_question(self._story_start, first).groups()
        if match_question(self._story_question, last).groups() != (thing, name):
            raise ValueError("the question asks about another person or thing")
        value = int(count)
        for sentence in steps:
            value = _replay(_QUANTITY_RULES, value, sentence)
            if value < 0:
                raise ValueError("a count went below zero")
        return str(value)
