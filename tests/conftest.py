"""Shared fixtures: a tiny dataset built once per test session from the real stdlib corpus."""

from __future__ import annotations

import pytest

from loom.config import load_config

TINY_DATA = [
    'data.sources=[{name="stdlib", kind="stdlib", max_files=60}]',
    "data.val_fraction=0.1",
    "data.shard_tokens=200000",
    "tokenizer.vocab_size=512",
    "tokenizer.train_bytes=300000",
]
TINY_MODEL = [
    "model.n_layer=2",
    "model.n_head=4",
    "model.n_kv_head=2",
    "model.d_model=64",
    "model.max_seq_len=64",
]
TINY_TRAIN = [
    "train.seq_len=32",
    "train.micro_batch=4",
    "train.steps=6",
    "train.warmup_steps=2",
    "train.eval_every=3",
    "train.eval_batches=2",
    "train.log_every=1",
    "train.ckpt_every=3",
    "train.lr=1e-2",
]


def tiny_overrides(root, name: str = "tiny", extra=()) -> list[str]:
    return [
        *TINY_DATA,
        *TINY_MODEL,
        *TINY_TRAIN,
        f'data.dir="{root}/data"',
        f'run.dir="{root}/runs"',
        f'run.name="{name}"',
        *extra,
    ]


def tiny_config(root, name: str = "tiny", extra=()):
    return load_config(None, tiny_overrides(root, name, extra))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A directory whose data/ holds the tiny dataset (tokenizer + shards), built once."""
    from loom.data import build_dataset

    root = tmp_path_factory.mktemp("tiny")
    build_dataset(tiny_config(root))
    return root
