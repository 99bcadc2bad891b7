"""Data: sources, tokenizing into shards, and the batch loader.

Public surface: `build_dataset(cfg)` (corpus -> tokenizer -> shards), `ShardLoader`, and the
paths where a config's tokenizer and shards live.
"""

from loom.data.build import build_dataset, ensure_tokenizer, shard_dir, tokenizer_path, train_corpus_tokenizer
from loom.data.documents import Document, split_of
from loom.data.loader import ShardLoader
from loom.data.shards import read_manifest, verify_shards

__all__ = [
    "Document",
    "ShardLoader",
    "build_dataset",
    "ensure_tokenizer",
    "read_manifest",
    "shard_dir",
    "split_of",
    "tokenizer_path",
    "train_corpus_tokenizer",
    "verify_shards",
]
