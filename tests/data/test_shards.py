import json
import os

import numpy as np
import pytest

from conftest import tiny_config
from loom.data import ShardLoader, build_dataset, clean_documents, read_manifest, shard_dir, split_of, verify_shards
from loom.data.shards import ShardWriter, open_index, open_tokens, token_dtype, write_manifest
from loom.errors import DataError
from loom.tokenizer import Tokenizer

SOURCES = 'data.sources=[{{name="stdlib", kind="stdlib", max_files={}}}]'


def test_token_dtype_choice():
    assert token_dtype(8192) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32


def test_writer_rolls_files_and_index_points_at_documents(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 70000, rng.integers(1, 50)) for _ in range(40)]
    domains: list[str] = []
    writer = ShardWriter(tmp_path, "train", np.dtype(np.uint32), 200, domains)
    for i, d in enumerate(docs):
        writer.add(d, n_bytes=3 * len(d), domain="text" if i % 3 else "code:python")
    files = writer.close()
    assert len(files) > 1
    assert sum(f["docs"] for f in files) == 40
    write_manifest(tmp_path, {"format": "loom-shards/1", "dtype": "uint32", "vocab_size": 70000,
                              "splits": {"train": {"files": files}}})
    got = []
    for f in files:
        tokens, index = open_tokens(tmp_path, f, "uint32"), open_index(tmp_path, f)
        assert f["tokens"] <= 200 or f["docs"] == 1
        for start, n, n_bytes, domain in index:
            got.append((tokens[start : start + n].tolist(), n_bytes, domains[domain]))
    assert [g[0] for g in got] == [d.tolist() for d in docs]
    assert [g[2] for g in got] == ["text" if i % 3 else "code:python" for i in range(40)]
    assert verify_shards(tmp_path) == []
    with open(tmp_path / files[0]["path"], "r+b") as fh:
        fh.write(b"\xff\xff")
    assert any("sha256" in p for p in verify_shards(tmp_path))


def test_built_dataset_holds_every_document_exactly(tiny_root):
    cfg = tiny_config(tiny_root)
    out = shard_dir(cfg)
    manifest = read_manifest(out)
    tok = Tokenizer.from_file(tiny_root / "data" / "tokenizer.json")
    assert manifest["tokenizer_sha256"] == tok.sha256()
    assert manifest["dtype"] == "uint16"
    assert verify_shards(out) == []

    for split in ("train", "val"):
        expected = list(clean_documents(cfg, split))  # natural mixture: each kept document once
        assert all(split_of(d.id, cfg.data.val_fraction) == split for d in expected)
        decoded = []
        domains = manifest["domains"]
        for f in manifest["splits"][split]["files"]:
            tokens, index = open_tokens(out, f, manifest["dtype"]), open_index(out, f)
            for start, n, n_bytes, domain in index:
                ids = tokens[start : start + n].tolist()
                assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
                decoded.append((tok.decode(ids[1:-1]), n_bytes, domains[domain]))
        assert decoded == [(d.text, len(d.text.encode()), d.domain) for d in expected]
        info = manifest["splits"][split]
        assert info["tokens"] == sum(f["tokens"] for f in info["files"]) == sum(info["tokens_by_domain"].values())
        assert info["docs"] == len(expected)


def test_rebuild_is_skipped_when_up_to_date(tiny_root):
    cfg = tiny_config(tiny_root)
    manifest_path = shard_dir(cfg) / "manifest.json"
    before = os.stat(manifest_path).st_mtime_ns
    build_dataset(cfg)
    assert os.stat(manifest_path).st_mtime_ns == before


def test_changed_settings_rebuild_into_place(tmp_path):
    cfg = tiny_config(tmp_path, extra=[SOURCES.format(12), "data.val_fraction=0.3"])
    build_dataset(cfg)
    first = read_manifest(shard_dir(cfg))
    cfg2 = tiny_config(tmp_path, extra=[SOURCES.format(30), "data.val_fraction=0.3"])
    build_dataset(cfg2)
    second = read_manifest(shard_dir(cfg2))
    assert second["fingerprint"] != first["fingerprint"]
    assert second["splits"]["train"]["docs"] > first["splits"]["train"]["docs"]
    leftovers = [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".shards")]
    assert leftovers == []


def test_loader_is_deterministic_for_a_seed(tiny_root):
    out = shard_dir(tiny_config(tiny_root))
    a = ShardLoader(out, "train", 16, 4, seed=1)
    b = ShardLoader(out, "train", 16, 4, seed=1)
    c = ShardLoader(out, "train", 16, 4, seed=2)
    batches_a = [a.next_batch() for _ in range(5)]
    batches_b = [b.next_batch() for _ in range(5)]
    batches_c = [c.next_batch() for _ in range(5)]
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
        assert xa.equal(xb) and ya.equal(yb)
    assert not all(xa.equal(xc) for (xa, _), (xc, _) in zip(batches_a, batches_c))
    x, y = batches_a[0]
    assert x.shape == y.shape == (4, 16)
    assert x[:, 1:].equal(y[:, :-1])  # targets are the inputs shifted by one


def test_ranks_are_disjoint_and_together_equal_one_process(tiny_root):
    out = shard_dir(tiny_config(tiny_root))
    single = ShardLoader(out, "train", 16, 6, rank=0, world_size=1, seed=5)
    ranks = [ShardLoader(out, "train", 16, 2, rank=r, world_size=3, seed=5) for r in range(3)]
    for _ in range(4):
        whole, _ = single.next_batch()
        parts = [r.next_batch()[0] for r in ranks]
        assert np.concatenate(parts).tolist() == whole.tolist()
    seen = [set(map(tuple, r.next_batch()[0].tolist())) for r in ranks]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_every_window_once_per_epoch(tiny_root):
    out = shard_dir(tiny_config(tiny_root))
    loader = ShardLoader(out, "val", 8, 1, seed=0)
    n = loader.num_windows
    starts = []
    for _ in range(n):
        loader.next_batch()
        starts.append(loader._epoch_order()[loader.cursor - 1])
    assert sorted(starts) == list(range(n))
    assert loader.epoch == 0
    loader.next_batch()
    assert loader.epoch == 1


def test_state_restores_exact_position(tiny_root):
    out = shard_dir(tiny_config(tiny_root))
    a = ShardLoader(out, "train", 16, 4, seed=3)
    for _ in range(a.batches_per_epoch + 2):  # cross an epoch boundary
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = ShardLoader(out, "train", 16, 4, seed=3)
    b.load_state_dict(state)
    for _ in range(3):
        assert a.next_batch()[0].equal(b.next_batch()[0])
    other = ShardLoader(out, "train", 8, 4, seed=3)
    with pytest.raises(DataError, match="seq_len"):
        other.load_state_dict(state)


def test_missing_shards_and_too_little_data_are_clear(tmp_path, tiny_root):
    with pytest.raises(DataError, match="loom data build"):
        ShardLoader(tmp_path, "train", 16, 4)
    out = shard_dir(tiny_config(tiny_root))
    with pytest.raises(DataError, match="fewer than one global batch"):
        ShardLoader(out, "val", 60, 10_000)
