"""Last-letter concatenation (Wei et al. 2022) and its two sub-skills, the last letter of one
word and joining strings (the sub-questions of least-to-most prompting, Zhou et al. 2022)."""

from __future__ import annotations

import re

from loom.eval.suites.base import Suite, match_question

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
        phrase = match_question(self._question, question).group(1)
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
        return match_question(self._question, question).group(1)


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
        return "".join(re.findall(r'"([a-z]+)"', match_question(self._question, question).group(1)))
