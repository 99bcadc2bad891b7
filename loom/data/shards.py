"""Token shards on disk: packed token files, their document index, and the manifest.

Layout of a shard directory:
  manifest.json           dtype, vocab size, tokenizer checksum, and per split: files with
                          sha256, token and document counts, tokens/bytes/documents per domain
  train_0000.bin          the split's documents' tokens back to back, raw uint16 (vocab <= 65,535)
                          or uint32, read with numpy memmaps
  train_0000.idx.npy      one row per document: (first token, tokens, UTF-8 bytes, domain code),
                          int64; domain codes index the manifest's "domains" list
  val_0000.bin, ...

Each document is stored as <|bos|> tokens... <|eos|>. Shard files are plain binary so any tool
(numpy, nanoGPT-style loaders) can read them. The writer hashes as it writes, so files are read
once; `verify_shards` re-reads them to check integrity.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from loom.errors import DataError
from loom.util import atomic_write_text, sha256_file

MANIFEST = "manifest.json"
FORMAT = "loom-shards/1"
INDEX_COLUMNS = ("start", "tokens", "bytes", "domain")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 - 1 else np.uint32)


class ShardWriter:
    """Appends documents of one split to shard files, starting a new file once `shard_tokens`
    is reached (a document never straddles two files)."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int, domains: list[str]):
        self.out_dir, self.split, self.dtype, self.shard_tokens = Path(out_dir), split, dtype, shard_tokens
        self.domains = domains  # shared with the caller: new domains are appended
        self.files: list[dict] = []
        self._file = None

    def _open_next(self) -> None:
        name = f"{self.split}_{len(self.files):04d}"
        self._file = open(self.out_dir / f"{name}.bin", "wb")
        self._name, self._hash, self._rows, self._tokens = name, hashlib.sha256(), [], 0

    def _close_current(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        index = np.array(self._rows, dtype=np.int64).reshape(-1, len(INDEX_COLUMNS))
        index_path = self.out_dir / f"{self._name}.idx.npy"
        np.save(index_path, index)
        self.files.append({
            "path": f"{self._name}.bin",
            "index": index_path.name,
            "tokens": self._tokens,
            "docs": len(self._rows),
            "sha256": self._hash.hexdigest(),
            "index_sha256": sha256_file(index_path),
        })
        self._file = None

    def add(self, tokens: np.ndarray, n_bytes: int, domain: str) -> None:
        if self._file is not None and self._tokens + len(tokens) > self.shard_tokens and self._tokens:
            self._close_current()
        if self._file is None:
            self._open_next()
        if domain not in self.domains:
            self.domains.append(domain)
        data = np.asarray(tokens, dtype=self.dtype).tobytes()
        self._file.write(data)
        self._hash.update(data)
        self._rows.append((self._tokens, len(tokens), n_bytes, self.domains.index(domain)))
        self._tokens += len(tokens)

    def close(self) -> list[dict]:
        self._close_current()
        return self.files


def write_manifest(out_dir: Path, manifest: dict) -> None:
    atomic_write_text(Path(out_dir) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))


def read_manifest(shard_dir: str | os.PathLike) -> dict:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"no token shards at {shard_dir} ({MANIFEST} missing): build them with `loom data build`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is corrupt ({e}): rebuild with `loom data build`") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}; rebuild with `loom data build`")
    return manifest


def split_files(shard_dir: str | os.PathLike, split: str, manifest: dict | None = None) -> list[dict]:
    manifest = manifest or read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise DataError(f"{shard_dir}: no {split!r} split; the shards hold {sorted(manifest['splits'])}")
    return manifest["splits"][split]["files"]


def open_tokens(shard_dir: str | os.PathLike, file: dict, dtype: str) -> np.memmap:
    path = Path(shard_dir) / file["path"]
    if not path.is_file():
        raise DataError(f"shard {path} is missing: rebuild with `loom data build`")
    expected = file["tokens"] * np.dtype(dtype).itemsize
    if path.stat().st_size != expected:
        raise DataError(f"shard {path} has {path.stat().st_size} bytes, the manifest says {expected}: "
                        "it is truncated or stale; rebuild with `loom data build`")
    if file["tokens"] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def open_index(shard_dir: str | os.PathLike, file: dict) -> np.ndarray:
    return np.load(Path(shard_dir) / file["index"])


def iter_documents(shard_dir: str | os.PathLike, split: str) -> Iterator[tuple[np.ndarray, int, str]]:
    """(token ids from <|bos|> to <|eos|>, UTF-8 bytes of the text, domain) of each document of
    a split, in shard order."""
    manifest = read_manifest(shard_dir)
    domains = manifest["domains"]
    for file in split_files(shard_dir, split, manifest):
        tokens = open_tokens(shard_dir, file, manifest["dtype"])
        for start, n, n_bytes, domain in open_index(shard_dir, file):
            yield np.asarray(tokens[start : start + n], dtype=np.int64), int(n_bytes), domains[domain]


def verify_shards(shard_dir: str | os.PathLike) -> list[str]:
    """Re-hashes every file against the manifest; returns the problems found (empty: all good)."""
    manifest = read_manifest(shard_dir)
    problems = []
    for info in manifest["splits"].values():
        for f in info["files"]:
            for key, digest in (("path", "sha256"), ("index", "index_sha256")):
                path = Path(shard_dir) / f[key]
                if not path.is_file():
                    problems.append(f"{path}: missing")
                elif sha256_file(path) != f[digest]:
                    problems.append(f"{path}: sha256 does not match the manifest")
    return problems
