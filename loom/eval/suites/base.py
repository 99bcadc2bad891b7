"""What every generated suite shares: the item, the suite with its seeded draws and its
independent check, and the fixed train/test partition of questions."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from loom.errors import ConfigError

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
        return on_test_side(question) == (split == "test")

    def _draw(self, rng: random.Random, split: str, difficulty: int) -> tuple[str, str | None]:
        raise NotImplementedError

    def _truths(self, questions: list[str]) -> list[str]:
        raise NotImplementedError

    def _solve(self, question: str) -> str:
        raise NotImplementedError


def on_test_side(question: str) -> bool:
    # A fixed hash rather than the seed's random draws: the partition is the same for every seed.
    digest = hashlib.blake2b(question.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 5 == 0


def match_question(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    m = pattern.fullmatch(text)
    if m is None:
        raise ValueError(f"not a question of this suite: {text[:80]!r}")
    return m
