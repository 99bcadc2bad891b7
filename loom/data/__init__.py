"""Data: sources, cleaning (normalization, quality, PII, dedup), mixture, token shards, the
data card, and the batch loader.

Public surface: `build_dataset(cfg)` (sources -> clean corpus -> tokenizer -> shards -> card),
`ShardLoader`, `read_data_card`, and the paths where a config's tokenizer and shards live.
"""

from loom.data.build import build_dataset
from loom.data.card import read_data_card
from loom.data.clean import clean_corpus, clean_documents
from loom.data.corpus_tokenizer import ensure_tokenizer, train_corpus_tokenizer
from loom.data.documents import Document, split_of
from loom.data.loader import ShardLoader, WindowLoader
from loom.data.shards import iter_documents, read_manifest, verify_shards
from loom.data.workdirs import shard_dir, tokenizer_path

__all__ = [
    "Document",
    "ShardLoader",
    "WindowLoader",
    "build_dataset",
    "clean_corpus",
    "clean_documents",
    "ensure_tokenizer",
    "iter_documents",
    "read_data_card",
    "read_manifest",
    "shard_dir",
    "split_of",
    "tokenizer_path",
    "train_corpus_tokenizer",
    "verify_shards",
]
