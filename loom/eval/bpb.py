"""Held-out bits per byte, per domain, on a dataset's validation shards.

Bits per byte is the model's negative log-likelihood of the validation text, in bits, divided
by the text's UTF-8 bytes. Unlike per-token loss it does not depend on the tokenizer, so runs
with different vocabularies compare (the measure of Gao et al. 2020, "The Pile", section 4).
Only the text's own tokens count: <|bos|> is context, and <|eos|>, which has no bytes, is not
scored, so a document's bits are those of its bytes alone.

Documents are read from the shards the run was trained beside (`loom.data.iter_documents`);
each domain (text, code:python, ...) gets its own figure and the total is over all bytes.
`max_bytes` bounds the work per domain, taking documents in shard order.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from loom.data import iter_documents, read_manifest
from loom.errors import DataError
from loom.eval.lm import LoomLM


def bits_per_byte(lm: LoomLM, shard_dir: str | os.PathLike, split: str = "val",
                  max_bytes_per_domain: int | None = None, batch_docs: int = 64) -> dict[str, dict]:
    """{domain: {"bits_per_byte", "bytes", "tokens", "docs"}} plus "all" over every domain."""
    built_with, models = read_manifest(shard_dir).get("tokenizer_sha256"), lm.tok.sha256()
    if built_with is not None and built_with != models:  # its ids would mean other pieces to the model
        raise DataError(f"{shard_dir} was tokenized with another tokenizer than the model's (sha256 "
                        f"{built_with[:12]}... against {models[:12]}...): score the shards built with "
                        "the run's tokenizer (bits per byte compares across tokenizers; token ids do not)")
    totals: dict[str, dict] = defaultdict(lambda: {"nats": 0.0, "bytes": 0, "tokens": 0, "docs": 0})
    pending: list[tuple[list[int], int, str]] = []

    def flush() -> None:
        for (ids, n_bytes, domain), nll in zip(pending, lm.token_nll_batch([p[0] for p in pending])):
            t = totals[domain]
            scored = nll[:-1] if ids[-1] == lm.tok.eos_id else nll  # the <|eos|> prediction has no bytes
            t["nats"] += float(scored.sum())
            t["bytes"] += n_bytes
            t["tokens"] += len(scored)
            t["docs"] += 1
        pending.clear()

    taken: dict[str, int] = defaultdict(int)  # bytes of the documents chosen so far, per domain
    for ids, n_bytes, domain in iter_documents(shard_dir, split):
        if n_bytes == 0 or (max_bytes_per_domain is not None and taken[domain] >= max_bytes_per_domain):
            continue
        taken[domain] += n_bytes
        pending.append((ids.tolist(), n_bytes, domain))
        if len(pending) >= batch_docs:
            flush()
    flush()

    result = {}
    for domain in sorted(totals):
        result[domain] = _summary(totals[domain])
    if totals:
        everything = {k: sum(t[k] for t in totals.values()) for k in ("nats", "bytes", "tokens", "docs")}
        result["all"] = _summary(everything)
    return result


def _summary(t: dict) -> dict:
    return {"bits_per_byte": t["nats"] / math.log(2) / max(1, t["bytes"]), "bytes": t["bytes"],
            "tokens": t["tokens"], "docs": t["docs"]}
