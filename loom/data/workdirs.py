"""Where a data build writes, and how: the paths of its stages' outputs, digests of their
settings, directories replaced whole, temporaries of dead processes removed, and progress.

Every stage of `loom.data.build` writes into a work directory that replaces the old output whole
(`replace_dir`), so an interrupted build never leaves a half-written stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from loom.util import fsync_dir, remove_leftovers


def tokenizer_path(cfg) -> Path:
    return Path(cfg.data.dir) / "tokenizer.json"


def shard_dir(cfg) -> Path:
    return Path(cfg.data.dir) / "shards"


def clean_dir(cfg) -> Path:
    return Path(cfg.data.dir) / "clean"


def log(msg: str) -> None:
    print(f"[loom] {msg}", file=sys.stderr, flush=True)


def digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def replace_dir(tmp: Path, final: Path) -> None:
    """Swaps a finished temporary directory into place. The old one is set aside as
    `.<name>.old-<pid>` and removed; a build killed in between leaves it for the next build's
    `remove_temporaries`."""
    fsync_dir(tmp)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)  # our pid's: from a dead process that had it before us
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(directory: Path, *patterns: str) -> None:
    """Removes the temporaries (named `...-<pid>`) that builds killed part way left in
    `directory`; those of builds running now are left alone."""
    for path in remove_leftovers(directory, *patterns):
        log(f"removed {path}, left by a process that no longer exists")


def progress(desc: str):
    from tqdm import tqdm

    return tqdm(desc=desc, unit=" docs", file=sys.stderr, disable=not sys.stderr.isatty(), smoothing=0.1)
