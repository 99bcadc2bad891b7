"""Text normalization: bytes to text, and text to the one canonical form every later stage sees.

`decode_bytes` turns a file (or a jsonl line) into text: UTF-8, a leading byte-order mark
dropped, a little damage repaired with U+FFFD and counted, and input that is not text refused
(NUL bytes near the start, or more invalid sequences than `max_invalid_fraction` of the
characters). Other encodings are not guessed: a Latin-1 or UTF-16 file is refused as not text
(UTF-16 holds NUL bytes in ASCII text) rather than decoded wrongly.

`normalize_text` makes equal-looking text equal: Unicode NFC (so "e" + U+0301 and "é" become
one code point, which exact and near deduplication rely on); line endings "\\r\\n" and a lone
"\\r" become "\\n"; control characters other than "\\n" and "\\t" are removed (C0, DEL and C1),
as are U+FEFF (a byte-order mark or zero-width no-break space inside text) and the
noncharacters U+FFFE and U+FFFF; a lone surrogate, which no UTF-8 file can hold and which would
make encoding the text fail later, becomes U+FFFD. Everything else is kept as it is:
whitespace at line ends (it can matter in code and Markdown), tabs, U+2028/U+2029, other
noncharacters, and compatibility characters (NFKC would fold "ﬁ" to "fi" but also "²" to "2",
changing code). The function is idempotent: normalizing twice gives the same text as once.

Does not: judge quality, scrub secrets (`loom.data.pii`), or strip or reflow whitespace.

Written by hand over the standard library (`codecs`' UTF-8 decoder, `unicodedata`, `re`)
because each step is one or two calls there; what needs care is the order (controls are
removed before NFC, which could otherwise compose a letter with a mark that a removed control
had kept apart, breaking idempotence) and the accounting, which libraries such as `ftfy` or
`charset-normalizer` do not give and whose guessing of encodings and "fixing" of mojibake would
change text we would rather keep or refuse.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

UTF8_BOM = b"\xef\xbb\xbf"
ENCODED_REPLACEMENT = "\ufffd".encode()  # a U+FFFD that was in the input, not one we put there
SNIFF_BYTES = 8192  # input holding a NUL byte this near the start is binary
MAX_INVALID_FRACTION = 0.01  # share of characters that may be repaired before input counts as not text

# C0 controls but "\t" and "\n" ("\r" is turned into "\n" first), DEL, C1 controls, U+FEFF, U+FFFE, U+FFFF.
_REMOVED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\ufffe\uffff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class NormalizeStats:
    """What decoding did to a stream of inputs; `record` adds one `decode_bytes` result."""

    repaired_documents: int = 0  # decoded, with at least one invalid sequence replaced by U+FFFD
    binary_documents: int = 0  # refused as not text: NUL bytes, or too many invalid sequences
    invalid_sequences: int = 0  # invalid UTF-8 sequences seen, in repaired and refused inputs alike

    def record(self, text: str | None, invalid: int) -> None:
        self.invalid_sequences += invalid
        if text is None:
            self.binary_documents += 1
        elif invalid:
            self.repaired_documents += 1


def decode_bytes(
    data: bytes, max_invalid_fraction: float = MAX_INVALID_FRACTION, stats: NormalizeStats | None = None
) -> tuple[str | None, int]:
    """(text, number of invalid UTF-8 sequences replaced by U+FFFD), or (None, that number) when
    `data` is not text: a NUL byte in its first `SNIFF_BYTES` bytes (the count is then 0, as
    nothing was decoded), or more invalid sequences than `max_invalid_fraction` of the decoded
    characters. A leading UTF-8 byte-order mark is dropped. Each maximal invalid subsequence
    counts once (Python's decoder follows the Unicode standard's recommended practice here), so
    one stray Latin-1 byte is one repair."""
    if b"\0" in data[:SNIFF_BYTES]:
        result: tuple[str | None, int] = (None, 0)
    else:
        if data.startswith(UTF8_BOM):
            data = data[len(UTF8_BOM):]
        try:
            result = (data.decode("utf-8"), 0)
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            # An encoded U+FFFD in the input is always decoded as itself, so the difference is ours.
            invalid = text.count("\ufffd") - data.count(ENCODED_REPLACEMENT)
            result = (None if invalid > max_invalid_fraction * len(text) else text, invalid)
    if stats is not None:
        stats.record(*result)
    return result


def normalize_text(text: str) -> str:
    """`text` in canonical form: "\\n" line endings, controls (but "\\n" and "\\t"), U+FEFF, U+FFFE
    and U+FFFF removed, lone surrogates replaced by U+FFFD, then Unicode NFC. Idempotent."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _REMOVED.sub("", text)
    if text.isascii():
        return text  # ASCII is already in NFC and holds no surrogates
    text = _SURROGATE.sub("\ufffd", text)
    return unicodedata.normalize("NFC", text)
