"""The document: the unit every data stage passes along, and the stable train/validation split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass
class Document:
    id: str  # stable across runs and machines: the split and deduplication key
    text: str
    domain: str  # "text" or "code:<language>"
    source: str  # which source produced it, e.g. "stdlib"
    meta: dict = field(default_factory=dict)

    @property
    def domain_group(self) -> str:
        """"text" or "code": the level at which mixtures are usually stated."""
        return self.domain.split(":", 1)[0]


def hash_fraction(key: str) -> float:
    """A number in [0, 1) that depends on `key` alone: the same on every run and machine."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(doc_id: str, val_fraction: float) -> str:
    """"val" or "train", decided by a hash of the id alone, so the same document lands in the
    same split on every run and machine, whatever else the corpus holds."""
    return "val" if hash_fraction(doc_id) < val_fraction else "train"
