"""Generated reasoning suites: seeded question/answer items with a difficulty knob, scored by exact match.

This module owns the synthetic suites of `loom eval`: how their items are generated, an independent
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
    default 4; nested loops from 6). The truth is the program's output in `loom.sandbox`.

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

import ast
import builtins
import contextlib
import hashlib
import io
import random
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest

from loom.errors import ConfigError, LoomError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Item:
    suite: str
    id: str  # f"{suite}/{split}/{difficulty}/{index}", stable for a seed
    question: str  # without the "Q: " of the prompt; only code_output's spans several lines
    answer: str  # the exact-match target: one line, no surrounding spaces
    difficulty: int


class Suite:
    """A generated suite: `items` draws seeded items, `check` verifies one from its question alone.

    Subclasses implement `_draw` (one random question and its answer, the generator) and `_solve`
    (the answer recomputed from the question text, the checker).
    """

    name: str = ""
    description: str = ""
    default_difficulty: int = 1
    min_difficulty: int = 1
    max_difficulty: int | None = None  # None: no upper bound

    def answer_chars(self, difficulty: int | None = None) -> int:
        """A generous bound on the answer's length in characters, for capping generation."""
        raise NotImplementedError

    def items(self, split: str, n: int, difficulty: int | None = None, seed: int = 0) -> list[Item]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} for suite {self.name}: use one of {', '.join(SPLITS)}")
        if n < 0:
            raise ConfigError(f"suite {self.name}: the number of items must be >= 0, got {n}")
        level = self.resolve_difficulty(split, difficulty)
        rng = random.Random(f"{self.name}/{split}/{level}/{seed}")
        # Distinct questions while the space allows; small spaces (1-digit addition, one short word)
        # run out, and then repeats are better than failing.
        patience = 50 * n + 500
        limit = 1000 * n + 20_000
        draws = 0
        seen: set[str] = set()
        drafts: list[tuple[str, str | None]] = []
        while len(drafts) < n:
            draws += 1
            if draws > limit:
                raise ConfigError(
                    f"suite {self.name}: could not draw {n} {split} items at difficulty {level}; "
                    "the space of questions is too small, try another difficulty"
                )
            question, answer = self._draw(rng, split, level)
            if not self._on_side(question, split) or (question in seen and draws <= patience):
                continue
            seen.add(question)
            drafts.append((question, answer))
        # Answers that are slow to compute (code run in the sandbox) are drawn as None and computed
        # for all the items at once.
        slow = [q for q, a in drafts if a is None]
        truths = dict(zip(slow, self._truths(slow))) if slow else {}
        pairs = [(q, a if a is not None else truths[q]) for q, a in drafts]
        return [Item(self.name, f"{self.name}/{split}/{level}/{i}", q, a, level) for i, (q, a) in enumerate(pairs)]

    def check(self, item: Item) -> bool:
        """Whether `item.answer` is right, recomputed from `item.question` alone."""
        if item.suite != self.name:
            return False
        try:
            return self._solve(item.question) == item.answer
        except (ValueError, KeyError, IndexError):
            return False

    def resolve_difficulty(self, split: str, difficulty: int | None) -> int:
        level = self.default_difficulty if difficulty is None else difficulty
        if isinstance(level, bool) or not isinstance(level, int):
            raise ConfigError(f"suite {self.name}: difficulty must be an integer, got {level!r}")
        if level < self.min_difficulty or (self.max_difficulty is not None and level > self.max_difficulty):
            top = "" if self.max_difficulty is None else f" and <= {self.max_difficulty}"
            raise ConfigError(f"suite {self.name}: difficulty must be >= {self.min_difficulty}{top}, got {level}")
        return level

    def _on_side(self, question: str, split: str) -> bool:
        return _test_side(question) == (split == "test")

    def _draw(self, rng: random.Random, split: str, difficulty: int) -> tuple[str, str | None]:
        raise NotImplementedError

    def _truths(self, questions: list[str]) -> list[str]:
        raise NotImplementedError

    def _solve(self, question: str) -> str:
        raise NotImplementedError


def _test_side(question: str) -> bool:
    # A fixed hash rather than the seed's random draws: the partition is the same for every seed.
    digest = hashlib.blake2b(question.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 5 == 0


def _match(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    m = pattern.fullmatch(text)
    if m is None:
        raise ValueError(f"not a question of this suite: {text[:80]!r}")
    return m


# ---------------------------------------------------------------------------------------------
# Arithmetic


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
        a, b = _match(self._question, question).groups()
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
        a, b = _match(self._question, question).groups()
        return str(int(a) * int(b))


# ---------------------------------------------------------------------------------------------
# Letters: last-letter concatenation and its two sub-skills

# Embedded, not read from a system dictionary or a download, so that items never change with the
# machine. 200 common words, 27 to 30 of each length from 3 to 9 letters.
WORDS: tuple[str, ...] = tuple(
    """
    cat dog sun sky red box cup hat pen map car bus egg ice jam key leg net owl pig rat toy van web zoo ant bee fox
    ball bird boat book cake coin desk door fish frog gold hill kite lamp leaf lion moon nest rain ring rose salt
    ship star tree wind wolf yard milk
    apple bread chair cloud dance eagle field fruit glass grape heart house juice knife lemon money music night ocean
    paper piano plant queen river stone table tiger water zebra horse
    anchor basket bottle bridge butter candle castle cheese circle desert dragon flower forest garden guitar island
    jacket kitten ladder market mirror orange pencil planet rabbit silver spring window winter
    balloon blanket cabbage captain chicken diamond dolphin feather giraffe harvest journey kitchen lantern library
    machine morning mustard network octopus pumpkin rainbow teacher thunder village whistle volcano printer monster
    airplane alphabet backpack birthday calendar campfire elephant football mountain notebook painting question
    sandwich shoulder squirrel strength treasure umbrella vacation sunshine hospital lemonade keyboard magazine
    necklace elevator raincoat scissors
    adventure blueberry butterfly chocolate crocodile telescope waterfall dandelion carpenter fireplace lightning
    pineapple raspberry spaghetti chemistry submarine tangerine snowflake astronaut furniture breakfast cardboard
    detective wonderful grassland hamburger parachute sunflower
    """.split()
)
_WORDS_BY_LENGTH: dict[int, tuple[str, ...]] = {
    length: tuple(w for w in WORDS if len(w) == length) for length in sorted({len(w) for w in WORDS})
}


class LastLetters(Suite):
    name = "last_letters"
    description = "join the last letters of K words (Wei et al. 2022)"
    default_difficulty = 4
    _question = re.compile(r'Take the last letter of each word in "([a-z ]+)" and join them\.')

    def answer_chars(self, difficulty: int | None = None) -> int:
        return (difficulty or self.default_difficulty) + 4

    def _draw(self, rng, split, difficulty):
        words = [rng.choice(WORDS) for _ in range(difficulty)]
        answer = ""
        for word in words:
            answer += word[len(word) - 1]
        return f'Take the last letter of each word in "{" ".join(words)}" and join them.', answer

    def _solve(self, question):
        phrase = _match(self._question, question).group(1)
        return "".join(re.findall(r"[a-z](?= |$)", phrase))


class LastLetter(Suite):
    name = "last_letter"
    description = "the last letter of one word of N letters"
    default_difficulty = 5
    min_difficulty = min(_WORDS_BY_LENGTH)
    max_difficulty = max(_WORDS_BY_LENGTH)
    _question = re.compile(r'What is the last letter of "[a-z]*([a-z])"\?')

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 4

    def _draw(self, rng, split, difficulty):
        word = rng.choice(_WORDS_BY_LENGTH[difficulty])
        return f'What is the last letter of "{word}"?', word[len(word) - 1]

    def _solve(self, question):
        return _match(self._question, question).group(1)


class Concat(Suite):
    name = "concat"
    description = "join P strings in order (the first up to 12 letters, the others up to 3)"
    default_difficulty = 2
    min_difficulty = 2
    _question = re.compile(r'Join ((?:"[a-z]+", )*"[a-z]+" and "[a-z]+")\.')

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 12 + 3 * ((difficulty or self.default_difficulty) - 1) + 4

    def _draw(self, rng, split, difficulty):
        # The shapes the sub-questions of last-letter concatenation produce: the letters joined so
        # far (a run of 1 to 12 last letters of list words) first, then pieces of one to three
        # letters cut from list words.
        pieces = ["".join(rng.choice(WORDS)[-1] for _ in range(rng.randint(1, 12)))]
        for _ in range(difficulty - 1):
            word = rng.choice(WORDS)
            size = rng.randint(1, 3)
            start = rng.randint(0, len(word) - size)
            pieces.append(word[start : start + size])
        quoted = [f'"{p}"' for p in pieces]
        question = f"Join {', '.join(quoted[:-1])} and {quoted[-1]}."
        answer = ""
        for piece in pieces:
            answer += piece
        return question, answer

    def _solve(self, question):
        return "".join(re.findall(r'"([a-z]+)"', _match(self._question, question).group(1)))


# ---------------------------------------------------------------------------------------------
# SCAN (Lake & Baroni 2018)
#
# The paper's phrase-structure grammar:
#   C -> S and S | S after S | S          S -> V twice | V thrice | V
#   V -> D[1] opposite D[2] | D[1] around D[2] | D | U
#   D -> U left | U right | turn left | turn right          U -> walk | look | run | jump
# and its interpretation: [[x and y]] = [[x]] [[y]]; [[x after y]] = [[y]] [[x]]; twice and thrice
# repeat; [[u left]] = LTURN [[u]]; [[u opposite left]] = LTURN LTURN [[u]]; [[u around left]] =
# (LTURN [[u]]) four times; and with "turn", which has no action of its own, [[turn left]] = LTURN,
# [[turn opposite left]] = LTURN LTURN, [[turn around left]] = LTURN LTURN LTURN LTURN.

SCAN_TRAIN_MAX_ACTIONS = 22  # the length split: train on at most 22 actions, test on more
SCAN_MAX_ACTIONS = 48  # "jump around left thrice and walk around right thrice": 24 + 24
SCAN_MIN_TEST_ACTIONS = 24  # no command has 23 actions (a phrase has 1-4, 6, 8, 9, 12, 16 or 24)

_SCAN_PRIMITIVES = {"jump": "JUMP", "walk": "WALK", "run": "RUN", "look": "LOOK"}
_SCAN_TURNS = {"left": "LTURN", "right": "RTURN"}
_SCAN_TIMES = {1: "", 2: " twice", 3: " thrice"}


@dataclass(frozen=True)
class ScanVerb:
    """V of the grammar: a verb ("turn" or a primitive) with an optional direction and modifier."""

    verb: str
    direction: str = ""  # "", "left" or "right"; "turn" needs one
    modifier: str = ""  # "", "opposite" or "around"; needs a direction

    def __post_init__(self):
        if self.verb not in _SCAN_PRIMITIVES and self.verb != "turn":
            raise ValueError(f"unknown SCAN verb {self.verb!r}")
        if self.direction not in ("", *_SCAN_TURNS) or self.modifier not in ("", "opposite", "around"):
            raise ValueError(f"bad SCAN direction or modifier: {self!r}")
        if (self.verb == "turn" or self.modifier) and not self.direction:
            raise ValueError(f"{self.command()!r} needs a direction (left or right)")

    def command(self) -> str:
        return " ".join(part for part in (self.verb, self.modifier, self.direction) if part)

    def actions(self) -> list[str]:
        own = [_SCAN_PRIMITIVES[self.verb]] if self.verb != "turn" else []
        if not self.direction:
            return own
        turn = _SCAN_TURNS[self.direction]
        repeats = {"": 1, "opposite": 1, "around": 4}[self.modifier]
        turns = 2 if self.modifier == "opposite" else 1
        return ([turn] * turns + own) * repeats


@dataclass(frozen=True)
class ScanPhrase:
    """S of the grammar: a verb phrase said once, twice or thrice."""

    verb: ScanVerb
    times: int = 1

    def command(self) -> str:
        return self.verb.command() + _SCAN_TIMES[self.times]

    def actions(self) -> list[str]:
        return self.verb.actions() * self.times


@dataclass(frozen=True)
class ScanCommand:
    """C of the grammar: one phrase, or two joined by "and" (in order) or "after" (reversed)."""

    first: ScanPhrase
    conjunction: str = ""  # "", "and" or "after"
    second: ScanPhrase | None = None

    def command(self) -> str:
        if self.second is None:
            return self.first.command()
        return f"{self.first.command()} {self.conjunction} {self.second.command()}"

    def actions(self) -> list[str]:
        if self.second is None:
            return self.first.actions()
        if self.conjunction == "and":
            return self.first.actions() + self.second.actions()
        return self.second.actions() + self.first.actions()


SCAN_VERBS: tuple[ScanVerb, ...] = (
    *(ScanVerb(u) for u in _SCAN_PRIMITIVES),
    *(ScanVerb(v, d, m) for v in (*_SCAN_PRIMITIVES, "turn") for m in ("", "opposite", "around") for d in _SCAN_TURNS),
)  # the 34 Vs of the grammar


def random_scan_command(rng: random.Random) -> ScanCommand:
    # One phrase a fifth of the time: SCAN itself, which lists every command once, has 102 single
    # phrases among 20,910 commands, too few to learn that a command may stand alone.
    def phrase() -> ScanPhrase:
        return ScanPhrase(rng.choice(SCAN_VERBS), rng.choice((1, 2, 3)))

    if rng.random() < 0.2:
        return ScanCommand(phrase())
    return ScanCommand(phrase(), rng.choice(("and", "after")), phrase())


def scan_actions(command: str) -> list[str]:
    """The actions a SCAN command means: a recursive interpreter of the command text (the checker)."""
    words = command.split()
    for conjunction in ("and", "after"):
        if conjunction in words:
            cut = words.index(conjunction)
            left, right = _scan_phrase(words[:cut]), _scan_phrase(words[cut + 1 :])
            return left + right if conjunction == "and" else right + left
    return _scan_phrase(words)


def _scan_phrase(words: list[str]) -> list[str]:
    match words:
        case [*verb, "twice"]:
            return _scan_verb(verb) * 2
        case [*verb, "thrice"]:
            return _scan_verb(verb) * 3
    return _scan_verb(words)


def _scan_verb(words: list[str]) -> list[str]:
    match words:
        case [u] if u in _SCAN_PRIMITIVES:
            return [_SCAN_PRIMITIVES[u]]
        case ["turn", d] if d in _SCAN_TURNS:
            return [_SCAN_TURNS[d]]
        case [u, d] if d in _SCAN_TURNS:
            return [_SCAN_TURNS[d], *_scan_verb([u])]
        case [x, "opposite", d]:
            return _scan_verb(["turn", d]) + _scan_verb([x, d])
        case [x, "around", d]:
            return _scan_verb([x, d]) * 4
    raise ValueError(f"not a SCAN command: {' '.join(words)!r}")


class Scan(Suite):
    name = "scan"
    description = "SCAN commands to actions, length split (Lake & Baroni 2018)"
    default_difficulty = SCAN_MAX_ACTIONS
    max_difficulty = SCAN_MAX_ACTIONS
    _question = re.compile(r"Translate to actions: ([a-z ]+)")

    def answer_chars(self, difficulty: int | None = None) -> int:
        return 6 * (difficulty or self.default_difficulty)  # "LTURN " is the longest action

    def resolve_difficulty(self, split: str, difficulty: int | None) -> int:
        # Train is capped at the split's 22 actions (a smaller difficulty trains on shorter still);
        # test runs from 23 actions up to the difficulty.
        level = super().resolve_difficulty(split, difficulty)
        if split == "train":
            return min(level, SCAN_TRAIN_MAX_ACTIONS)
        if level < SCAN_MIN_TEST_ACTIONS:
            raise ConfigError(
                f"suite scan: the test split has commands of more than {SCAN_TRAIN_MAX_ACTIONS} actions and none "
                f"has 23, so its difficulty (the most actions) must be >= {SCAN_MIN_TEST_ACTIONS}, got {level}"
            )
        return level

    def _on_side(self, question, split):
        return True  # the length window of `_draw` is the split

    def _draw(self, rng, split, difficulty):
        low = 0 if split == "train" else SCAN_TRAIN_MAX_ACTIONS
        while True:
            tree = random_scan_command(rng)
            actions = tree.actions()
            if low < len(actions) <= difficulty:
                return f"Translate to actions: {tree.command()}", " ".join(actions)

    def _solve(self, question):
        return " ".join(scan_actions(_match(self._question, question).group(1)))


# ---------------------------------------------------------------------------------------------
# Word problems: quantity stories and list manipulations, one step per sentence


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
            xs = [int(x) for x in re.findall(r"\d+", _match(self._list_start, first).group(1))]
            for sentence in steps:
                xs = _replay(_LIST_RULES, xs, sentence)
            return "[" + ", ".join(str(x) for x in xs) + "]"
        name, count, thing = _match(self._story_start, first).groups()
        if _match(self._story_question, last).groups() != (thing, name):
            raise ValueError("the question asks about another person or thing")
        value = int(count)
        for sentence in steps:
            value = _replay(_QUANTITY_RULES, value, sentence)
            if value < 0:
                raise ValueError("a count went below zero")
        return str(value)


# ---------------------------------------------------------------------------------------------
# Code output

_CODE_MAX_OUTPUT = 40
_INT_VARS = ("a", "b", "c", "n", "total", "count")
_STR_VARS = ("s", "t", "word")
_LIST_VARS = ("xs", "ys", "nums")
_KINDS = {**dict.fromkeys(_INT_VARS, "int"), **dict.fromkeys(_STR_VARS, "str"), **dict.fromkeys(_LIST_VARS, "list")}


class _ProgramWriter:
    """Writes one random program: `statements` statements (a loop or an if counts itself and its
    body), then a single print.

    Variables are created only at the top level, before anything reads them, and blocks only
    update them, so no name is read before it is assigned. Loops run over `range` with small
    constant bounds and strings and lists grow by small pieces, so every program ends quickly.
    """

    def __init__(self, rng: random.Random, statements: int):
        self.rng = rng
        self.nested_loops = statements >= 6
        self.kinds: dict[str, str] = {}
        self.recent: list[str] = []  # variables, the most recently written last
        self.lines: list[str] = []
        self._block(statements, depth=0, loop_vars=())
        self.lines.append(f"print({self._print_args()})")

    def program(self) -> str:
        return "\n".join(self.lines)

    def _emit(self, depth: int, line: str, wrote: str | None = None) -> None:
        self.lines.append("    " * depth + line)
        if wrote is not None:
            if wrote in self.recent:
                self.recent.remove(wrote)
            self.recent.append(wrote)

    def _block(self, budget: int, depth: int, loop_vars: tuple[str, ...]) -> None:
        while budget > 0:
            budget -= self._statement(budget, depth, loop_vars)

    def _statement(self, budget: int, depth: int, loop_vars: tuple[str, ...]) -> int:
        rng = self.rng
        if not self.kinds:
            self._new_variable(depth)
            return 1
        options = ["update"] * 3
        if depth == 0 and len(self.kinds) < 4:
            options += ["new"] * (3 if len(self.kinds) < 2 else 1)
        if budget >= 2 and (not loop_vars or (self.nested_loops and len(loop_vars) < 2 and budget >= 3)):
            options += ["for"] * 2
        if budget >= 2:
            options.append("if")
        choice = rng.choice(options)
        if choice == "new" and self._new_variable(depth):
            return 1
        if choice == "for":
            var = "ij"[len(loop_vars)]
            k = rng.randint(2, 5)
            bounds = str(k) if rng.random() < 0.7 else f"1, {k + 1}"
            self._emit(depth, f"for {var} in range({bounds}):")
            body = rng.randint(1, min(budget - 1, 4))
            self._block(body, depth + 1, (*loop_vars, var))
            return 1 + body
        if choice == "if":
            self._emit(depth, f"if {self._condition(loop_vars)}:")
            then = rng.randint(1, min(budget - 1, 2))
            self._block(then, depth + 1, loop_vars)
            otherwise = rng.randint(0, min(budget - 1 - then, 2))
            if otherwise:
                self._emit(depth, "else:")
                self._block(otherwise, depth + 1, loop_vars)
            return 1 + then + otherwise
        self._update(depth, loop_vars)
        return 1

    def _some(self, kind: str) -> str | None:
        names = [v for v, k in self.kinds.items() if k == kind]
        return self.rng.choice(names) if names else None

    def _literal(self) -> str:
        return "".join(self.rng.choice("abcdefghkmnoprstuxyz") for _ in range(self.rng.randint(1, 3)))

    def _new_variable(self, depth: int) -> bool:
        rng = self.rng
        kind = rng.choice(("int", "int", "str", "list"))
        free = [v for v in _KINDS if _KINDS[v] == kind and v not in self.kinds]
        if not free:
            return False
        name = rng.choice(free)
        i, s, xs = self._some("int"), self._some("str"), self._some("list")
        k = rng.randint(1, 9)
        if kind == "int":
            options = [str(rng.randint(0, 12))] * 2
            options += [f"{i} * {k}", f"{i} + {k}", f"{i} - {k}"] if i else []
            options += [f"len({xs})", f"sum({xs})"] if xs else []
            options += [f"len({s})"] if s else []
        elif kind == "str":
            options = [f'"{self._literal()}"'] * 2
            options += [f"{s}[::-1]", f'{s} + "{self._literal()}"', f"{s} * 2", f"{s}[1:]"] if s else []
            options += [f"str({i})"] if i else []
        else:
            items = ", ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(0, 4)))
            options = [f"[{items}]", f"[{items}]", f"list(range({rng.randint(1, 5)}))"]
        self.kinds[name] = kind
        self._emit(depth, f"{name} = {rng.choice(options)}", wrote=name)
        return True

    def _update(self, depth: int, loop_vars: tuple[str, ...]) -> None:
        rng = self.rng
        v = rng.choice(list(self.kinds))
        kind = self.kinds[v]
        k = rng.randint(1, 9)
        other_ints = [w for w, kw in self.kinds.items() if kw == "int" and w != v] + list(loop_vars)
        w = rng.choice(other_ints) if other_ints else None
        if kind == "int":
            options = [f"{v} += {k}", f"{v} -= {k}", f"{v} = {v} * {rng.randint(2, 3)}", f"{v} = {v} % {k + 1}"]
            options += [f"{v} = {v} // 2"]
            options += [f"{v} += {w}", f"{v} = {v} + {w} * 2"] if w else []
            options += [f"{v} += {loop_vars[-1]}"] * 2 if loop_vars else []
        elif kind == "str":
            options = [f'{v} += "{self._literal()}"', f'{v} = "{self._literal()}" + {v}', f"{v} = {v}[1:]"]
            options += [f"{v} = {v}[::-1]", f"{v} = {v}[:{rng.randint(1, 4)}]"]
            options += [f"{v} += str({w})"] if w else []
        else:
            options = [f"{v}.append({k})", f"{v} = {v}[1:]", f"{v} = {v} + [{k}]", f"{v}.append(len({v}))"]
            options += [f"{v}.append({w})"] * 2 if w else []
        self._emit(depth, rng.choice(options), wrote=v)

    def _condition(self, loop_vars: tuple[str, ...]) -> str:
        rng = self.rng
        k = rng.randint(1, 6)
        ints = [v for v, kind in self.kinds.items() if kind == "int"] + list(loop_vars)
        options = []
        if ints:
            x = rng.choice(ints)
            options += [f"{x} % 2 == 0", f"{x} > {k}", f"{x} < {k}"]
        if s := self._some("str"):
            options.append(f"len({s}) > {k % 4}")
        if xs := self._some("list"):
            options += [f"len({xs}) > {k % 4}", f"{k} in {xs}"]
        return rng.choice(options)

    def _print_args(self) -> str:
        last = self.recent[-1]
        options = [last, last]
        if len(self.recent) >= 2:
            options.append(f"{self.recent[-2]}, {last}")
        if self.kinds[last] in ("str", "list"):
            options.append(f"len({last})")
        if self.kinds[last] == "list":
            options.append(f"sum({last})")
        return self.rng.choice(options)


def _run_in_process(program: str) -> str:
    """The program's output with its final newline removed, run here with `exec`: only for
    programs this module wrote, which touch no files, import nothing and loop a few times."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(program, "<code_output item>", "exec"), {"__builtins__": builtins})
    return out.getvalue().removesuffix("\n")


def _fits(output: str) -> bool:
    return 0 < len(output) <= _CODE_MAX_OUTPUT and "\n" not in output and output == output.strip()


@lru_cache(maxsize=65536)
def _sandbox_output(program: str) -> str:
    try:
        from loom.sandbox import run_python
    except ImportError as e:
        raise LoomError(f"the code_output suite needs loom.sandbox, which failed to import: {e}") from e
    for _ in range(2):  # a run can time out under load, once; a second timeout is a real problem
        result = run_python(program)
        if result.status not in ("timeout", "killed"):
            break
    if not result.passed:
        raise LoomError(
            f"the sandbox ran a generated program with status {result.status!r} (the program already ran "
            "in-process, so the sandbox itself failed), "
            f"stderr: {result.stderr.strip()[-500:]!r}\nprogram:\n{program}"
        )
    return result.stdout.removesuffix("\n")


class CodeOutput(Suite):
    """The answer key comes from the sandbox; `check` runs the question's program here, with `exec`,
    so it is only for items this suite generated, never for programs from elsewhere."""

    name = "code_output"
    description = "what a short Python program of S statements prints"
    default_difficulty = 4
    max_difficulty = 16
    _question = re.compile(r"What does this Python program print\?\n```\n(.*)\n```", re.DOTALL)

    def answer_chars(self, difficulty: int | None = None) -> int:
        return _CODE_MAX_OUTPUT + 8

    def _draw(self, rng, split, difficulty):
        while True:
            program = _ProgramWriter(rng, difficulty).program()
            # Run here first so the sandbox only sees programs that will be kept; a program that
            # fails, prints nothing or too much is replaced by another.
            try:
                output = _run_in_process(program)
            except Exception:
                continue
            if _fits(output):
                return f"What does this Python program print?\n```\n{program}\n```", None

    def _truths(self, questions):
        programs = [_match(self._question, q).group(1) for q in questions]
        # The sandbox spends its time waiting on a child process, so a few threads overlap them.
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(_sandbox_output, programs))

    def _solve(self, question):
        try:
            return _run_in_process(_match(self._question, question).group(1))
        except Exception as e:  # the program's own error: the answer cannot be right
            raise ValueError(f"the program fails: {e!r}") from e


def program_statements(program: str) -> int:
    """Statements of a code_output program before its final print (what its difficulty counts)."""
    return sum(isinstance(node, ast.stmt) for node in ast.walk(ast.parse(program))) - 1


# ---------------------------------------------------------------------------------------------

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
