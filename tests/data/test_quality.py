"""Each quality rule on crafted documents at and around its threshold."""

import random
import textwrap

import pytest

from loom.data import quality as q
from loom.data.quality import CodeQualityConfig, TextQualityConfig, TextView, code_rejection, text_rejection

CFG = TextQualityConfig()
CODE = CodeQualityConfig()


def words(n, length=5, seed=0):
    """n distinct pseudo-words of exactly `length` letters."""
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(length)))
    return sorted(out)


def good_text(n_sentences=12, seed=1):
    """Prose that passes every text rule: distinct words, stop words, punctuated long lines."""
    vocab = words(n_sentences * 8, seed=seed)
    lines = []
    for i in range(n_sentences):
        w = vocab[i * 8 : (i + 1) * 8]
        lines.append(f"The {w[0]} {w[1]} of {w[2]} {w[3]} and {w[4]} {w[5]} {w[6]} {w[7]}.")
    return "\n".join(lines)


def view(text):
    return TextView(text)


def test_good_text_passes_everything():
    assert text_rejection(good_text(), CFG) is None


def test_word_count_bounds():
    assert q.gopher_word_count(view(" ".join(words(50))), CFG) is None
    assert q.gopher_word_count(view(" ".join(words(49))), CFG) == "gopher.too_few_words"
    small = TextQualityConfig(max_words=60)
    assert q.gopher_word_count(view(" ".join(words(60))), small) is None
    assert q.gopher_word_count(view(" ".join(words(61))), small) == "gopher.too_many_words"


def test_mean_word_length_bounds():
    assert q.gopher_mean_word_length(view(" ".join(words(10, 3))), CFG) is None
    # nine 3-letter words and one 2-letter word: mean 2.9
    assert q.gopher_mean_word_length(view(" ".join(words(9, 3) + ["ab"])), CFG) == "gopher.short_words"
    assert q.gopher_mean_word_length(view(" ".join(words(10, 10))), CFG) is None
    assert q.gopher_mean_word_length(view(" ".join(words(9, 10) + ["abcdefghijk"])), CFG) == "gopher.long_words"


def test_hash_and_ellipsis_ratio():
    base = words(99)
    # per token, the marks themselves included: 11 / 110 = 0.1 is allowed, 12 / 111 is not
    assert q.gopher_symbols(view(" ".join(base) + " #" * 11), CFG) is None
    assert q.gopher_symbols(view(" ".join(base) + " #" * 12), CFG) == "gopher.hash_symbols"
    assert q.gopher_symbols(view(" ".join(base) + " ..." * 6 + " …" * 6), CFG) == "gopher.ellipses"


def test_bullet_and_ellipsis_lines():
    plain = [f"line {w} with words" for w in words(10)]
    nine_bullets = [f"• {line}" for line in plain[:9]] + plain[9:]
    assert q.gopher_lines(view("\n".join(nine_bullets)), CFG) is None  # 0.9 is allowed
    assert q.gopher_lines(view("\n".join(f"- {line}" for line in plain)), CFG) == "gopher.bullet_lines"
    three = [line + "..." for line in plain[:3]] + plain[3:]
    four = [line + "…" for line in plain[:4]] + plain[4:]
    assert q.gopher_lines(view("\n".join(three)), CFG) is None
    assert q.gopher_lines(view("\n".join(four)), CFG) == "gopher.ellipsis_lines"


def test_alphabetic_word_share():
    assert q.gopher_alpha_words(view(" ".join(words(80) + [str(i) for i in range(20)])), CFG) is None
    assert q.gopher_alpha_words(view(" ".join(words(79) + [str(i) for i in range(21)])), CFG) == (
        "gopher.few_alphabetic_words")
    # punctuation marks are tokens without a letter: 40 words ending in a comma are 80 tokens
    assert q.gopher_alpha_words(view(", ".join(words(40)) + ","), CFG) == "gopher.few_alphabetic_words"
    assert q.gopher_alpha_words(view(" ".join(words(32)) + " ! ! ! ! ! ! ! !"), CFG) is None  # 32 / 40


@pytest.mark.parametrize("text, expected", [
    ("Hello, world.", ["Hello", ",", "world", "."]),
    ("(see the docs) -- really...", ["(", "see", "the", "docs", ")", "--", "really", "..."]),
    ("don't stop the module's code", ["do", "n't", "stop", "the", "module", "'s", "code"]),
    ("out-of-bounds e.g. U.S. sys.path", ["out", "-", "of", "-", "bounds", "e.g.", "U.S.", "sys.path"]),
    ("__main__ x=y 10-12 a/b", ["_", "_", "main", "_", "_", "x", "=", "y", "10", "-", "12", "a", "/", "b"]),
    ("'quoted' \"too\" Mr. Smith", ["'", "quoted", "'", '"', "too", '"', "Mr.", "Smith"]),
    ("---------- .py -l", ["----------", ".py", "-l"]),
    ("Dr. No, etc. Ph.D. 3.5% end.Next", ["Dr.", "No", ",", "etc", ".", "Ph.D.", "3.5", "%", "end", ".", "Next"]),
])
def test_tokens_split_like_spacy(text, expected):
    """Tokens follow spaCy's English prefix, suffix, clitic and infix rules (module docstring)."""
    assert q.tokens(text) == expected
    v = view(text)
    assert [text[a:b] for a, b in v.token_spans] == expected
    assert v.words == [t for t in expected if any(ch.isalnum() for ch in t)]


def test_stop_words():
    assert q.gopher_stop_words(view("The cat and dog"), CFG) is None
    assert q.gopher_stop_words(view("a cat sat on the mat"), CFG) == "gopher.few_stop_words"
    # "at least two of" the words: one of them, however often, is not enough
    assert q.gopher_stop_words(view("the cat on the mat by the door"), CFG) == "gopher.few_stop_words"


def only(**limits):
    """A config whose repetition limits are all off except the ones given."""
    off = dict(max_dup_lines=1.0, max_dup_line_chars=1.0, max_dup_paragraphs=1.0, max_dup_paragraph_chars=1.0,
               max_top_ngram_chars=[1.0, 1.0, 1.0], max_dup_ngram_chars=[1.0] * 6)
    return TextQualityConfig(**{**off, **limits})


def test_duplicate_lines_by_count_and_chars():
    distinct = [f"{w} unique line" for w in words(7)]
    three_repeats = "\n".join(distinct + ["again"] * 3)  # 10 lines, repeats: 2 of them (first is new)
    four_repeats = "\n".join(distinct + ["again"] * 4)  # 11 lines, repeats: 3 of 11 = 0.27
    assert q.gopher_repeated_lines(view(three_repeats), only(max_dup_lines=0.2)) is None  # 2 / 10
    assert q.gopher_repeated_lines(view(four_repeats), only(max_dup_lines=0.2)) == "gopher_repetition.lines"
    long_repeat = "x" * 100
    # one repeat: 100 of 721 chars (0.14); two repeats: 200 of 822 (0.24)
    text = "\n".join([long_repeat, long_repeat] + [f"{w} filler" for w in words(40)])
    assert q.gopher_repeated_lines(view(text), only(max_dup_line_chars=0.2)) is None
    text = "\n".join([long_repeat] * 3 + [f"{w} filler" for w in words(40)])
    assert q.gopher_repeated_lines(view(text), only(max_dup_line_chars=0.2)) == "gopher_repetition.line_chars"


def test_blank_lines_are_not_repeats():
    text = "\n\n".join(f"{w} is a paragraph of its own." for w in words(10))
    assert q.gopher_repeated_lines(view(text), CFG) is None


def test_duplicate_paragraphs():
    paras = [f"{w} paragraph text here" for w in words(6)]
    text = "\n\n".join(paras + [paras[0]] * 4)  # 4 repeats of 10 paragraphs
    assert q.gopher_repeated_lines(view(text), only(max_dup_paragraphs=0.3)) == "gopher_repetition.paragraphs"
    assert q.gopher_repeated_lines(view(text), only(max_dup_paragraphs=0.4)) is None


def test_top_ngram_share():
    filler = words(40)
    # "abcd efgh" (9 characters) twice, in 40 * 5 + 2 * 8 letters and 43 spaces: 18 / 259 = 0.0695
    text = " ".join(filler[:20] + ["abcd", "efgh"] + filler[20:] + ["abcd", "efgh"])
    assert len(text) == 259
    assert q.gopher_repeated_ngrams(view(text), only(max_top_ngram_chars=[0.07, 1, 1])) is None
    assert q.gopher_repeated_ngrams(view(text), only(max_top_ngram_chars=[0.069, 1, 1])) == (
        "gopher_repetition.top_2gram")


def test_duplicated_ngrams_count_each_character_once():
    phrase = words(6, seed=9)  # a repeated 6-word phrase holds two overlapping repeated 5-grams
    filler = words(30, seed=3)
    text = " ".join(phrase + filler + phrase)  # 42 five-letter words and 41 spaces: 251 characters
    assert len(text) == 251
    # the repeat spans 6 words and 5 spaces, 35 characters (not 2 x 29): 35 / 251 = 0.139
    limits = [1.0] * 6
    assert q.gopher_repeated_ngrams(view(text), only(max_dup_ngram_chars=[0.14] + limits[1:])) is None
    assert q.gopher_repeated_ngrams(view(text), only(max_dup_ngram_chars=[0.13] + limits[1:])) == (
        "gopher_repetition.dup_5gram")
    # punctuation and spacing inside a repeat count as its characters
    spaced = ",  ".join(phrase) + ". " + " ".join(filler) + ". " + ",  ".join(phrase)
    assert len(spaced) == 273
    # 30 letters and 5 separators of 3 characters: 45 / 273 = 0.165
    assert q.gopher_repeated_ngrams(view(spaced), only(max_dup_ngram_chars=[0.17] + limits[1:])) is None
    assert q.gopher_repeated_ngrams(view(spaced), only(max_dup_ngram_chars=[0.16] + limits[1:])) == (
        "gopher_repetition.dup_5gram")
    # punctuation marks are tokens of their own: the same words with other marks are no repeat
    other_marks = ",  ".join(phrase) + ". " + " ".join(filler) + ". " + " ".join(phrase)
    assert q.gopher_repeated_ngrams(view(other_marks), only(max_dup_ngram_chars=[0.01] + limits[1:])) is None


def test_c4_lorem_ipsum_and_notice_lines():
    assert q.c4_lorem_ipsum(view("Some text. Lorem ipsum dolor sit amet."), CFG) == "c4.lorem_ipsum"
    assert q.c4_lorem_ipsum(view("Some text about Latin."), CFG) is None
    text = "Real content here.\nPlease enable JavaScript to view.\nThis site uses cookies.\nMore content."
    cleaned, removed = q.c4_remove_notice_lines(text, CFG)
    assert cleaned == "Real content here.\nMore content." and removed == 2
    assert q.c4_remove_notice_lines(text, TextQualityConfig(c4_remove_notice_lines=False)) == (text, 0)


def test_fineweb_punctuation_short_lines_and_duplicates():
    long = [f"this line {w} is long enough to not be short" for w in words(100)]
    # 12 of 100 lines punctuated: at the threshold, dropped (rule is "<= 0.12")
    twelve = [line + "." for line in long[:12]] + long[12:]
    thirteen = [line + "." for line in long[:13]] + long[13:]
    assert q.fineweb_lines(view("\n".join(twelve)), CFG) == "fineweb.few_punctuated_lines"
    assert q.fineweb_lines(view("\n".join(thirteen)), CFG) is None
    punct = [line + "." for line in long[:30]]
    short = ["short."] * 1 + [f"{w}." for w in words(66, seed=4)]  # 67 short of 97 lines: 0.69
    assert q.fineweb_lines(view("\n".join(punct + short)), CFG) == "fineweb.short_lines"
    dup = punct + [punct[0]] * 4  # 4 repeated lines of ~48 chars over ~1650 chars: > 0.1
    assert q.fineweb_lines(view("\n".join(dup)), CFG) == "fineweb.duplicated_line_chars"
    assert q.fineweb_lines(view("\n".join(punct + [punct[0]])), CFG) is None


def test_fineweb_lines_skip_blank_lines_and_closing_quotes():
    # paragraphs of 8 lines, the last one punctuated: 1 / 8 = 0.125 of the lines, kept; counting
    # the 19 blank lines between the 20 paragraphs would give 20 / 179 = 0.11 and drop it
    vocab = words(140, seed=5)
    text = "\n\n".join("\n".join([f"a long line of text {w} that goes on" for w in vocab[7 * i : 7 * i + 7]]
                                  + [f"and it ends here {i}."]) for i in range(20))
    assert q.fineweb_lines(view(text), CFG) is None
    quoted = [f'this line {w} is long enough and ends in a "quote"' for w in words(100)]
    assert q.fineweb_lines(view("\n".join(quoted)), CFG) == "fineweb.few_punctuated_lines"
    assert q.fineweb_lines(view("\n".join(line + "?" for line in quoted)), CFG) is None


def test_text_rejection_reports_first_failing_rule():
    assert text_rejection("lorem ipsum " + good_text(), CFG) == "c4.lorem_ipsum"
    assert text_rejection("too short.", CFG) == "gopher.too_few_words"


def code_lines(n, width=40):
    return "\n".join(f"value_{i} = compute({i}, name='item')  # ".ljust(width, "z") for i in range(n))


def test_code_line_lengths():
    ok = code_lines(30) + "\n" + "x" * 1000
    assert code_rejection(ok, "python", CODE) is None
    assert code_rejection(code_lines(30) + "\n" + "x" * 1001, "python", CODE) == "code.long_line"
    assert code_rejection(code_lines(10, width=100), "python", CODE) is None
    assert code_rejection(code_lines(10, width=101), "python", CODE) == "code.long_mean_line"
    assert code_rejection(code_lines(100) + "\n" + "x" * 5000, "json", CODE) is None  # looser for data formats


def test_code_alphanumeric_share_and_generated_headers():
    symbols = "\n".join(["+-*/=<>!&|^%~" * 3] * 10)
    assert code_rejection(symbols, "python", CODE) == "code.low_alphanumeric"
    header = ["# comment line"] * 4 + ["# This file was auto-generated. Do not edit."]
    assert code_rejection("\n".join(header) + "\n" + code_lines(5), "python", CODE) == "code.generated"
    late = ["# comment line"] * 5 + ["# auto-generated below"]
    assert code_rejection("\n".join(late) + "\n" + code_lines(5), "python", CODE) is None


def test_data_like_files():
    table = "DATA = [\n" + "\n".join(f"    ({i}, {i * 3.5}, '{i:04x}', {-i})," for i in range(30)) + "\n]"
    assert code_rejection(table, "python", CODE) == "code.data_like"
    assert code_rejection(table, "csv", CODE) is None
    assert code_rejection(code_lines(30), "python", CODE) is None


def test_empty_code_is_dropped():
    assert code_rejection("  \n\n", "python", CODE) == "code.empty"


# ---------------------------------------------------------------------------------------------
# Documentation: markup and hard-wrapped text judged as rendered
# ---------------------------------------------------------------------------------------------

PROSE = [
    "The library reads a configuration file and turns every section of it into a typed object that the rest "
    "of the program can use without parsing anything again.",
    "When a value is missing, the default is taken from the class, and when a value has the wrong type the "
    "error names the file, the line and the key, so that it can be fixed at once.",
    "Most users never need more than the two functions shown here; the rest of this page explains the "
    "options that the command line accepts and how they interact with each other.",
    "Bugs and ideas are welcome in the issue tracker, and every change is reviewed by at least one of the "
    "maintainers before it is merged into the main branch of the project.",
]

README = f"""[![Build](https://img.shields.io/badge/build-passing-green.svg)](https://ci.example.org/x)
[![PyPI](https://img.shields.io/pypi/v/x.svg)](https://pypi.org/project/x/)

# Settings

{PROSE[0]} It is called `settings.load(path, *, strict=True)` and returns a `Settings`.

```python
from settings import load
cfg = load("app.toml", strict=False)
assert cfg.server.port == 8080 and cfg["db"]["url"].startswith("sqlite://")
print({{k: v for k, v in cfg.items() if k != "secret"}})
```

{PROSE[1]}

| option | type | default |
|--------|------|---------|
| `--port` | `int` | `8080` |
| `--db-url` | `str` | `"sqlite:///:memory:"` |

## Usage

{PROSE[2]} See [the guide][guide] and <https://docs.example.org/x/latest/usage.html#options>.

    $ settings --port=9000 --db-url=sqlite:///tmp/x.db --strict

- {PROSE[3]}

[guide]: https://docs.example.org/x/latest/guide.html
"""

RST_README = f""".. image:: https://img.shields.io/pypi/v/settings.svg
   :target: https://pypi.org/project/settings/

Settings
========

{PROSE[0]} Use :func:`settings.load` with ``strict=True`` (see `the guide <https://x.org/g>`_).

.. code-block:: python

    cfg = settings.load("app.toml", strict=False)
    assert cfg.server.port == 8080 and cfg["db"]["url"].startswith("sqlite://")

{PROSE[1]} For example::

    >>> settings.load({{"port": "x"}})
    Traceback (most recent call last):
    TypeError: port: expected int, got str ('x')

>>> settings.defaults()["port"], settings.defaults()["db"]
(8080, 'sqlite:///:memory:')

=========  ======  =========
option     type    default
=========  ======  =========
--port     int     8080
--db-url   str     sqlite://
=========  ======  =========

.. note::

   {PROSE[2]}

* {PROSE[3]}

.. _guide: https://docs.example.org/guide.html
"""


@pytest.mark.parametrize("markup, text", [("markdown", README), ("rst", RST_README)])
def test_documentation_is_judged_on_its_prose(markup, text):
    # As it is, the code, tables, badges and link targets hold more punctuation tokens than the
    # prose holds words: the letter rule drops it (what happened to 99% of the package READMEs).
    assert text_rejection(text, CFG) == "gopher.few_alphabetic_words"
    assert text_rejection(text, CFG, markup) is None
    prose = q.markup_prose(text, markup)
    for sentence in PROSE:
        assert sentence in prose  # the prose survives whole, a paragraph or list item per line
    for code in ("load(", "8080", "assert", "sqlite", "https", "--port", "![", "```", "::", "|", "strict="):
        assert code not in prose
    assert text_rejection(text, TextQualityConfig(markup_aware=False), markup) == "gopher.few_alphabetic_words"


def test_reference_topics_are_kept_as_rendered_rst():
    # pydoc_data's topics are reST rendered as text (literals in straight quotes, code indented
    # after a colon); every Python has them. As they are, the letter rule drops nearly all.
    from loom.data.normalize import normalize_text
    from loom.data.stdlib_corpus import pydoc_documents

    topics = [normalize_text(d.text) for d in pydoc_documents()]
    as_is = sum(text_rejection(t, CFG) is None for t in topics)
    rendered = sum(text_rejection(t, CFG, "rst") is None for t in topics)
    assert as_is <= 0.1 * len(topics) and rendered >= 0.6 * len(topics)


def test_list_items_still_count_for_the_bullet_rule():
    items = "\n".join(f"- {line}" for line in PROSE * 3)
    assert text_rejection(items, CFG, "markdown") == "gopher.bullet_lines"
    view = TextView(*q.render_markup(items, "markdown"))
    assert view.list_items == 12 and not view.text.startswith("-")


MIT = """MIT License

Copyright (c) 2024 The Authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def test_hard_wrapped_text_files_are_judged_by_paragraph():
    # 2 of 17 wrapped lines end a sentence: FineWeb's rule, set on a paragraph per line, drops it
    assert text_rejection(MIT, CFG) == "fineweb.few_punctuated_lines"
    assert text_rejection(MIT, CFG, "plain") is None
    joined = q.markup_prose(MIT, "plain").split("\n")
    assert [line for line in joined if line][2].startswith("Permission is hereby granted")
    assert [line for line in joined if line][2].endswith("subject to the following conditions:")
    assert len([line for line in joined if line]) == 5


def test_unwrap_leaves_unwrapped_layouts_alone():
    web = "\n".join(PROSE)  # a paragraph per line, as web text is extracted: too wide to be wrapped
    assert q.unwrap(web.split("\n")) == web.split("\n")
    # short lines of a menu or a list are not wraps, even with blank lines between groups
    menu = ["Home", "About us", "Contact", "", "Privacy policy", "Terms of service", "", "Products", "Blog"]
    assert q.unwrap(menu) == menu
    # lines near the width but without a blank line anywhere may be one paragraph per line
    rows = [f"row {i:03d} of the table holds the same number of letters here" for i in range(20)] + ["", ""]
    assert q.unwrap(rows) == rows
    # a list item starts a line of its own, and a line that ends a sentence is not joined
    wrapped = textwrap.fill(" ".join(PROSE[:2]), 60).split("\n")
    lines = wrapped + ["", "- first item of a list that is long enough to reach the width", "- second"]
    assert q.unwrap(lines) == [" ".join(PROSE[:2]), *lines[-3:]]
    # the widest line ends a sentence: its next word would not have fitted, but it is no wrap
    ends_a_sentence = ["the first line of this paragraph is the widest and it ends a sentence.",
                       "Thereafter the next sentence goes on", "", "and another paragraph follows it here"]
    assert q.unwrap(ends_a_sentence) == ends_a_sentence
    no_stop = q.unwrap([ends_a_sentence[0][:-1]] + ends_a_sentence[1:])
    assert no_stop[0].endswith("a sentence Thereafter the next sentence goes on")


def test_unknown_markup_is_an_error():
    with pytest.raises(ValueError, match="unknown markup"):
        text_rejection(good_text(), CFG, "asciidoc")


# What each rule says of a document with no words: the word-count rule drops it, and every rule
# after it either passes it or names one of its own reasons (ratios over nothing are defined).
@pytest.mark.parametrize("rule", q.TEXT_RULES)
@pytest.mark.parametrize("empty", ["", "\n\n", "   \t  "])
def test_every_text_rule_handles_empty_text(rule, empty):
    verdict = rule(view(empty), CFG)
    family = rule.__name__.split("_")[0]  # gopher_word_count -> "gopher", c4_... -> "c4"
    assert verdict is None or (isinstance(verdict, str) and verdict.startswith(family)), verdict
    if rule is q.gopher_word_count:
        assert verdict == "gopher.too_few_words"
    for markup in (None, *q.MARKUPS):
        assert text_rejection(empty, CFG, markup) == "gopher.too_few_words"


def test_rendered_documents_count_letters_over_words_not_punctuation():
    # A licence's commas, brackets and quotes are tokens too: over all tokens (datatrove's way,
    # kept for web text) they push a careful legal paragraph under Gopher's 80% of words with a
    # letter; over its words, as the Gopher paper counts, it holds letters almost everywhere.
    legal = ("Permission is granted, free of charge, to any person (the \"Licensee\") obtaining a copy "
             "(the \"Software\"), to use, copy, modify, merge, publish, distribute, and/or sell it, "
             "subject to: (a) the notice; (b) the \"AS IS\" clause; (c) this list, in full. ") * 4
    plain_view, rendered_view = TextView(legal), TextView(legal, rendered=True)
    alpha = sum(any(ch.isalpha() for ch in t) for t in plain_view.tokens)
    assert alpha / len(plain_view.tokens) < CFG.min_alpha_words
    assert q.gopher_alpha_words(plain_view, CFG) == "gopher.few_alphabetic_words"
    assert q.gopher_alpha_words(rendered_view, CFG) is None
    assert text_rejection(legal, CFG) == "gopher.few_alphabetic_words"
    assert text_rejection(legal, CFG, "plain") != "gopher.few_alphabetic_words"
    # words without letters still count against a rendered document
    numbers = " ".join(f"{i} {i + 1} {i * 7} item" for i in range(40))
    assert q.gopher_alpha_words(TextView(numbers, rendered=True), CFG) == "gopher.few_alphabetic_words"
