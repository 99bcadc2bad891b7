"""SCAN commands to action sequences (Lake & Baroni 2018), with the paper's grammar, its
interpretation rules and its length split."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from loom.errors import ConfigError
from loom.eval.suites.base import Suite, match_question

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
        return " ".join(scan_actions(match_question(self._question, question).group(1)))
