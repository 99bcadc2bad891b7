"""Decontamination's text side: the word n-grams of a set of texts, and whether a document
shares one.

Following GPT-3 (Brown et al. 2020, appendix C): texts are lower-cased runs of letters and
digits; a document is contaminated when it shares an n-gram of 13 words with a test item. Items
shorter than 13 words contribute their whole word sequence instead, when it has at least 8
words (GPT-3's floor); shorter items ("What is 12 + 7? 19") are too generic to match on and are
left out, since any arithmetic text would share them.

Which texts are test items is the evaluation's business (`loom.eval.contamination`): the data
build receives their n-grams from its caller and never imports evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

WORD = re.compile(r"\w+")
MIN_WORDS = 8  # GPT-3, appendix C: shorter n-grams are not used


def ngrams(texts: Iterable[str], n: int = 13) -> set[str]:
    """Every word n-gram of the texts, joined by spaces; a text of MIN_WORDS to n - 1 words
    gives its whole word sequence."""
    grams: set[str] = set()
    for text in texts:
        words = WORD.findall(text.lower())
        if len(words) >= n:
            grams.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        elif len(words) >= MIN_WORDS:
            grams.add(" ".join(words))
    return grams


class ContaminationIndex:
    """Answers "does this text contain one of these n-grams?" quickly: only positions whose word
    begins some n-gram are tried, and only with that n-gram's lengths."""

    def __init__(self, grams: Iterable[str]):
        self.grams = frozenset(grams)
        self.lengths_by_first: dict[str, set[int]] = {}
        for gram in self.grams:
            words = gram.split(" ")
            self.lengths_by_first.setdefault(words[0], set()).add(len(words))

    def __bool__(self) -> bool:
        return bool(self.grams)

    def contains(self, text: str) -> bool:
        if not self.grams:
            return False
        words = WORD.findall(text.lower())
        for i, word in enumerate(words):
            for length in self.lengths_by_first.get(word, ()):
                if i + length <= len(words) and " ".join(words[i : i + length]) in self.grams:
                    return True
        return False
