"""The tokenizer stage (`tokenizer.json`): BPE trained on a hash-chosen sample of the clean
corpus' kept training documents, unless one trained with the same settings on the same clean
corpus is there already; or, with `tokenizer.path`, a given tokenizer copied in (a base run's,
so that a second stage of training on other data reads the same ids)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from loom.data.clean import clean_corpus, clean_documents
from loom.data.documents import hash_fraction
from loom.data.workdirs import log, tokenizer_path
from loom.errors import ConfigError
from loom.tokenizer import Tokenizer, train_tokenizer, write_training_record
from loom.util import atomic_write_bytes


def _tokenizer_settings(cfg, clean_fingerprint: str) -> dict:
    return {"vocab_size": cfg.tokenizer.vocab_size, "train_bytes": cfg.tokenizer.train_bytes,
            "clean_corpus": clean_fingerprint}


def train_corpus_tokenizer(cfg, manifest: dict | None = None) -> Tokenizer:
    """Trains the BPE tokenizer on a sample of the kept training documents, chosen by a hash of
    their ids so it is spread over the whole corpus, and saves it under `data.dir`."""
    if cfg.tokenizer.path:
        raise ConfigError(f"tokenizer.path is set ({cfg.tokenizer.path}): this dataset uses that tokenizer rather "
                          "than training one; leave tokenizer.path out to train one")
    manifest = manifest or clean_corpus(cfg)
    kept_bytes = sum(d.get("train_bytes", 0) for d in manifest["accounting"]["by_domain"].values())
    rate = min(1.0, cfg.tokenizer.train_bytes / max(1, kept_bytes))

    def sample() -> Iterator[str]:
        taken = 0
        for doc in clean_documents(cfg, "train"):
            if taken >= cfg.tokenizer.train_bytes:
                return
            if hash_fraction("tokenizer-sample/" + doc.id) < rate:
                taken += len(doc.text)
                yield doc.text

    path = tokenizer_path(cfg)
    started = time.time()
    sample_mb = min(kept_bytes, cfg.tokenizer.train_bytes) / 1e6
    log(f"training a {cfg.tokenizer.vocab_size}-token BPE tokenizer on ~{sample_mb:.1f} MB")
    tok = train_tokenizer(sample(), cfg.tokenizer.vocab_size, path, show_progress=sys.stderr.isatty())
    write_training_record(path.with_suffix(".train.json"), _tokenizer_settings(cfg, manifest["fingerprint"]))
    log(f"tokenizer: {tok.vocab_size} tokens -> {path} ({time.time() - started:.1f}s)")
    return tok


def ensure_tokenizer(cfg, manifest: dict | None = None) -> Tokenizer:
    """The tokenizer at `data.dir`: `tokenizer.path`'s copied in when set, otherwise trained
    first if missing or trained on something else."""
    path = tokenizer_path(cfg)
    if cfg.tokenizer.path:
        return _copy_given_tokenizer(cfg, path)
    record = path.with_suffix(".train.json")
    manifest = manifest or clean_corpus(cfg)
    if path.is_file() and record.is_file():
        try:
            if json.loads(record.read_text()) == _tokenizer_settings(cfg, manifest["fingerprint"]):
                return Tokenizer.from_file(path)
        except json.JSONDecodeError:
            pass
    return train_corpus_tokenizer(cfg, manifest)


def _copy_given_tokenizer(cfg, path) -> Tokenizer:
    given = Path(cfg.tokenizer.path)
    tok = Tokenizer.from_file(given)
    if tok.vocab_size != cfg.tokenizer.vocab_size:
        raise ConfigError(f"tokenizer.path {given} holds {tok.vocab_size} tokens but tokenizer.vocab_size is "
                          f"{cfg.tokenizer.vocab_size}; set tokenizer.vocab_size={tok.vocab_size}")
    data = given.read_bytes()
    if not path.is_file() or path.read_bytes() != data:
        # the shards' fingerprint covers the tokenizer file, so shards made with another are rebuilt
        atomic_write_bytes(path, data)
        record = path.with_suffix(".train.json")
        record.unlink(missing_ok=True)  # not trained here: a later build without tokenizer.path trains anew
        log(f"tokenizer: {tok.vocab_size} tokens copied from {given} -> {path}")
    return tok  # the file's bytes are the given one's
