"""Quality rules: small pure functions that say why a document should be dropped.

Each rule looks at one property of a document and returns the rule's name when the document
fails it, else None. Thresholds live in `TextQualityConfig` / `CodeQualityConfig` (the
`[quality]` settings), each with the source it comes from. `text_rejection` and
`code_rejection` run the rules in order, cheapest first, and return the first failure, so every
dropped document is recorded with exactly one rule name.

Text rules:
  - Gopher quality and repetition: Rae et al. 2021, "Scaling Language Models: Methods, Analysis
    & Insights from Training Gopher", appendix A.1.1 and table A1;
  - C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning...", section 2.2
    (placeholder "lorem ipsum" pages dropped; lines about JavaScript and cookie/terms notices
    removed from the text);
  - FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.5 (custom filters).
Code rules follow the StarCoder / The Stack v2 data cards (Li et al. 2023; Lozhkov et al. 2024):
long or very long lines, low alphanumeric share, generated-file headers, and data-like files.

Words: the Gopher rules count words, and how a text is cut into words moves documents across
their thresholds (above all "80% of words hold a letter"). loom cuts text the way the tool most
of its users compare against does: datatrove's Gopher filters, which built FineWeb, split English
with spaCy's rule-based tokenizer and count its punctuation tokens as words in the letter and
symbol ratios, while the word-count, word-length and stop-word rules see only tokens that hold a
letter or digit. `tokens` reproduces spaCy's English prefix / suffix / infix splitting closely
enough that the same rules agree on more than 99% of documents (bench/data_pipeline.py), at a
fraction of spaCy's cost and without its 12 MB dependency in the data path.
Written by hand because these are a few lines each and no maintained library offers them
without a heavy pipeline framework around them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

# spaCy's English punctuation rules (spacy/lang/punctuation.py, char_classes.py), reduced to the
# characters that occur in practice. A whitespace-separated chunk loses its leading PREFIX
# characters and trailing SUFFIX characters one at a time, then its clitics, then is cut at INFIX.
PREFIX = frozenset("§%=—–+…,:;!?¿¡()[]{}<>_#*&'\"”“`‘´’‚„»«「」『』（）【】《》〈〉$£€¥~|")
SUFFIX = frozenset("…,:;!?¿¡()[]{}<>_#*&'\"”“`‘´’‚„»«「」『』（）【】《》〈〉%°—–")
CLITICS = ("'s", "'S", "’s", "’S", "n't", "n’t", "'re", "'ll", "'ve", "'d", "'m")
INFIX = re.compile(
    r"(\.\.+|…"  # ellipses
    r"|(?<=[0-9])[+\-*^](?=[0-9-])"  # arithmetic between digits
    r"|(?<=[a-z'\"])\.(?=[A-Z'\"])"  # a full stop with no space after it: "end.Next"
    r"|(?<=[^\W\d_]),(?=[^\W\d_])"  # a comma between letters
    r"|(?<=[^\W_])(?:---|--|-|—|–)(?=[^\W\d_])"  # hyphens and dashes before a letter
    r"|(?<=[^\W_])[:<>=/](?=[^\W\d_]))"  # "a/b", "x=y"
)
# Chunks that stay whole, as in spaCy's English exceptions: dotted initials ("e.g.", "U.S.",
# "Ph.D.") and the common abbreviations with a full stop.
ABBREVIATION = re.compile(r"(?:[^\W\d_]{1,2}\.){2,}")
ABBREVIATIONS = frozenset(
    "Mr. Mrs. Ms. Dr. St. Jr. Prof. vs. Inc. Ltd. Co. Corp. Bros. Mt. Gov. Sen. Rep. p. "
    "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec.".split())
# A full stop at the end of a chunk is punctuation after these (not after "Mr" or "U.S").
FULL_STOP_AFTER = frozenset(")]}'\"%-+…")


def tokens(text: str) -> list[str]:
    """`text` cut into words and punctuation marks like spaCy's English tokenizer."""
    out: list[str] = []
    for chunk in text.split():
        if chunk.isalnum() or chunk in ABBREVIATIONS or ABBREVIATION.fullmatch(chunk):
            out.append(chunk)
            continue
        start, end, suffixes = 0, len(chunk), []
        while start < end:
            if chunk.startswith("...", start):
                out.append("...")
                start += 3
            elif chunk[start] in PREFIX:
                out.append(chunk[start])
                start += 1
            else:
                break
        while start < end:
            last = chunk[end - 1]
            if chunk.endswith("...", start, end):
                cut = 3
            elif last in SUFFIX:
                cut = 1
            elif last == "." and _ends_in_full_stop(chunk[start:end]):
                cut = 1
            else:
                cut = next((len(c) for c in CLITICS if end - start > len(c) and chunk.endswith(c, start, end)), 0)
                if not cut:
                    break
            suffixes.append(chunk[end - cut:end])
            end -= cut
        if start < end:
            out.extend(piece for piece in INFIX.split(chunk[start:end]) if piece)
        out.extend(reversed(suffixes))
    return out


def _ends_in_full_stop(core: str) -> bool:
    """Whether the "." ending `core` is punctuation: after a lower-case letter, a digit, a closing
    mark or two capitals, not after one capital ("J." of "J. Smith")."""
    if len(core) < 2:
        return False
    before = core[-2]
    return (before.islower() or before.isdigit() or before in FULL_STOP_AFTER
            or (before.isupper() and len(core) > 2 and core[-3].isupper()))


def is_word(token: str) -> bool:
    """Whether a token is a word rather than punctuation: it holds a letter or a digit."""
    return token.isalnum() or any(ch.isalnum() for ch in token)


PARAGRAPH_BREAK = re.compile(r"\n{2,}")
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher A.1.1
BULLETS = ("•", "●", "○", "▪", "◦", "‣", "-", "*")
ELLIPSES = ("...", "…")
# FineWeb's "lines ending with punctuation" are lines ending in a sentence terminator: the full stop,
# exclamation and question marks, their full-width and ideographic forms, the double marks and the
# interrobang, the Arabic question mark and the Devanagari danda. Closing quotes are not
# terminators (unlike C4's line rule, which loom does not apply).
LINE_END_PUNCTUATION = (".", "!", "?", "。", "．", "｡", "！", "？", "‼", "⁇", "⁈", "⁉", "‽", "؟", "।", "॥")
C4_POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")


@dataclass
class TextQualityConfig:
    # Gopher quality (Rae et al. 2021, A.1.1)
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # '#' and ellipses, each, per word
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8  # share of words holding at least one letter
    min_stop_words: int = 2
    # Gopher repetition (Rae et al. 2021, table A1)
    max_dup_lines: float = 0.30
    max_dup_line_chars: float = 0.20
    max_dup_paragraphs: float = 0.30
    max_dup_paragraph_chars: float = 0.20
    max_top_ngram_chars: list[float] = field(default_factory=lambda: [0.20, 0.18, 0.16])  # n = 2, 3, 4
    max_dup_ngram_chars: list[float] = field(
        default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]  # n = 5 .. 10
    )
    # C4 (Raffel et al. 2020, 2.2)
    c4_lorem_ipsum: bool = True
    c4_remove_notice_lines: bool = True  # JavaScript and cookie / terms-of-use notices
    # FineWeb (Penedo et al. 2024, 3.5)
    min_punctuated_lines: float = 0.12  # dropped when at most this share of lines end in punctuation
    max_fineweb_dup_line_chars: float = 0.1  # dropped when duplicated lines hold at least this share
    max_short_lines: float = 0.67  # dropped when at least this share of lines is short
    short_line_length: int = 30


@dataclass
class CodeQualityConfig:
    # StarCoder / The Stack v2 data cards (Li et al. 2023; Lozhkov et al. 2024)
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    generated_header_lines: int = 5  # look for "auto-generated" / "do not edit" in this many lines
    # loom's own: files that are mostly numbers, quotes, commas and brackets are data, not code
    max_data_char_fraction: float = 0.5
    min_lines_for_data_check: int = 20


# Languages whose files are legitimately wide or data-shaped get looser limits (The Stack v2
# keeps longer lines for markup and data formats).
LANGUAGE_OVERRIDES: dict[str, dict] = {
    "markdown": {"max_mean_line_length": 500.0, "max_line_length": 10_000},
    "json": {"max_line_length": 10_000, "max_data_char_fraction": 1.0},
    "yaml": {"max_data_char_fraction": 1.0},
    "csv": {"max_data_char_fraction": 1.0},
}


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


class TextView:
    """Splits of one document computed once and shared by the rules."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def content_lines(self) -> list[str]:
        """The lines holding more than whitespace (at least one, possibly empty, so ratios are defined)."""
        return [line for line in self.lines if line.strip()] or [""]

    @cached_property
    def tokens(self) -> list[str]:
        """Words and punctuation marks (`tokens`)."""
        return tokens(self.text)

    @cached_property
    def words(self) -> list[str]:
        """The tokens that hold a letter or digit."""
        return [t for t in self.tokens if is_word(t)]

    @cached_property
    def token_spans(self) -> list[tuple[int, int]]:
        """(start, end) of each of `tokens` in the text: tokens cover their chunks in order."""
        spans, at = [], 0
        for t in self.tokens:
            at = self.text.index(t, at)
            spans.append((at, at + len(t)))
            at += len(t)
        return spans

    @cached_property
    def paragraphs(self) -> list[str]:
        return PARAGRAPH_BREAK.split(self.text.strip())

    @cached_property
    def word_chars(self) -> int:
        return sum(len(w) for w in self.words)


def duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, characters in those repeats)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def gopher_word_count(v: TextView, c: TextQualityConfig) -> str | None:
    n = len(v.words)
    if n < c.min_words:
        return "gopher.too_few_words"
    if n > c.max_words:
        return "gopher.too_many_words"
    return None


def gopher_mean_word_length(v: TextView, c: TextQualityConfig) -> str | None:
    mean = v.word_chars / max(1, len(v.words))
    if mean < c.min_mean_word_length:
        return "gopher.short_words"
    if mean > c.max_mean_word_length:
        return "gopher.long_words"
    return None


def gopher_symbols(v: TextView, c: TextQualityConfig) -> str | None:
    n = max(1, len(v.tokens))  # per token, punctuation included, as datatrove counts (module docstring)
    if v.text.count("#") / n > c.max_symbol_word_ratio:
        return "gopher.hash_symbols"
    if sum(v.text.count(e) for e in ELLIPSES) / n > c.max_symbol_word_ratio:
        return "gopher.ellipses"
    return None


def gopher_lines(v: TextView, c: TextQualityConfig) -> str | None:
    lines = v.content_lines
    if sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines) > c.max_bullet_lines:
        return "gopher.bullet_lines"
    if sum(line.rstrip().endswith(ELLIPSES) for line in lines) / len(lines) > c.max_ellipsis_lines:
        return "gopher.ellipsis_lines"
    return None


def gopher_alpha_words(v: TextView, c: TextQualityConfig) -> str | None:
    """Gopher's "80% of words contain at least one alphabetic character", over all tokens,
    punctuation marks included, as datatrove counts (module docstring)."""
    alpha = sum(w.isalpha() or any(ch.isalpha() for ch in w) for w in v.tokens)
    if alpha / max(1, len(v.tokens)) < c.min_alpha_words:
        return "gopher.few_alphabetic_words"
    return None


def gopher_stop_words(v: TextView, c: TextQualityConfig) -> str | None:
    """Gopher keeps documents that contain "at least two of the following English words" (A.1.1):
    distinct stop words, in any case, so "the ... the" alone is not enough."""
    found: set[str] = set()
    for w in v.words:
        low = w.lower()
        if low in STOP_WORDS:
            found.add(low)
            if len(found) >= c.min_stop_words:
                return None
    return "gopher.few_stop_words"


def gopher_repeated_lines(v: TextView, c: TextQualityConfig) -> str | None:
    total = max(1, len(v.text))
    count, chars = duplicates(v.paragraphs)
    if count / len(v.paragraphs) > c.max_dup_paragraphs:
        return "gopher_repetition.paragraphs"
    if chars / total > c.max_dup_paragraph_chars:
        return "gopher_repetition.paragraph_chars"
    # Blank lines are layout, not content: counting them as repeats would drop every text whose
    # paragraphs are separated by empty lines.
    lines = v.content_lines
    count, chars = duplicates(lines)
    if count / len(lines) > c.max_dup_lines:
        return "gopher_repetition.lines"
    if chars / total > c.max_dup_line_chars:
        return "gopher_repetition.line_chars"
    return None


def gopher_repeated_ngrams(v: TextView, c: TextQualityConfig) -> str | None:
    """Gopher's n-gram repetition (Rae et al. 2021, A.1.1), as fractions of the document's
    characters, like the line and paragraph rules. Top n-grams (n = 2..4): the characters of the
    most frequent n-gram (its tokens and the single spaces between them) times its count.
    Duplicated n-grams (n = 5..10): the characters spanned by every n-gram that occurred before,
    from its first token's start to its last token's end, "taking care not to count characters
    that occur in overlapping n-grams more than once"."""
    words, total = v.tokens, max(1, len(v.text))  # punctuation marks included, as in datatrove
    for n, limit in enumerate(c.max_top_ngram_chars, start=2):
        if len(words) < n:
            break
        counts = Counter(zip(*(words[i:] for i in range(n))))
        gram, times = counts.most_common(1)[0]
        if times > 1 and times * (sum(len(w) for w in gram) + n - 1) / total > limit:
            return f"gopher_repetition.top_{n}gram"
    for n, limit in enumerate(c.max_dup_ngram_chars, start=5):
        if len(words) < n:
            break
        seen: set[tuple[str, ...]] = set()
        covered_until = 0  # characters before this offset are already counted
        dup_chars = 0
        for i, gram in enumerate(zip(*(words[i:] for i in range(n)))):
            if gram in seen:
                spans = v.token_spans
                end = spans[i + n - 1][1]
                dup_chars += end - max(spans[i][0], covered_until)
                covered_until = end
            else:
                seen.add(gram)
        if dup_chars / total > limit:
            return f"gopher_repetition.dup_{n}gram"
    return None


def c4_lorem_ipsum(v: TextView, c: TextQualityConfig) -> str | None:
    if c.c4_lorem_ipsum and "lorem ipsum" in v.text.lower():
        return "c4.lorem_ipsum"
    return None


def c4_remove_notice_lines(text: str, c: TextQualityConfig) -> tuple[str, int]:
    """Removes lines that mention JavaScript or are cookie / terms-of-use notices (C4 2.2);
    returns the cleaned text and the number of lines removed."""
    if not c.c4_remove_notice_lines:
        return text, 0
    kept, removed = [], 0
    for line in text.split("\n"):
        low = line.lower()
        if "javascript" in low or any(p in low for p in C4_POLICY_PHRASES):
            removed += 1
        else:
            kept.append(line)
    return ("\n".join(kept), removed) if removed else (text, 0)


def fineweb_lines(v: TextView, c: TextQualityConfig) -> str | None:
    """FineWeb's three line rules (Penedo et al. 2024, 3.5). They were set on text extracted by
    trafilatura, one paragraph per line with no blank lines in between, so blank lines are layout
    here and not counted as lines (as in the Gopher line rules)."""
    lines = v.content_lines
    if sum(line.rstrip().endswith(LINE_END_PUNCTUATION) for line in lines) / len(lines) <= c.min_punctuated_lines:
        return "fineweb.few_punctuated_lines"
    _, dup_chars = duplicates(lines)
    if dup_chars / max(1, len(v.text) - v.text.count("\n")) >= c.max_fineweb_dup_line_chars:
        return "fineweb.duplicated_line_chars"
    if sum(len(line) <= c.short_line_length for line in lines) / len(lines) >= c.max_short_lines:
        return "fineweb.short_lines"
    return None


TEXT_RULES = (
    c4_lorem_ipsum,
    gopher_word_count,
    gopher_mean_word_length,
    gopher_symbols,
    gopher_lines,
    gopher_alpha_words,
    gopher_stop_words,
    gopher_repeated_lines,
    gopher_repeated_ngrams,
    fineweb_lines,
)


def text_rejection(text: str, cfg: TextQualityConfig) -> str | None:
    """The name of the first text rule `text` fails, or None when it passes them all."""
    view = TextView(text)
    for rule in TEXT_RULES:
        reason = rule(view, cfg)
        if reason:
            return reason
    return None


# ---------------------------------------------------------------------------------------------
# Code
# ---------------------------------------------------------------------------------------------

GENERATED_MARKERS = re.compile(r"auto-?generated|autogenerated|do not edit|generated by", re.IGNORECASE)
DATA_CHARS = frozenset("0123456789.,:-+'\"[]{}()")


def for_language(cfg: CodeQualityConfig, language: str) -> CodeQualityConfig:
    overrides = LANGUAGE_OVERRIDES.get(language)
    if not overrides:
        return cfg
    return CodeQualityConfig(**{**cfg.__dict__, **overrides})


def code_line_lengths(lines: list[str], c: CodeQualityConfig) -> str | None:
    lengths = [len(line) for line in lines]
    if max(lengths) > c.max_line_length:
        return "code.long_line"
    if sum(lengths) / len(lengths) > c.max_mean_line_length:
        return "code.long_mean_line"
    return None


def code_alnum_fraction(text: str, c: CodeQualityConfig) -> str | None:
    if sum(ch.isalnum() for ch in text) / max(1, len(text)) < c.min_alnum_fraction:
        return "code.low_alphanumeric"
    return None


def code_generated_header(lines: list[str], c: CodeQualityConfig) -> str | None:
    if GENERATED_MARKERS.search("\n".join(lines[: c.generated_header_lines])):
        return "code.generated"
    return None


def code_data_like(lines: list[str], text: str, c: CodeQualityConfig) -> str | None:
    if len(lines) < c.min_lines_for_data_check:
        return None
    visible = [ch for ch in text if not ch.isspace()]
    if visible and sum(ch in DATA_CHARS for ch in visible) / len(visible) > c.max_data_char_fraction:
        return "code.data_like"
    return None


def code_rejection(text: str, language: str, cfg: CodeQualityConfig) -> str | None:
    """The name of the first code rule `text` (a file in `language`) fails, or None."""
    if not text.strip():
        return "code.empty"
    c = for_language(cfg, language)
    lines = text.split("\n")
    return (code_line_lengths(lines, c) or code_generated_header(lines, c) or code_alnum_fraction(text, c)
            or code_data_like(lines, text, c))
