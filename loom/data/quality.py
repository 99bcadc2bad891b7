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
    # loom's own (module docstring): a document with a markup is judged on its prose as rendered
    # (`render_markup`); false: every document as it is
    markup_aware: bool = True


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

    def __init__(self, text: str, list_items: int | None = None, rendered: bool = False):
        self.text = text
        # rendered markup (`render_markup`) drops its bullets and says how many items it had
        self.list_items = list_items
        # a document judged as rendered from its markup (`text_rejection`), not as web text
        self.rendered = rendered

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
    bullets = v.list_items if v.list_items is not None else sum(line.lstrip().startswith(BULLETS) for line in lines)
    if bullets / len(lines) > c.max_bullet_lines:
        return "gopher.bullet_lines"
    if sum(line.rstrip().endswith(ELLIPSES) for line in lines) / len(lines) > c.max_ellipsis_lines:
        return "gopher.ellipsis_lines"
    return None


def gopher_alpha_words(v: TextView, c: TextQualityConfig) -> str | None:
    """Gopher's "80% of words contain at least one alphabetic character". Web text: over all
    tokens, punctuation marks included, as datatrove counts (module docstring). A document
    rendered from its markup: over its words, as the Gopher paper says; the commas, brackets
    and quotes of careful prose (a licence's "(the "Software"), to deal in the Software
    without restriction, including...") would otherwise sink it below the threshold, as they
    did the MIT licence."""
    counted = v.words if v.rendered else v.tokens
    alpha = sum(w.isalpha() or any(ch.isalpha() for ch in w) for w in counted)
    if alpha / max(1, len(counted)) < c.min_alpha_words:
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
    here and not counted as lines (as in the Gopher line rules). Text files and markup are
    rendered a paragraph per line before the rules see them (`render_markup`)."""
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


def text_rejection(text: str, cfg: TextQualityConfig, markup: str | None = None) -> str | None:
    """The name of the first text rule `text` fails, or None when it passes them all. `markup`
    (one of `MARKUPS`): the rules judge the document as rendered (`render_markup`) when
    `cfg.markup_aware`; None: as it is, a paragraph per line, as web text is extracted."""
    items, rendered = None, bool(markup and cfg.markup_aware)
    if rendered:
        text, items = render_markup(text, markup)
    view = TextView(text, items, rendered)
    for rule in TEXT_RULES:
        reason = rule(view, cfg)
        if reason:
            return reason
    return None


# ---------------------------------------------------------------------------------------------
# Hard-wrapped text and markup: documentation judged on its prose
# ---------------------------------------------------------------------------------------------

# Editors, `textwrap`, `fmt`, mail and licence templates wrap at 60-100 columns; text extracted from
# web pages, as FineWeb's line rules expect it, has a paragraph per line, mostly longer than that;
# lines all shorter than the lower bound are a menu or a list, not a wrapped paragraph.
HARD_WRAP_WIDTHS = (50, 100)


def unwrap(lines: list[str]) -> list[str]:
    """The lines of a hard-wrapped text with each wrapped paragraph joined into one line; other
    texts' lines unchanged. A text is hard-wrapped when its paragraphs are separated by blank
    lines and its width is within `HARD_WRAP_WIDTHS` (the width: the 95th percentile of line
    lengths, so that one long URL does not set it). A line break is a wrap, and the two
    lines are joined, where the next line's first word would not have fitted on the line, the
    line ends no sentence and both lines share their indentation (a list item or a heading
    starts a line of its own)."""
    content = [i for i, line in enumerate(lines) if line.strip()]
    if len(content) < 3 or content[-1] - content[0] + 1 == len(content):  # no blank line between paragraphs
        return lines
    lengths = sorted(len(lines[i].rstrip()) for i in content)
    width = lengths[len(lengths) * 19 // 20]
    if not HARD_WRAP_WIDTHS[0] <= width <= HARD_WRAP_WIDTHS[1]:
        return lines
    out: list[str] = []
    last = ""  # the previous physical line
    for line in lines:
        body = line.rstrip()
        words = body.split(None, 1)
        if (out and last.strip() and words and not last.endswith(LINE_END_PUNCTUATION)
                and _indent(line) == _indent(last) and not _LIST_ITEM.match(line)
                and len(last) + 1 + len(words[0]) > width):
            out[-1] = out[-1] + " " + body.strip()
        else:
            out.append(body)
        last = body
    return out


# How a document is laid out, when it is not as web text is extracted (a paragraph per line):
# markdown and reStructuredText, and plain text files, which may be hard-wrapped.
MARKUPS = ("markdown", "rst", "plain")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_MD_HEADING = re.compile(r"^ {0,3}#{1,6}(?:\s+|$)")
_MD_RULE = re.compile(r"^ {0,3}([-*_])(?:\s*\1){2,}\s*$")
_MD_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)\s*$")
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)+\|?\s*$|^\s*\|\s*:?-+:?\s*\|\s*$")
_MD_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)]|[a-zA-Z#][.)])\s+")
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(?:\|[^|]+\|\s+)?([\w:.-]+)::(?:\s|$)")
_RST_EXPLICIT = re.compile(r"^(\s*)\.\.(?:\s|$)")  # comments, link targets (".. _name: url"), footnotes
_RST_ADORNMENT = re.compile(r"""^\s*([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])\1{2,}\s*$""")
_RST_GRID = re.compile(r"^\s*(?:\+[-=+]+\+|\|.*\|)\s*$")
_RST_SIMPLE_TABLE = re.compile(r"^\s*={2,}(?:\s+={2,})+\s*$")
_DOCTEST = re.compile(r"^\s*>>>")
# reST directives whose body is prose (admonitions, version notes); the body of any other
# (code, images, tables, raw HTML, tables of contents...) is set aside with the directive.
_PROSE_DIRECTIVES = frozenset(
    "note warning tip important hint caution attention danger error seealso admonition topic sidebar "
    "deprecated versionadded versionchanged versionremoved epigraph highlights pull-quote container rubric "
    "only glossary".split())
# An indented reST block with fewer letter-bearing tokens than this is a display of code or
# grammar written without "::" (docstrings, and reST rendered as text as in `pydoc_data`).
DISPLAY_MIN_ALPHA = 0.7

_INLINE = (  # (pattern, replacement), applied in order to each rendered block
    (re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)"), ""),  # code spans: `x`, ``x`` (and reST's default role)
    (re.compile(r"!\[[^\]]*\](?:\([^)]*\)|\[[^\]]*\])"), ""),  # images (badges)
    (re.compile(r"\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])"), r"\1"),  # links keep their text, not their target
    (re.compile(r"<[a-zA-Z][\w+.-]*:[^>\s]*>|<[^>\s@]+@[^>\s]+>"), ""),  # autolinks
    (re.compile(r"</?[a-zA-Z][^>]*>"), ""),  # HTML tags
    (re.compile(r"\b(?:https?://|www\.)[^\s<>()\[\]\"'`]+"), ""),  # bare URLs
    (re.compile(r"(?<![\w&])#\d+\b"), ""),  # issue and pull-request references (GitHub links them)
    (re.compile(r"\|[^|\s][^|]*\|_{0,2}"), ""),  # reST substitutions (|badge|)
    (re.compile(r"(?<![\w*])(\*{1,3}|_{1,3}|~~)(?=\S)(.+?)(?<=\S)\1(?![\w*])"), r"\2"),  # emphasis markers
    (re.compile(r"&(?:[a-z]+|#\d+);"), " "),  # HTML entities
    (re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]"), ""),  # brackets left empty
    # code written inline without markup (`os.path.join()`, `len(s)`, `max_words=10`, `snake_case`)
    (re.compile(r"""(?<!\S)["'(\[]*(?:[A-Za-z_][\w.]*(?:\(\S*\)|\[\S*\]|=\S*)|[A-Za-z]\w*_\w+"""
                r"""|[A-Za-z_]\w*(?:\.[A-Za-z_]\w+)+)[)\]"',.:;!?]*(?!\S)"""), ""),
)
_RST_INLINE = (
    (re.compile(r":[\w:+.-]+:`[^`]*`"), ""),  # roles: :func:`os.walk`, :pep:`8`
    (re.compile(r"`([^`<]*?)\s*<[^>`]*>`_{1,2}"), r"\1"),  # `text <url>`_ keeps its text
    (re.compile(r"`([^`]+)`_{1,2}"), r"\1"),  # `reference`_
    (re.compile(r"(?<!\w)([A-Za-z][\w-]*[A-Za-z0-9])__?(?!\w)"), r"\1"),  # reference_
    # reST rendered as text (Sphinx's text writer, as in `pydoc_data`) puts ``literals`` in straight
    # double quotes, and prose quotes in curly ones; docstrings quote values in single ones ('utf-8'):
    # a straight-quoted span without a space is a literal
    (re.compile(r'(?<![\w"])"[^"\s]+"(?![\w"])'), ""),
    (re.compile(r"(?<![\w'])'[^'\s]+'(?![\w'])"), ""),
)


def markup_prose(text: str, markup: str) -> str:
    """The prose of a markdown or reStructuredText document, roughly as a reader sees it
    rendered: code blocks and spans, doctests, tables, images, link targets, HTML, directives
    and comments set aside, markup characters and list bullets dropped, each paragraph, list
    item and heading on one line, blank lines between them."""
    return render_markup(text, markup)[0]


def render_markup(text: str, markup: str) -> tuple[str, int | None]:
    """A document as the text rules judge it: for "markdown" and "rst", `markup_prose(text,
    markup)` and how many of its lines are list items (their bullets dropped); for "plain", the
    text without rule lines and with its hard-wrapped paragraphs joined (`unwrap`), and None."""
    if markup not in MARKUPS:
        raise ValueError(f"unknown markup {markup!r}; use one of {', '.join(MARKUPS)}")
    if markup == "plain":  # rule lines (=====, -----) are layout, as a title's underline in reST
        return "\n".join(unwrap([line for line in text.split("\n") if not _RST_ADORNMENT.match(line)])), None
    if markup == "markdown":
        blocks, rules = _markdown_blocks(text), _INLINE
    else:
        blocks, rules = _rst_blocks(text), _RST_INLINE + _INLINE
    out, items = [], 0
    for is_item, block in blocks:
        line = " ".join(block)
        for pattern, replacement in rules:
            line = pattern.sub(replacement, line)
        line = " ".join(line.split())
        if line:
            out.append(line)
            items += is_item
    return "\n\n".join(out), items


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _markdown_blocks(text: str) -> list[tuple[bool, list[str]]]:
    """The paragraphs, list items and headings of a markdown text: (is a list item, its lines)."""
    blocks: list[tuple[bool, list[str]]] = []
    current: list[str] = []
    is_item = False
    fence, in_list, in_table, blank_before = "", False, False, True

    def close() -> None:
        nonlocal current, is_item
        if current:
            blocks.append((is_item, current))
            current, is_item = [], False

    for line in _HTML_COMMENT.sub("", text).split("\n"):
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = ""
            continue
        if m := _FENCE.match(line):
            close()
            fence = m.group(1)
            continue
        if not stripped:
            close()
            blank_before, in_table = True, False
            continue
        after_blank, blank_before = blank_before, False
        if in_table or (after_blank and not in_list and _indent(line.expandtabs(4)) >= 4):
            continue  # a table row, or an indented code block
        if _MD_TABLE_RULE.match(line):
            if current and "|" in current[-1]:
                current.pop()  # the table's header row
            close()
            in_table = True
            continue
        if stripped.startswith("|") or _MD_LINK_DEFINITION.match(line) or _MD_RULE.match(line):
            close()
            continue
        if current and _MD_SETEXT.match(line):
            close()  # the line above was a heading
            continue
        if _MD_HEADING.match(line):
            close()
            blocks.append((False, [_MD_HEADING.sub("", stripped).rstrip("# ")]))
            in_list = False
            continue
        if m := _LIST_ITEM.match(line):
            close()
            in_list = is_item = True
            current.append(line[m.end():])
            continue
        if after_blank and not line[:1].isspace():
            in_list = False
        current.append(stripped.lstrip("> ") if stripped.startswith(">") else stripped)
    close()
    return blocks


def _rst_blocks(text: str) -> list[tuple[bool, list[str]]]:
    """The paragraphs, list items and titles of a reStructuredText text, or of reST rendered as
    text (`pydoc_data`): (is a list item, its lines)."""
    blocks: list[tuple[int, bool, list[str]]] = []  # (indentation, is a list item, lines)
    current: list[str] = []
    current_indent, is_item = 0, False
    skip_deeper = -1  # set aside blank lines and lines indented more than this (a block's body)
    skip_to_blank = False  # set aside lines up to the next blank one (a doctest and its output)
    literal_after = -1  # a paragraph at this indentation ended in "::": the block after it is code
    in_table = after_border = False  # a simple table ends at a border followed by a blank line

    def close() -> None:
        nonlocal current, is_item
        if current:
            blocks.append((current_indent, is_item, current))
            current, is_item = [], False

    for line in text.split("\n"):
        stripped = line.strip()
        indent = _indent(line)
        if skip_to_blank:
            if stripped:
                continue
            skip_to_blank = False
        if skip_deeper >= 0:
            if not stripped or indent > skip_deeper:
                continue
            skip_deeper = -1
        if in_table:
            if stripped or not after_border:
                after_border = bool(_RST_SIMPLE_TABLE.match(line))
                continue
            in_table = False
        if not stripped:
            close()
            continue
        if literal_after >= 0 and not current:
            base, literal_after = literal_after, -1
            if indent > base:
                skip_deeper = base
                continue
        if m := _RST_DIRECTIVE.match(line):
            close()
            if m.group(2).lower() not in _PROSE_DIRECTIVES:
                skip_deeper = len(m.group(1))
            continue
        if m := _RST_EXPLICIT.match(line):
            close()
            skip_deeper = len(m.group(1))
            continue
        if _DOCTEST.match(line):
            close()
            skip_to_blank = True
            continue
        if _RST_SIMPLE_TABLE.match(line):
            close()
            in_table, after_border = True, False
            continue
        if _RST_GRID.match(line) or _RST_ADORNMENT.match(line):
            close()  # a table, or a title's under- or overline
            continue
        item = _LIST_ITEM.match(line)
        if current and (item or indent < current_indent or (indent > current_indent and not is_item)):
            close()  # a new item, or a change of indentation (an item's text may hang deeper)
        if not current:
            current_indent, is_item = indent, bool(item)
            if item:
                stripped = line[item.end():].strip()
        if stripped.endswith("::"):
            literal_after = current_indent
            stripped = stripped[:-2].rstrip() + (":" if stripped[:-2] and not stripped[-3].isspace() else "")
        current.append(stripped)
    close()
    margin = min((indent for indent, _, _ in blocks), default=0)
    return [(item, lines) for indent, item, lines in blocks
            if indent == margin or item or _alpha_share(" ".join(lines)) >= DISPLAY_MIN_ALPHA]


def _alpha_share(text: str) -> float:
    toks = tokens(text)
    return sum(any(ch.isalpha() for ch in t) for t in toks) / max(1, len(toks))


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
