"""The shards stage (`shards/`): kept documents tokenized in parallel batches into packed
shards; in the training split each domain group is up- or down-sampled to the mixture's target
share (`mixture_epochs`)."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from loom.data.clean import clean_documents
from loom.data.documents import Document, hash_fraction
from loom.data.shards import FORMAT, ShardWriter, read_manifest, token_dtype, write_manifest
from loom.data.workdirs import digest, log, progress, remove_temporaries, replace_dir, shard_dir
from loom.errors import DataError
from loom.tokenizer import Tokenizer

ENCODE_BATCH_DOCS = 256


def mixture_epochs(natural_bytes: dict[str, int], weights: dict[str, float]) -> dict[str, float]:
    """How many times each domain group is seen per pass over the training split so that the
    groups' shares match `weights` (normalized), keeping the total size of the split. Empty
    weights: every group once (the natural mixture)."""
    groups = {g: b for g, b in natural_bytes.items() if b > 0}
    if not weights:
        return {g: 1.0 for g in groups}
    total_weight = sum(weights.get(g, 0.0) for g in groups)
    if total_weight <= 0:
        raise DataError(f"data.mixture {weights} gives no weight to the groups the corpus has ({sorted(groups)})")
    total = sum(groups.values())
    return {g: weights.get(g, 0.0) / total_weight * total / b for g, b in groups.items()}


def _repeats(doc_id: str, epochs: float) -> int:
    """Whole epochs, plus one more for a hash-chosen share of documents equal to the fraction."""
    whole = int(epochs)
    return whole + (hash_fraction("mixture/" + doc_id) < epochs - whole)


def _shard_settings(cfg, clean_fingerprint: str, tok: Tokenizer) -> dict:
    return {"format": FORMAT, "clean_corpus": clean_fingerprint, "tokenizer_sha256": tok.sha256(),
            "mixture": cfg.data.mixture, "shard_tokens": cfg.data.shard_tokens}


def write_shards(cfg, tok: Tokenizer, clean_manifest: dict) -> Path:
    out = shard_dir(cfg)
    remove_temporaries(out.parent, f".{out.name}.tmp-*", f".{out.name}.old-*")
    fingerprint = digest(_shard_settings(cfg, clean_manifest["fingerprint"], tok))
    if (out / "manifest.json").is_file():
        try:
            if read_manifest(out).get("fingerprint") == fingerprint:
                log(f"token shards in {out} are up to date")
                return out
        except DataError:
            pass
    natural: Counter = Counter()
    for domain, counts in clean_manifest["accounting"]["by_domain"].items():
        natural[domain.split(":", 1)[0]] += counts.get("train_bytes", 0)
    epochs = mixture_epochs(dict(natural), cfg.data.mixture)

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _tokenize_into(tmp, cfg, tok, epochs)
        manifest["fingerprint"] = fingerprint
        write_manifest(tmp, manifest)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _tokenize_into(out: Path, cfg, tok: Tokenizer, epochs: dict[str, float]) -> dict:
    dtype = token_dtype(tok.vocab_size)
    domains: list[str] = []
    writers = {s: ShardWriter(out, s, dtype, cfg.data.shard_tokens, domains) for s in ("train", "val")}
    stats = {s: {"tokens": 0, "docs": 0, "tokens_by_domain": {}, "docs_by_domain": {}, "bytes_by_domain": {}}
             for s in writers}
    started = time.time()
    bar = progress("tokenizing")

    def flush(batch: list[Document]) -> None:
        for doc, ids in zip(batch, tok.encode_batch([d.text for d in batch])):
            split = doc.meta["split"]
            copies = _repeats(doc.id, epochs.get(doc.domain_group, 0.0)) if split == "train" else 1
            if copies == 0:
                continue
            tokens = np.empty(len(ids) + 2, dtype=np.int64)
            tokens[0], tokens[1:-1], tokens[-1] = tok.bos_id, ids, tok.eos_id
            n_bytes = len(doc.text.encode("utf-8"))
            st = stats[split]
            for _ in range(copies):
                writers[split].add(tokens, n_bytes, doc.domain)
                st["tokens"] += len(tokens)
                st["docs"] += 1
                for key, amount in (("tokens_by_domain", len(tokens)), ("docs_by_domain", 1),
                                    ("bytes_by_domain", n_bytes)):
                    st[key][doc.domain] = st[key].get(doc.domain, 0) + amount
        bar.update(len(batch))

    batch: list[Document] = []
    for doc in clean_documents(cfg):
        batch.append(doc)
        if len(batch) == ENCODE_BATCH_DOCS:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    bar.close()
    for split, writer in writers.items():
        stats[split]["files"] = writer.close()
    if stats["train"]["tokens"] == 0 or stats["val"]["tokens"] == 0:
        raise DataError(
            f"after cleaning, {stats['train']['docs']} training and {stats['val']['docs']} validation documents "
            "remain; both splits need some: add data, loosen [quality] rules or adjust data.val_fraction"
        )
    elapsed = time.time() - started
    total = stats["train"]["tokens"] + stats["val"]["tokens"]
    log(f"shards: {stats['train']['tokens']:,} train + {stats['val']['tokens']:,} val tokens in "
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
        "mixture": {"weights": cfg.data.mixture, "epochs": epochs},
        "val_fraction": cfg.data.val_fraction,
    }
