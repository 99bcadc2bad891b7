"""The whole data build on real files: sources of every kind, bad inputs, duplicates across
sources, the mixture, the data card and its accounting invariant."""

import gzip
import json
import random

import pytest

from loom.config import load_config
from loom.data import build_dataset, clean_documents, read_data_card, read_manifest, shard_dir
from loom.data.mixture import mixture_epochs
from loom.errors import ConfigError


def paragraph(seed, sentences=8):
    rng = random.Random(seed)
    vocab = ["river", "mountain", "library", "garden", "window", "teacher", "morning", "history", "engine",
             "harbor", "village", "letter", "market", "winter", "forest", "lantern", "journey", "silver"]
    out = []
    for _ in range(sentences):
        words = rng.sample(vocab, 6)
        out.append(f"The {words[0]} and the {words[1]} of {words[2]} have {words[3]} with {words[4]} "
                   f"{words[5]} {rng.randint(0, 10_000)}.")
    return " ".join(out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    texts = root / "texts"
    texts.mkdir()
    for i in range(30):
        (texts / f"doc{i:02d}.txt").write_text(paragraph(i))
    (texts / "short.txt").write_text("Too short to keep.")
    (texts / "empty.txt").write_text("")
    repo = root / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / ".git" / "config").write_text("[core]\n")
    for i in range(12):
        body = "\n".join(f"def function_{i}_{j}(value):\n    return value * {j} + {i}\n" for j in range(8))
        (repo / "pkg" / f"mod{i}.py").write_text(body)
    (repo / "pkg" / "blob.py").write_bytes(b"\x00\x01\x02binary" * 100)
    (repo / "pkg" / "gen.py").write_text("# Auto-generated file. Do not edit.\n" + "x = 1\n" * 10)
    dump = root / "dump.jsonl.gz"
    with gzip.open(dump, "wt") as f:
        for i in range(30, 40):
            f.write(json.dumps({"text": paragraph(i)}) + "\n")
        f.write(json.dumps({"text": paragraph(3)}) + "\n")  # exact duplicate of texts/doc03.txt
        f.write("{not json\n")
        f.write(json.dumps({"body": "no text field"}) + "\n")
        f.write(json.dumps({"text": "Write to jane@example.com first. " + paragraph(5).replace("river", "stream", 1)})
                + "\n")  # a near duplicate of doc05, with an e-mail address
    return root


def config(root, corpus, extra=()):
    sources = (f'data.sources=[{{name="texts", kind="text_dir", path="{corpus}/texts"}}, '
               f'{{name="repo", kind="code_repo", path="{corpus}/repo"}}, '
               f'{{name="dump", kind="jsonl", path="{corpus}/dump.jsonl.gz"}}]')
    return load_config(None, [sources, f'data.dir="{root}/data"', "data.val_fraction=0.2", "tokenizer.vocab_size=400",
                              "quality.text.min_words=20", "dedup.bands=20", "dedup.rows=4", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("build")
    cfg = config(root, corpus)
    build_dataset(cfg)
    return cfg


def test_every_input_is_accounted_for_once(built):
    card = json.loads((shard_dir(built).parent / "data_card.json").read_text())
    assert card["inputs"] == card["kept"] + card["dropped"] + card["duplicates"] + card["unreadable"]
    assert sum(card["dropped_by_rule"].values()) == card["dropped"]
    per_source = {name: sum(c.values()) for name, c in card["by_source"].items()}
    assert sum(per_source.values()) == card["inputs"]
    # 32 text files, 14 repo files (not .git/config), 14 jsonl lines
    assert per_source == {"texts": 32, "repo": 14, "dump": 14}


def test_bad_inputs_are_unreadable_with_file_and_line(built):
    card = json.loads((shard_dir(built).parent / "data_card.json").read_text())
    errors = {(u["source"], u["file"].split("/")[-1], u["line"]) for u in card["unreadable_examples"]}
    assert ("dump", "dump.jsonl.gz", 12) in errors  # malformed JSON
    assert ("dump", "dump.jsonl.gz", 13) in errors  # no text field
    assert any(src == "repo" and name == "blob.py" for src, name, _ in errors)  # binary among code
    assert card["dropped_by_rule"].get("code.generated") == 1


def test_duplicates_across_sources_and_redactions(built):
    card = json.loads((shard_dir(built).parent / "data_card.json").read_text())
    assert card["duplicates_by_kind"].get("exact") == 1
    assert card["duplicates_by_kind"].get("near", 0) >= 1
    kept_ids = {d.id for d in clean_documents(built)}
    assert not any("dump" in i and i.endswith(":11") for i in kept_ids)  # the copy of doc03 went
    assert all("jane@example.com" not in d.text for d in clean_documents(built))


def test_shards_hold_the_kept_documents_and_card_renders(built):
    manifest = read_manifest(shard_dir(built))
    kept = list(clean_documents(built))
    assert manifest["splits"]["train"]["docs"] + manifest["splits"]["val"]["docs"] == len(kept)
    text = read_data_card(shard_dir(built).parent)
    assert "# Data card" in text and "Dropped, by rule" in text
    assert (shard_dir(built).parent / "card_outcomes.png").stat().st_size > 1000


def test_mixture_epochs_formula():
    epochs = mixture_epochs({"text": 100, "code": 300}, {"text": 0.5, "code": 0.5})
    assert epochs == pytest.approx({"text": 2.0, "code": 2 / 3})
    assert mixture_epochs({"text": 100, "code": 300}, {}) == {"text": 1.0, "code": 1.0}
    assert mixture_epochs({"text": 100, "code": 300}, {"text": 1.0}) == pytest.approx({"text": 4.0, "code": 0.0})


def test_mixture_is_applied_to_the_training_split(tmp_path, corpus):
    # The natural mixture is about 0.83 text by bytes; ask for an even one.
    cfg = config(tmp_path, corpus, ["data.mixture={text = 0.5, code = 0.5}"])
    build_dataset(cfg)
    manifest = read_manifest(shard_dir(cfg))
    train = manifest["splits"]["train"]["bytes_by_domain"]
    text_share = train.get("text", 0) / sum(train.values())
    assert 0.35 < text_share < 0.65
    assert manifest["mixture"]["epochs"]["text"] < 1 < manifest["mixture"]["epochs"]["code"]


def test_rebuild_is_incremental(built, capfd):
    build_dataset(built)
    err = capfd.readouterr().err
    assert "clean corpus" in err and "up to date" in err


def test_missing_path_and_unknown_kind_fail_before_work(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        load_config(None, ['data.sources=[{name="x", kind="tarball", path="/tmp"}]'])
    cfg = load_config(None, [f'data.sources=[{{name="x", kind="text_dir", path="{tmp_path}/nope"}}]',
                             f'data.dir="{tmp_path}/data"'])
    with pytest.raises(ConfigError, match="does not exist"):
        build_dataset(cfg)
    assert not (tmp_path / "data").exists()


def test_a_second_dataset_reads_the_first_ones_tokenizer(tmp_path, built, corpus):
    first = shard_dir(built).parent / "tokenizer.json"
    only_code = [f'data.sources=[{{name="repo", kind="code_repo", path="{corpus}/repo"}}]',
                 f'data.dir="{tmp_path}/code"', "tokenizer.vocab_size=400", "data.val_fraction=0.3"]
    cfg = load_config(None, [*only_code, f'tokenizer.path="{first}"'])
    build_dataset(cfg)
    assert (tmp_path / "code" / "tokenizer.json").read_bytes() == first.read_bytes()
    assert read_manifest(shard_dir(cfg))["tokenizer_sha256"] == read_manifest(shard_dir(built))["tokenizer_sha256"]
    # trained on its own (code only), the same build gets other merges, so other ids
    own = load_config(None, [*only_code, f'data.dir="{tmp_path}/code-own"'])
    build_dataset(own)
    assert (tmp_path / "code-own" / "tokenizer.json").read_bytes() != first.read_bytes()

    wrong_size = r"holds 400 tokens but tokenizer.vocab_size is 512; set tokenizer.vocab_size=400"
    with pytest.raises(ConfigError, match=wrong_size):
        build_dataset(load_config(None, [*only_code, f'tokenizer.path="{first}"', "tokenizer.vocab_size=512"]))
    with pytest.raises(ConfigError, match=r"tokenizer.path '/nope/tokenizer.json' is not a file"):
        load_config(None, [*only_code, 'tokenizer.path="/nope/tokenizer.json"'])
