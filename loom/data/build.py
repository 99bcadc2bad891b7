"""Building a dataset: corpus documents -> tokenizer (trained when needed) -> token shards.

`build_dataset(cfg)` is what `loom data build` and `loom quickstart` call. It is incremental:
a tokenizer is retrained only when the settings it was trained with changed, and shards are
rebuilt only when their fingerprint (source settings, tokenizer checksum, Python version)
changed. Shards are written into a temporary directory and swapped in whole, so an interrupted
build leaves the previous dataset intact.

Tokenization is parallel: documents are encoded in batches by `tokenizers`' multithreaded
`encode_batch`, while a process pool parses the next source files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from loom.data.documents import Document, hash_fraction, split_of
from loom.data.shards import FORMAT, ShardWriter, read_manifest, token_dtype, write_manifest
from loom.data.stdlib_corpus import stdlib_documents, stdlib_files, stdlib_root
from loom.errors import DataError
from loom.tokenizer import Tokenizer, train_tokenizer, write_training_record
from loom.util import fsync_dir

ENCODE_BATCH_DOCS = 256


def tokenizer_path(cfg) -> Path:
    return Path(cfg.data.dir) / "tokenizer.json"


def shard_dir(cfg) -> Path:
    return Path(cfg.data.dir) / "shards"


def corpus_documents(cfg, skipped: dict | None = None) -> Iterator[Document]:
    """The configured source's documents (only the embedded standard library for now)."""
    return stdlib_documents(cfg.data.max_files, cfg.data.workers, skipped)


def _estimated_corpus_bytes(cfg) -> int:
    root = stdlib_root()
    return sum(os.path.getsize(os.path.join(root, f)) for f in stdlib_files(root, cfg.data.max_files))


def _log(msg: str) -> None:
    print(f"[loom] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def _tokenizer_settings(cfg) -> dict:
    return {
        "source": cfg.data.source,
        "max_files": cfg.data.max_files,
        "val_fraction": cfg.data.val_fraction,
        "vocab_size": cfg.tokenizer.vocab_size,
        "train_bytes": cfg.tokenizer.train_bytes,
        "python": platform.python_version(),
    }


def train_corpus_tokenizer(cfg) -> Tokenizer:
    """Trains the BPE tokenizer on a sample of the training split, chosen by document hash so
    the sample is spread over the whole corpus, and saves it under `data.dir`."""
    rate = min(1.0, cfg.tokenizer.train_bytes / max(1, _estimated_corpus_bytes(cfg)))

    def sample() -> Iterator[str]:
        taken = 0
        for doc in corpus_documents(cfg):
            if taken >= cfg.tokenizer.train_bytes:
                return
            if split_of(doc.id, cfg.data.val_fraction) != "train":
                continue
            if hash_fraction("tokenizer-sample/" + doc.id) >= rate:
                continue
            taken += len(doc.text)
            yield doc.text

    path = tokenizer_path(cfg)
    started = time.time()
    _log(f"training a {cfg.tokenizer.vocab_size}-token BPE tokenizer on ~{cfg.tokenizer.train_bytes / 1e6:.1f} MB")
    tok = train_tokenizer(sample(), cfg.tokenizer.vocab_size, path, show_progress=sys.stderr.isatty())
    write_training_record(path.with_suffix(".train.json"), _tokenizer_settings(cfg))
    _log(f"tokenizer: {tok.vocab_size} tokens -> {path} ({time.time() - started:.1f}s)")
    return tok


def ensure_tokenizer(cfg) -> Tokenizer:
    """The tokenizer at `data.dir`, trained first if it is missing or was trained differently."""
    path = tokenizer_path(cfg)
    record = path.with_suffix(".train.json")
    if path.is_file() and record.is_file():
        try:
            if json.loads(record.read_text()) == _tokenizer_settings(cfg):
                return Tokenizer.from_file(path)
        except json.JSONDecodeError:
            pass
    return train_corpus_tokenizer(cfg)


# ---------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------


def _fingerprint(cfg, tok: Tokenizer) -> str:
    settings = {
        "format": FORMAT,
        "source": cfg.data.source,
        "max_files": cfg.data.max_files,
        "val_fraction": cfg.data.val_fraction,
        "shard_tokens": cfg.data.shard_tokens,
        "tokenizer_sha256": tok.sha256(),
        "python": platform.python_version(),
        "stdlib": stdlib_root(),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def build_dataset(cfg, force: bool = False) -> Path:
    """Makes sure `data.dir` holds a tokenizer and token shards for `cfg`; returns the shard
    directory. Does nothing when they are already up to date, unless `force`."""
    tok = ensure_tokenizer(cfg)
    out = shard_dir(cfg)
    fingerprint = _fingerprint(cfg, tok)
    if not force and (out / "manifest.json").is_file():
        try:
            if read_manifest(out).get("fingerprint") == fingerprint:
                _log(f"token shards in {out} are up to date")
                return out
        except DataError:
            pass  # unreadable: rebuild it

    tmp = out.parent / f".shards.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write_shards(cfg, tok, tmp)
        manifest["fingerprint"] = fingerprint
        write_manifest(tmp, manifest)
        fsync_dir(tmp)
        old = out.parent / f".shards.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_shards(cfg, tok: Tokenizer, out: Path) -> dict:
    from tqdm import tqdm

    dtype = token_dtype(tok.vocab_size)
    domains: list[str] = []
    writers = {s: ShardWriter(out, s, dtype, cfg.data.shard_tokens, domains) for s in ("train", "val")}
    stats = {s: {"tokens": 0, "docs": 0, "tokens_by_domain": {}, "docs_by_domain": {}, "bytes_by_domain": {}}
             for s in writers}
    skipped: dict = {}
    started = time.time()
    progress = tqdm(desc="tokenizing", unit=" docs", file=sys.stderr, disable=not sys.stderr.isatty())

    def flush(batch: list[Document]) -> None:
        for doc, ids in zip(batch, tok.encode_batch([d.text for d in batch])):
            split = split_of(doc.id, cfg.data.val_fraction)
            tokens = np.empty(len(ids) + 2, dtype=np.int64)
            tokens[0], tokens[1:-1], tokens[-1] = tok.bos_id, ids, tok.eos_id
            n_bytes = len(doc.text.encode("utf-8"))
            writers[split].add(tokens, n_bytes, doc.domain)
            st = stats[split]
            st["tokens"] += len(tokens)
            st["docs"] += 1
            for key, amount in (("tokens_by_domain", len(tokens)), ("docs_by_domain", 1), ("bytes_by_domain", n_bytes)):
                st[key][doc.domain] = st[key].get(doc.domain, 0) + amount
        progress.update(len(batch))

    batch: list[Document] = []
    for doc in corpus_documents(cfg, skipped):
        batch.append(doc)
        if len(batch) == ENCODE_BATCH_DOCS:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    progress.close()

    for split, writer in writers.items():
        stats[split]["files"] = writer.close()
    if stats["train"]["tokens"] == 0 or stats["val"]["tokens"] == 0:
        raise DataError(
            f"the corpus gave {stats['train']['docs']} training and {stats['val']['docs']} validation "
            "documents; both splits need some: raise data.max_files or adjust data.val_fraction"
        )
    elapsed = time.time() - started
    total = stats["train"]["tokens"] + stats["val"]["tokens"]
    _log(f"shards: {stats['train']['tokens']:,} train + {stats['val']['tokens']:,} val tokens in "
         f"{elapsed:.1f}s ({total / max(elapsed, 1e-9):,.0f} tokens/s) -> {out.parent / 'shards'}")
    return {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": tok.vocab_size,
        "tokenizer_sha256": tok.sha256(),
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "domains": domains,
        "splits": stats,
        "source": {"name": cfg.data.source, "root": stdlib_root(), "python": platform.python_version(),
                   "max_files": cfg.data.max_files, "skipped_files": skipped},
        "val_fraction": cfg.data.val_fraction,
    }
