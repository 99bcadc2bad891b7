import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.data.stdlib_corpus import stdlib_documents
from loom.errors import DataError
from loom.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, Tokenizer, decode_stream, train_tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    texts = [d.text for d in stdlib_documents(max_files=25, workers=1)]
    return train_tokenizer(texts, 600, path), path


SAMPLES = [
    "",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "   leading and trailing spaces   \n\n\t\ttabs",
    "naïve café — “quotes” and ‘apostrophes’",
    "日本語のテキスト, 中文, 한국어",
    "emoji 🧶🐍👩‍👩‍👧 and flags 🇫🇷",
    "combining e\u0301 and zero\u200bwidth and \u0000 nul and \x7f del",
    "a document quoting <|bos|> and <|eos|> and <|pad|> literally",
    "\r\nwindows\r\nline endings\r",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_exact(trained, text):
    tok, _ = trained
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_round_trip_any_unicode(trained, text):
    tok, _ = trained
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_have_fixed_ids_and_are_not_read_from_text(trained):
    tok, _ = trained
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
    assert tok.token_id("<|assistant|>") < len(SPECIAL_TOKENS)
    ids = tok.encode("x <|eos|> y")
    assert tok.eos_id not in ids
    assert tok.vocab_size == 600


def test_batch_encoding_matches_single(trained):
    tok, _ = trained
    assert tok.encode_batch(SAMPLES) == [tok.encode(s) for s in SAMPLES]


def test_training_is_deterministic(tmp_path):
    texts = [d.text for d in stdlib_documents(max_files=10, workers=1)]
    a = train_tokenizer(texts, 400, tmp_path / "a.json")
    b = train_tokenizer(texts, 400, tmp_path / "b.json")
    assert a.sha256() == b.sha256()


def test_saved_file_loads_in_transformers(trained):
    transformers = pytest.importorskip("transformers")
    tok, path = trained
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token=BOS, eos_token=EOS, pad_token=PAD)
    text = "import os\nprint(os.getcwd())  # café 🧶"
    assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert hf.decode(tok.encode(text)) == text
    assert hf.bos_token_id == tok.bos_id


def test_reload_from_file_gives_same_tokenizer(trained):
    tok, path = trained
    again = Tokenizer.from_file(path)
    assert again.sha256() == tok.sha256()
    assert again.encode("for i in range(10):") == tok.encode("for i in range(10):")


def test_missing_or_corrupt_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="could not be read"):
        Tokenizer.from_file(bad)



def test_decode_stream_never_splits_a_character(trained):
    tok, _ = trained
    text = "héllo 🧶 wörld 日本"
    pieces = list(decode_stream(tok, tok.encode(text)))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_vocab_size_below_minimum_is_refused():
    with pytest.raises(ValueError, match="at least"):
        train_tokenizer(["abc"], 100)
