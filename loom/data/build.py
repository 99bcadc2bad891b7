"""Building a dataset: sources -> clean documents -> tokenizer -> mixed token shards -> data card.

`build_dataset(cfg)` is what `loom data build` and `loom quickstart` run. Its stages, each
leaving files in `data.dir` that the next one reads:

1. clean (`clean/`, `loom.data.clean`): tasks of files through the clean chain, then exact and
   near duplicates marked across all sources;
2. tokenizer (`tokenizer.json`, `loom.data.corpus_tokenizer`);
3. shards (`shards/`, `loom.data.mixture`): tokenized, mixed to the target shares;
4. data card (`data_card.json`, `data_card.md`, plots, `loom.data.card`): every input accounted
   for.

Each stage is skipped when its inputs and settings are unchanged (fingerprints in the stage's
manifest; the clean stage's covers each input file's size and modification time), and each
stage writes into a work directory that replaces the old one whole (`loom.data.workdirs`), so an
interrupted build never leaves a half-written dataset.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from loom.data.clean import clean_corpus
from loom.data.corpus_tokenizer import ensure_tokenizer
from loom.data.mixture import write_shards
from loom.data.shards import read_manifest
from loom.data.sources import validate_source
from loom.data.workdirs import clean_dir, shard_dir


def build_dataset(cfg, force: bool = False, test_ngrams: list[str] | None = None) -> Path:
    """Makes sure `data.dir` holds a clean corpus, a tokenizer, token shards and a data card for
    `cfg`; returns the shard directory. Stages already up to date are skipped, unless `force`.
    `test_ngrams`: with `data.decontaminate` on, the word n-grams no training document may
    share, computed by the caller from the test items (`loom.pipeline.build_data` does)."""
    for source in cfg.data.sources:
        validate_source(source)  # missing paths fail here, before any work
    if force:
        for path in (clean_dir(cfg), clean_dir(cfg).parent / "clean.work", shard_dir(cfg)):
            shutil.rmtree(path, ignore_errors=True)
    clean = clean_corpus(cfg, test_ngrams)
    tok = ensure_tokenizer(cfg, clean)
    out = write_shards(cfg, tok, clean)
    from loom.data.card import write_data_card

    write_data_card(Path(cfg.data.dir), clean, read_manifest(out))
    return out
