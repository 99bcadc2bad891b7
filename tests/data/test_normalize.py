import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.data.normalize import SNIFF_BYTES, NormalizeStats, decode_bytes, normalize_text

# ---------------------------------------------------------------------------------------------
# decode_bytes
# ---------------------------------------------------------------------------------------------


def test_valid_utf8_decodes_unchanged():
    assert decode_bytes("naïve café, 日本語, 🙂\n".encode()) == ("naïve café, 日本語, 🙂\n", 0)
    assert decode_bytes(b"") == ("", 0)


def test_a_leading_bom_is_dropped_and_only_that_one():
    assert decode_bytes(b"\xef\xbb\xbfprint(1)\n") == ("print(1)\n", 0)
    assert decode_bytes(b"a\xef\xbb\xbfb") == ("a\ufeffb", 0)  # inside the text: normalize_text's job
    assert decode_bytes(b"\xef\xbb\xbf") == ("", 0)


def test_invalid_sequences_are_replaced_and_counted():
    text, invalid = decode_bytes(b"caf\xe9 au lait" + b" " * 200)
    assert text.startswith("caf\ufffd au lait") and invalid == 1
    # each maximal invalid subsequence is one repair: a cut 3-byte sequence is one, an encoded
    # surrogate (\xed\xa0\x80, not a prefix of any valid sequence) is three
    assert decode_bytes(b"\xe2\x82" + b"x" * 500) == ("\ufffd" + "x" * 500, 1)
    assert decode_bytes(b"\xed\xa0\x80" + b"x" * 500) == ("\ufffd" * 3 + "x" * 500, 3)
    assert decode_bytes(b"a\xffb\xfec" + b"x" * 500)[1] == 2


def test_a_replacement_character_in_the_input_is_not_counted_as_a_repair():
    data = "\ufffd already there ".encode() + b"\xff" + b"x" * 500
    text, invalid = decode_bytes(data)
    assert text.count("\ufffd") == 2 and invalid == 1
    assert decode_bytes("\ufffd only".encode()) == ("\ufffd only", 0)


def test_too_many_invalid_sequences_is_not_text():
    # 1 repair in 100 characters is 1%: kept; 1 in 99 is over 1%: dropped
    assert decode_bytes(b"\xff" + b"x" * 99) == ("\ufffd" + "x" * 99, 1)
    assert decode_bytes(b"\xff" + b"x" * 98) == (None, 1)
    latin1 = "Ça coûte très cher à Zürich, déjà.".encode("latin-1")
    assert decode_bytes(latin1) == (None, 7)  # one per accented letter


def test_max_invalid_fraction_is_configurable():
    data = b"\xff" + b"x" * 9
    assert decode_bytes(data) == (None, 1)
    assert decode_bytes(data, max_invalid_fraction=0.1) == ("\ufffd" + "x" * 9, 1)
    assert decode_bytes(b"\xff" + b"x" * 10_000, max_invalid_fraction=0.0) == (None, 1)
    assert decode_bytes(b"x" * 10, max_invalid_fraction=0.0) == ("x" * 10, 0)


def test_nul_bytes_near_the_start_mean_binary():
    assert decode_bytes(b"MZ\x90\x00\x03\x00" * 100) == (None, 0)
    assert decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00") == (None, 0)
    assert decode_bytes("utf-16 text".encode("utf-16")) == (None, 0)
    assert decode_bytes(b"x" * (SNIFF_BYTES - 1) + b"\x00") == (None, 0)
    # past the sniffed prefix a NUL is only a control character, removed by normalize_text
    text, invalid = decode_bytes(b"x" * SNIFF_BYTES + b"\x00")
    assert text == "x" * SNIFF_BYTES + "\x00" and invalid == 0


def test_stats_count_repairs_refusals_and_sequences():
    stats = NormalizeStats()
    for data in [b"fine", b"\xff" + b"x" * 200, b"\xff\xfe" + b"y" * 300, b"\x00binary", b"\xff\xff\xff"]:
        decode_bytes(data, stats=stats)
    assert stats == NormalizeStats(repaired_documents=2, binary_documents=2, invalid_sequences=6)


# ---------------------------------------------------------------------------------------------
# normalize_text
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a\r\nb\r\n", "a\nb\n"),
        ("a\rb\r", "a\nb\n"),  # old Mac line endings
        ("a\r\r\nb", "a\n\nb"),
        ("a\n\rb", "a\n\nb"),
        ("\r", "\n"),
    ],
)
def test_line_endings_become_newlines(raw, expected):
    assert normalize_text(raw) == expected


def test_nfc_composes_and_nothing_more():
    assert normalize_text("cafe\u0301") == "café" and len(normalize_text("cafe\u0301")) == 4
    assert normalize_text("\u1100\u1161") == "\uac00"  # Hangul jamo compose to one syllable
    assert normalize_text("\u212b") == "\u00c5"  # ANGSTROM SIGN is canonically A WITH RING ABOVE
    # compatibility characters are kept: NFKC would change code and meaning
    assert normalize_text("ﬁ x² ①  ｆｕｌｌ") == "ﬁ x² ①  ｆｕｌｌ"


def test_control_characters_are_removed_but_tab_and_newline_kept():
    controls = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
    assert len(controls) == 62
    for c in controls:
        assert normalize_text(f"a{c}b") == "ab", repr(c)
    assert normalize_text("a\tb\nc") == "a\tb\nc"
    assert normalize_text("".join(controls)) == ""


def test_bom_and_noncharacters_are_removed_other_specials_kept():
    assert normalize_text("\ufeffimport os\n") == "import os\n"
    assert normalize_text("zero\ufeffwidth") == "zerowidth"
    assert normalize_text("a\ufffeb\uffffc") == "abc"
    kept = "\ufffd \u200b \u200d \u2028 \u2029 \u00a0 \ufdd0 \U0001fffe 👩\u200d💻"
    assert normalize_text(kept) == kept


def test_whitespace_inside_lines_and_tabs_are_kept():
    code = "def f():\n\treturn 1   \n    \n\t\tx = '  '\t\n"
    assert normalize_text(code) == code
    assert normalize_text("line with trailing spaces   \r\nnext\t\r\n") == "line with trailing spaces   \nnext\t\n"


def test_controls_are_removed_before_composition():
    # a removed control no longer keeps the letter and its mark apart
    assert normalize_text("e\x00\u0301") == "é"
    assert normalize_text("e\ufeff\u0301") == "é"


def test_lone_surrogates_become_replacement_characters():
    assert normalize_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    normalize_text("a\ud83db").encode("utf-8")  # encodable afterwards


SPECIAL = "\r\n\t\x00\x0b\x0c\x1b\x7f\x85\x9f\ufeff\ufffe\uffff\ufffd\u0301\u0327\u1100\u1161\u11a8e\u212b\ud800\udc00 "


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


@given(st.text(alphabet=st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=())), max_size=60))
def test_normalize_is_idempotent_on_awkward_text(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert "\r" not in once and unicodedata.is_normalized("NFC", once)
    assert not any(c in once for c in "\x00\x0b\x0c\x1b\x7f\x85\x9f\ufeff\ufffe\uffff")
    once.encode("utf-8")


@given(st.text())
def test_decoded_text_round_trips(text):
    text = text.lstrip("\ufeff")  # a leading BOM is dropped by design
    data = text.encode("utf-8")
    assert decode_bytes(data) == ((None, 0) if b"\0" in data else (text, 0))
