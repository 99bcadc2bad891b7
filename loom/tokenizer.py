"""Byte-level BPE tokenizer: training and encoding, through HF `tokenizers`.

Owns the special and chat tokens and the `tokenizer.json` file format (the HF one, so
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)` loads it unchanged). Byte-level
pre-tokenization means every Unicode string encodes and decodes back to itself exactly: there is
no unknown token and no normalization. Text that happens to contain a special token's spelling
(say a document quoting "<|eos|>") is encoded as ordinary text, never as the control token;
special tokens enter a sequence only by id.

Does not own: where the training text comes from (the data package passes an iterator).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from loom.errors import DataError
from loom.util import atomic_write_bytes

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end_of_turn|>", "<|tool_call|>", "<|tool_result|>"]
RESERVED_TOKENS = [f"<|reserved_{i}|>" for i in range(10)]
# Special tokens take the first ids, in this order, so every loom tokenizer agrees on them.
SPECIAL_TOKENS = [BOS, EOS, PAD, *CHAT_TOKENS, *RESERVED_TOKENS]
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


class Tokenizer:
    """A trained tokenizer: `encode`, `decode`, and the ids of the special tokens."""

    def __init__(self, hf: HFTokenizer, path: str | None = None):
        self._hf = hf
        # Split special-token spellings in input text into ordinary tokens (see module doc).
        self._hf.encode_special_tokens = True
        self.path = path
        missing = [t for t in SPECIAL_TOKENS[:3] if hf.token_to_id(t) is None]
        if missing:
            raise DataError(f"{path or 'tokenizer'}: special tokens {missing} are missing; "
                            "train it with `loom tokenizer train`")
        self.bos_id = hf.token_to_id(BOS)
        self.eos_id = hf.token_to_id(EOS)
        self.pad_id = hf.token_to_id(PAD)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        path = str(path)
        if not os.path.exists(path):
            raise DataError(f"tokenizer file {path} does not exist; create it with `loom tokenizer train`")
        try:
            return cls(HFTokenizer.from_file(path), path)
        except Exception as e:  # the HF parser's own message says what is wrong
            raise DataError(f"tokenizer file {path} could not be read: {e}") from None

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self._hf.token_to_id(token)
        if i is None:
            raise KeyError(token)
        return i

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many texts at once, in parallel threads inside `tokenizers`."""
        return [e.ids for e in self._hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def to_json(self) -> str:
        """The tokenizer as Hugging Face's tokenizer.json text (for libraries that read that)."""
        return self._hf.to_str()

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(Path(path), self._hf.to_str(pretty=True).encode())


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_path: str | os.PathLike | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    """Trains byte-level BPE on `texts` to `vocab_size` ids (special tokens included) and
    saves it to `out_path` when given. Training is deterministic for the same texts."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + special tokens)")
    hf = HFTokenizer(models.BPE())
    # GPT-2's split pattern, without adding a leading space, so encode/decode is the identity.
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    hf.train_from_iterator(texts, trainer)
    tok = Tokenizer(hf)
    if out_path is not None:
        tok.save(out_path)
        tok.path = str(out_path)
    return tok


def write_training_record(path: str | os.PathLike, settings: dict) -> None:
    """Records the settings a tokenizer was trained with, beside it, so a later build can tell
    whether it is still the one the config asks for."""
    atomic_write_bytes(Path(path), json.dumps(settings, sort_keys=True, indent=2).encode())


def decode_stream(tok: Tokenizer, ids: Iterable[int]) -> Iterable[str]:
    """Turns a stream of token ids into a stream of text pieces, holding back a piece while it
    ends inside a multi-byte character (decoded as U+FFFD until its last byte arrives)."""
    pending: list[int] = []
    for i in ids:
        pending.append(i)
        text = tok.decode(pending)
        if text and not text.endswith("\ufffd"):
            yield text
            pending = []
    if pending:
        yield tok.decode(pending)
