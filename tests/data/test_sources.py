"""Sources read real files written under tmp_path: every input becomes a document or an
Unreadable naming the file (and line or row), and reading goes on after each bad one."""

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from loom.data.documents import Document
from loom.data.sources import (
    KINDS,
    SourceConfig,
    SourceStats,
    Unreadable,
    language_of,
    read_source,
    validate_source,
)
from loom.errors import ConfigError


def write(root, rel, content):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def read(cfg, **kw):
    items = list(read_source(cfg, **kw))
    return [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Unreadable)], items


def jsonl_bytes(n, start=0):
    # varied lines, so the compressed stream is long enough to cut in the middle
    return b"".join(
        json.dumps({"text": f"document {i}: " + " ".join(str(i * j % 977) for j in range(30))}).encode() + b"\n"
        for i in range(start, start + n)
    )


# ---------------------------------------------------------------------------------------------
# text_dir
# ---------------------------------------------------------------------------------------------


def test_text_dir_reads_text_files_in_sorted_order_with_ids_domain_and_meta(tmp_path):
    write(tmp_path, "b.md", "# B\n\nSecond.")
    write(tmp_path, "a.txt", "First document.")
    write(tmp_path, "sub/c.rst", "Third\n=====")
    write(tmp_path, "README", "No extension: read as text.")
    write(tmp_path, "image.png", b"\x89PNG\r\n\x1a\n\0\0")
    write(tmp_path, ".hidden.txt", "not read")
    write(tmp_path, ".git/config", "not read")
    cfg = SourceConfig(name="notes", kind="text_dir", path=str(tmp_path))
    stats = SourceStats()
    docs, bad, _ = read(cfg, stats=stats)
    assert bad == []
    assert [d.id for d in docs] == ["notes/README", "notes/a.txt", "notes/b.md", "notes/sub/c.rst"]
    assert docs[1].text == "First document."
    assert {d.domain for d in docs} == {"text"} and {d.source for d in docs} == {"notes"}
    assert docs[3].meta == {"path": "sub/c.rst", "markup": "rst"} and docs[2].meta["markup"] == "markdown"
    assert docs[0].meta["markup"] == docs[1].meta["markup"] == "plain"
    assert stats.files_seen == 4 and stats.documents == 4 and stats.unreadable == 0
    assert stats.files_skipped == {"unknown extension": 1, "hidden file": 1}
    assert stats.dirs_skipped == {"version control dir": 1}
    # the same order and content on a second read
    assert [(d.id, d.text) for d in read(cfg)[0]] == [(d.id, d.text) for d in docs]


def test_domain_override_and_max_files(tmp_path):
    for name in ("c.txt", "a.txt", "b.txt"):
        write(tmp_path, name, f"text of {name}")
    docs, _, _ = read(SourceConfig(name="t", kind="text_dir", path=str(tmp_path), max_files=2, domain="code:prose"))
    assert [d.id for d in docs] == ["t/a.txt", "t/b.txt"]
    assert {d.domain for d in docs} == {"code:prose"}


# ---------------------------------------------------------------------------------------------
# code_repo
# ---------------------------------------------------------------------------------------------


def test_code_repo_languages_and_skipped_directories(tmp_path):
    files = {
        "src/main.py": "print('hi')\n",
        "src/app.ts": "export const x: number = 1;\n",
        "lib/x.rs": "fn main() {}\n",
        "Makefile": "all:\n\techo hi\n",
        "Dockerfile": "FROM python:3.11\n",
        "docs/guide.md": "# Guide\n",
        "notes.txt": "prose in a repository\n",
        "LICENSE-MIT": "Permission is hereby granted\n",
        "data.bin": b"\0\1\2",
        "node_modules/pkg/index.js": "module.exports = 1;\n",
        "vendor/dep/v.go": "package dep\n",
        "third_party/t.c": "int x;\n",
        "build/out.js": "var x;\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".github/workflows/ci.yml": "on: push\n",
        "src/__pycache__/main.cpython-311.pyc": b"\0\0binary",
    }
    for rel, content in files.items():
        write(tmp_path, rel, content)
    stats = SourceStats()
    docs, bad, _ = read(SourceConfig(name="repo", kind="code_repo", path=str(tmp_path)), stats=stats)
    assert bad == []
    assert {d.id: d.domain for d in docs} == {
        "repo/Dockerfile": "code:dockerfile",
        "repo/Makefile": "code:make",
        "repo/LICENSE-MIT": "text",
        "repo/docs/guide.md": "text",
        "repo/notes.txt": "text",
        "repo/lib/x.rs": "code:rust",
        "repo/src/app.ts": "code:typescript",
        "repo/src/main.py": "code:python",
    }
    assert [d.id for d in docs] == sorted(d.id for d in docs)  # names sort the same as paths here
    assert next(d for d in docs if d.id == "repo/docs/guide.md").meta["markup"] == "markdown"
    assert docs[0].meta == {"path": "Dockerfile"} and docs[0].text == "FROM python:3.11\n"
    assert stats.dirs_skipped == {"vendored or build dir": 5, "version control dir": 1, "hidden dir": 1}
    assert stats.files_skipped == {"unknown extension": 1}


@pytest.mark.parametrize(
    "path, language",
    [
        ("a/b/main.py", "python"),
        ("x.PY", "python"),
        ("lib.rs", "rust"),
        ("index.tsx", "typescript"),
        ("util.hpp", "cpp"),
        ("run.sh", "shell"),
        ("Q.sql", "sql"),
        ("conf.yml", "yaml"),
        ("pyproject.toml", "toml"),
        ("Makefile", "make"),
        ("Dockerfile", "dockerfile"),
        ("Dockerfile.dev", "dockerfile"),
        ("CMakeLists.txt", "cmake"),
        ("notes.txt", None),
        ("photo.jpeg", None),
        ("LICENSE", None),
        (".bashrc", None),
    ],
)
def test_language_of(path, language):
    assert language_of(path) == language


def test_bad_code_files_are_unreadable_and_reading_goes_on(tmp_path):
    write(tmp_path, "a_binary.py", b"MZ\x90\x00\x03\x00\x00\x00" * 100)
    write(tmp_path, "b_big.py", b"x = '" + b"y" * 10_000_000 + b"'\n")  # one 10 MB line
    write(tmp_path, "c_empty.py", b"")
    write(tmp_path, "d_blank.py", b"\n   \n")
    write(tmp_path, "e_latin1.py", b"# caf\xe9: one stray byte in a long enough file\n" + b"x = 1\n" * 100)
    os.symlink(tmp_path / "missing.py", tmp_path / "f_broken_link.py")  # open() raises OSError
    write(tmp_path, "g_good.py", "def f():\n    return 1\n")
    docs, bad, items = read(SourceConfig(name="r", kind="code_repo", path=str(tmp_path)))
    shown = {os.path.basename(u.file): u for u in bad}
    assert list(shown) == ["a_binary.py", "b_big.py", "c_empty.py", "d_blank.py", "f_broken_link.py"]
    assert all(u.line is None and u.source == "r" for u in bad)
    assert shown["a_binary.py"].file == os.path.join(str(tmp_path), "a_binary.py")
    assert "binary" in shown["a_binary.py"].error
    assert shown["b_big.py"].error.startswith("too large: 10000007 bytes > max_file_bytes (1000000)")
    assert "empty file" in shown["c_empty.py"].error and "whitespace" in shown["d_blank.py"].error
    assert shown["f_broken_link.py"].error.startswith("cannot read: ")
    # the repaired file is still a document, and the run reached the good file after it all
    assert [d.id for d in docs] == ["r/e_latin1.py", "r/g_good.py"]
    assert "caf\ufffd" in docs[0].text and docs[0].meta["utf8_repairs"] == 1
    assert isinstance(items[-1], Document)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway; the broken-link case covers OSError")
def test_a_file_without_read_permission_is_unreadable(tmp_path):
    locked = write(tmp_path, "a.py", "x = 1\n")
    locked.chmod(0)
    write(tmp_path, "b.py", "y = 2\n")
    try:
        docs, bad, _ = read(SourceConfig(name="r", kind="code_repo", path=str(tmp_path)))
    finally:
        locked.chmod(0o644)
    assert [d.id for d in docs] == ["r/b.py"]
    assert len(bad) == 1 and "permission" in bad[0].error.lower()


def test_symlinks_are_followed_only_inside_path(tmp_path):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    write(outside, "secret.py", "password = 1\n")
    write(repo, "real.py", "x = 1\n")
    os.symlink(repo / "real.py", repo / "alias.py")
    os.symlink(outside / "secret.py", repo / "leak.py")
    os.symlink(outside, repo / "linked_dir")
    os.mkfifo(repo / "pipe.py")  # opening it would block
    stats = SourceStats()
    docs, bad, _ = read(SourceConfig(name="r", kind="code_repo", path=str(repo)), stats=stats)
    assert bad == [] and [d.id for d in docs] == ["r/alias.py", "r/real.py"]
    assert stats.files_skipped == {"symlink outside path": 1, "not a regular file": 1}
    assert stats.dirs_skipped == {"symlinked dir (not followed)": 1}


# ---------------------------------------------------------------------------------------------
# jsonl
# ---------------------------------------------------------------------------------------------


def test_jsonl_bad_lines_are_unreadable_with_their_line_and_reading_goes_on(tmp_path):
    lines = [
        b'{"text": "first", "lang": "en", "score": 0.5, "tags": ["a"], "long": "' + b"z" * 300 + b'"}',
        b'{"text": "broken",',
        b'["not", "an", "object"]',
        b'{"content": "x", "id": 3}',
        b'{"text": 42}',
        b'{"text": null}',
        b'{"text": "   "}',
        b"",  # blank: not a record
        b'{"text": "caf\xe9 repaired", "path": "clash", "pad": "' + b"p" * 300 + b'"}',  # 1 bad byte in 300+
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"text": "last"}',
    ]
    write(tmp_path, "dump/a.jsonl", b"\n".join(lines) + b"\n")
    cfg = SourceConfig(name="d", kind="jsonl", path=str(tmp_path / "dump"))
    docs, bad, items = read(cfg)
    assert [(u.line, u.file) for u in bad] == [(n, str(tmp_path / "dump" / "a.jsonl")) for n in (2, 3, 4, 5, 6, 7)]
    errors = [u.error for u in bad]
    assert errors[0].startswith("malformed JSON")
    assert errors[1].startswith("not a JSON object but an array")
    assert errors[2] == "no field 'text' (fields: content, id); set text_field"
    assert errors[3] == "field 'text' is a number, not a string"
    assert errors[4] == "field 'text' is null, not a string"
    assert errors[5] == "field 'text' is empty"
    assert [d.id for d in docs] == ["d/a.jsonl:1", "d/a.jsonl:9", "d/a.jsonl:10", "d/a.jsonl:11"]
    assert docs[0].meta == {"lang": "en", "score": 0.5, "path": "a.jsonl", "line": 1}  # small scalars only
    assert docs[1].text == "caf\ufffd repaired" and docs[1].meta == {"path": "a.jsonl", "line": 9, "utf8_repairs": 1}
    assert docs[2].text == "lone \ufffd surrogate"
    assert docs[-1].text == "last" and items[-1] is docs[-1]
    assert {d.domain for d in docs} == {"text"}


def test_jsonl_id_field(tmp_path):
    write(tmp_path, "x.jsonl", '{"id": "a1", "text": "one"}\n{"id": 7, "text": "two"}\n{"text": "no id"}\n')
    docs, bad, _ = read(SourceConfig(name="s", kind="jsonl", path=str(tmp_path / "x.jsonl"), id_field="id"))
    assert [d.id for d in docs] == ["s/a1", "s/7"]
    assert "id" not in docs[0].meta and docs[0].meta["path"] == "x.jsonl"
    assert len(bad) == 1 and bad[0].line == 3 and bad[0].error.startswith("no field 'id' for the id (fields: text)")


def test_a_gzip_stream_cut_midway_reports_the_line_and_the_next_file_is_read(tmp_path):
    data = gzip.compress(jsonl_bytes(3000))
    write(tmp_path, "a.jsonl.gz", data[: len(data) // 2])
    write(tmp_path, "b.jsonl", jsonl_bytes(2, start=5000))
    stats = SourceStats()
    docs, bad, _ = read(SourceConfig(name="g", kind="jsonl", path=str(tmp_path)), stats=stats)
    from_a = [d for d in docs if d.meta["path"] == "a.jsonl.gz"]
    assert 0 < len(from_a) < 3000
    assert [d.id for d in from_a] == [f"g/a.jsonl.gz:{n}" for n in range(1, len(from_a) + 1)]
    assert [d.text for d in from_a] == [json.loads(line)["text"] for line in jsonl_bytes(len(from_a)).splitlines()]
    assert len(bad) == 1 and bad[0].file.endswith("a.jsonl.gz") and bad[0].line == len(from_a) + 1
    assert bad[0].error.startswith("truncated or corrupt gzip stream: ")
    assert [d.id for d in docs[-2:]] == ["g/b.jsonl:1", "g/b.jsonl:2"]
    assert stats.files_seen == 2 and stats.unreadable == 1


def test_a_truncated_zstd_file_is_reported_and_whole_multi_frame_files_read_completely(tmp_path):
    cctx = zstandard.ZstdCompressor()
    write(tmp_path, "a.jsonl.zst", cctx.compress(jsonl_bytes(2)) + cctx.compress(jsonl_bytes(3, start=2)))
    cut = cctx.compress(jsonl_bytes(3000))
    write(tmp_path, "b.jsonl.zst", cut[: len(cut) // 2])
    write(tmp_path, "c.jsonl", jsonl_bytes(1))
    docs, bad, _ = read(SourceConfig(name="z", kind="jsonl", path=str(tmp_path)))
    assert [d.id for d in docs if d.meta["path"] == "a.jsonl.zst"] == [f"z/a.jsonl.zst:{n}" for n in range(1, 6)]
    from_b = [d for d in docs if d.meta["path"] == "b.jsonl.zst"]
    # no partial last line is passed off as malformed JSON: the cut is the only error
    assert len(bad) == 1 and bad[0].file.endswith("b.jsonl.zst") and bad[0].line == len(from_b) + 1
    assert bad[0].error.startswith("truncated or corrupt zstd stream: ")
    assert docs[-1].id == "z/c.jsonl:1"


def test_a_file_that_is_not_gzip_at_all_is_one_unreadable(tmp_path):
    write(tmp_path, "a.jsonl.gz", jsonl_bytes(3))  # plain text under a .gz name
    write(tmp_path, "b.jsonl", jsonl_bytes(1))
    docs, bad, _ = read(SourceConfig(name="g", kind="jsonl", path=str(tmp_path)))
    assert [(u.line, u.error.split(":")[0]) for u in bad] == [(1, "truncated or corrupt gzip stream")]
    assert [d.id for d in docs] == ["g/b.jsonl:1"]


# ---------------------------------------------------------------------------------------------
# parquet
# ---------------------------------------------------------------------------------------------


def test_parquet_row_groups_nulls_missing_column_and_corrupt_file(tmp_path):
    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    table = pa.table({"id": ["r1", "r2", "r3", "r4", "r5"], "text": ["one", None, "three", "", "five"], "n": [1] * 5})
    pq.write_table(table, data / "train-00000-of-00002.parquet", row_group_size=2)
    pq.write_table(pa.table({"text": ["six", "seven"]}), data / "train-00001-of-00002.parquet", row_group_size=1)
    pq.write_table(pa.table({"content": ["x"], "meta": ["y"]}), data / "valid-00000-of-00001.parquet")
    good = (data / "train-00001-of-00002.parquet").read_bytes()
    write(data, "z-corrupt.parquet", good[: len(good) // 2])
    write(tmp_path, "ds/.cache/huggingface/x.parquet", b"hidden: never read")
    assert pq.ParquetFile(data / "train-00000-of-00002.parquet").num_row_groups == 3

    cfg = SourceConfig(name="hf", kind="parquet", path=str(tmp_path / "ds"))
    docs, bad, items = read(cfg)
    first, second = "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"
    assert [(d.id, d.text) for d in docs] == [
        (f"hf/{first}:1", "one"), (f"hf/{first}:3", "three"), (f"hf/{first}:5", "five"),
        (f"hf/{second}:1", "six"), (f"hf/{second}:2", "seven"),
    ]
    assert docs[2].meta == {"path": first, "row": 5} and docs[0].domain == "text"
    assert [(os.path.basename(u.file), u.line) for u in bad] == [
        ("train-00000-of-00002.parquet", 2),
        ("train-00000-of-00002.parquet", 4),
        ("valid-00000-of-00001.parquet", None),
        ("z-corrupt.parquet", None),
    ]
    assert bad[0].error == "column 'text' is null" and bad[1].error == "column 'text' is empty"
    assert bad[2].error == "no column 'text' (columns: content, meta); set text_field"
    assert bad[3].error.startswith("not a readable parquet file: ")

    docs, bad, _ = read(SourceConfig(name="hf", kind="parquet", path=str(data / "train-00000-of-00002.parquet"),
                                     id_field="id", domain="code:python"))
    assert [d.id for d in docs] == ["hf/r1", "hf/r3", "hf/r5"] and docs[0].domain == "code:python"
    assert [u.line for u in bad] == [2, 4]


def test_parquet_columns_of_the_wrong_type_and_dictionary_strings(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": pa.array(["x", "y", "x"]).dictionary_encode()}), tmp_path / "b.parquet")
    docs, bad, _ = read(SourceConfig(name="p", kind="parquet", path=str(tmp_path)))
    assert [(u.line, u.error) for u in bad] == [
        (None, "column 'text' holds int64, not strings; set text_field to a string column")
    ]
    assert [d.text for d in docs] == ["x", "y", "x"]


# ---------------------------------------------------------------------------------------------
# stdlib
# ---------------------------------------------------------------------------------------------


def test_stdlib_ids_are_prefixed_with_the_source_name():
    stats = SourceStats()
    docs, bad, _ = read(SourceConfig(name="py", max_files=5), stats=stats)
    assert bad == [] and docs and all(d.id.startswith("py/") and d.source == "py" for d in docs)
    assert {d.domain for d in docs} == {"text", "code:python"}
    assert len({d.id for d in docs}) == len(docs)
    # max_files limits the .py files; the prose files are always read (a few, small)
    from loom.data.stdlib_corpus import stdlib_prose_files

    assert stats.files_seen == 5 + len(stdlib_prose_files()) and stats.documents == len(docs)


@pytest.mark.slow
def test_stdlib_files_that_are_not_utf8_come_out_as_unreadable_in_the_stream():
    from loom.data.stdlib_corpus import stdlib_files, stdlib_prose_files, stdlib_root

    def is_utf8(path):
        try:
            with open(path, "rb") as f:
                f.read().decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    root = stdlib_root()
    files = stdlib_files(root)
    index = next((i for i, rel in enumerate(files) if not is_utf8(os.path.join(root, rel))), None)
    if index is None:
        pytest.skip("this interpreter's standard library has no file that is not UTF-8")
    rel = files[index]
    stats = SourceStats()
    items = list(read_source(SourceConfig(max_files=index + 1), stats=stats))
    assert items[-1] == Unreadable("stdlib", os.path.join(root, rel), None, items[-1].error)
    assert items[-1].error.startswith("not valid UTF-8 (byte ")
    assert stats.unreadable >= 1 and stats.files_seen == index + 1 + len(stdlib_prose_files(root))


def test_stdlib_files_that_are_not_utf8_give_a_reason(tmp_path):
    from loom.data.stdlib_corpus import _read_one

    write(tmp_path, "latin.py", b"# -*- coding: latin-1 -*-\ns = 'caf\xe9'\n")
    rel, code, docstrings, comments, reason, message = _read_one((str(tmp_path), "latin.py"))
    assert (code, reason) == (None, "not_utf8")
    assert message.startswith("not valid UTF-8 (byte 0xe9 at offset 34")


# ---------------------------------------------------------------------------------------------
# validate_source
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, message",
    [
        (SourceConfig("x", "csv", "."), "data.sources[x].kind 'csv' is not known; use one of: " + ", ".join(KINDS)),
        (SourceConfig("x", "text_dir"), "data.sources[x].path is required for a text_dir source"),
        (SourceConfig("x", "jsonl", "/no/such/dir"), "data.sources[x].path: /no/such/dir does not exist"),
        (SourceConfig("x", "text_dir", ".", domain="code"), "data.sources[x].domain 'code' is malformed"),
        (SourceConfig("x", "text_dir", ".", domain="prose"), "'text' or 'code:LANGUAGE'"),
        (SourceConfig("x", path="/tmp"), "a stdlib source reads the running interpreter's standard library"),
        (SourceConfig("x", "code_repo", ".", max_file_bytes=0), "max_file_bytes must be positive"),
    ],
)
def test_validate_source_errors(cfg, message):
    with pytest.raises(ConfigError) as err:
        validate_source(cfg)
    assert message in str(err.value)


def test_validate_source_checks_the_path_holds_files_of_the_kind(tmp_path):
    write(tmp_path, "notes.txt", "hello")
    with pytest.raises(ConfigError, match=r"holds no \*\.jsonl, \*\.jsonl\.gz or \*\.jsonl\.zst files"):
        validate_source(SourceConfig(name="j", kind="jsonl", path=str(tmp_path)))
    with pytest.raises(ConfigError, match="is not a directory; a code_repo source reads every file under one"):
        validate_source(SourceConfig(name="c", kind="code_repo", path=str(tmp_path / "notes.txt")))
    validate_source(SourceConfig(name="t", kind="text_dir", path=str(tmp_path)))  # fine
    validate_source(SourceConfig(name="j", kind="jsonl", path=str(tmp_path / "notes.txt")))  # a file is read as is


def test_read_source_fails_before_reading_anything(tmp_path):
    items = read_source(SourceConfig(name="x", kind="parquet", path=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match=r"data.sources\[x\].path: .*missing does not exist"):
        next(items)


# ---------------------------------------------------------------------------------------------
# Prose in code repositories, include / exclude globs, markup
# ---------------------------------------------------------------------------------------------

GOOD_README = """# Tiler

Tiler cuts large images into square tiles that a web map can load one at a time, so that a
browser never has to hold the whole picture in memory while the user moves around it.

```python
from tiler import cut
cut("world.png", size=256, out="tiles/")
```

The tiles are written in the folder layout that most map viewers expect, one folder for each
zoom level, and the program can be stopped and started again without losing the tiles it has
already written. Each tile is checked against the source image before it is kept.

## Installing

Install it with `pip install tiler`, then run `tiler --help` to see the options it takes and
the defaults that the program uses when an option is left out of the command line.
"""

COOKIE_PAGE = """# Welcome

This website uses cookies to improve your experience. By browsing you accept our cookie policy.
We use cookies for analytics. Read our privacy policy and terms of use.
Accept all cookies | Reject | Settings

[Buy now](http://deals.example) [Buy now](http://deals.example) [Buy now](http://deals.example)
"""


def test_prose_in_a_code_repo_is_text_and_meets_the_text_rules(tmp_path):
    from loom.config import load_config
    from loom.data.clean import clean_corpus, clean_documents

    repo = tmp_path / "repo"
    write(repo, "src/tiler.py", "def cut(path, size=256, out='tiles/'):\n    return [path, size, out]\n" * 3)
    write(repo, "README.md", GOOD_README)
    write(repo, "docs/cookies.md", COOKIE_PAGE)
    cfg = load_config(None, [f'data.sources=[{{name="repo", kind="code_repo", path="{repo}"}}]',
                             f'data.dir="{tmp_path}/data"', "data.workers=1", "data.scrub_pii=false"])
    acct = clean_corpus(cfg)["accounting"]
    kept = {d.id: d.domain for d in clean_documents(cfg)}
    assert kept == {"repo/README.md": "text", "repo/src/tiler.py": "code:python"}
    # the cookie page reached the text rules (its notice lines removed by C4's rule, the rest dropped)
    assert acct["by_domain"]["text"]["dropped"] == 1 and acct["c4_lines_removed"] >= 2
    text_rules = ("gopher", "gopher_repetition", "fineweb", "c4")
    assert all(rule.split(".")[0] in text_rules for rule in acct["dropped_by_rule"])
    assert sum(acct["dropped_by_rule"].values()) == 1
    assert not any(d.startswith("code:markdown") for d in acct["by_domain"])


def tree(root):
    for rel in ("README.md", "src/a.py", "src/b.min.js", "src/sub/c.py", "src/sub/d.js", "lib/src/e.py",
                "tests/test_a.py", "src/tests/test_b.py", "docs/guide.md", "docs/api/index.md", "build.py"):
        write(root, rel, f"// {rel}\n")


def ids(cfg, **kw):
    return [d.id.split("/", 1)[1] for d in read(cfg, **kw)[0]]


@pytest.mark.parametrize("include, exclude, expected", [
    # no / : a name at any depth; a directory covers everything under it
    ([], ["*.min.js", "tests"], ["README.md", "build.py", "docs/api/index.md", "docs/guide.md", "lib/src/e.py",
                                 "src/a.py", "src/sub/c.py", "src/sub/d.js"]),
    # a / anchors at the top of path; * does not cross /
    (["src/*.py"], [], ["src/a.py"]),
    # ** is any number of directories, none included
    (["src/**/*.py"], [], ["src/a.py", "src/sub/c.py", "src/tests/test_b.py"]),
    (["**/*.md"], ["docs/api/"], ["README.md", "docs/guide.md"]),
    # docs, docs/ and docs/** say the same; ? and [] match one character of a name
    (["docs"], [], ["docs/api/index.md", "docs/guide.md"]),
    (["docs/**"], ["docs/api"], ["docs/guide.md"]),
    (["src/?.py", "lib/[a-z]*/[!x].py"], [], ["lib/src/e.py", "src/a.py"]),
    # a trailing / matches directories only: the file build.py is no directory named build.py/
    ([], ["build.py/", "/src", "tests/"], ["README.md", "build.py", "docs/api/index.md", "docs/guide.md",
                                           "lib/src/e.py"]),
])
def test_include_and_exclude_globs(tmp_path, include, exclude, expected):
    tree(tmp_path)
    cfg = SourceConfig(name="r", kind="code_repo", path=str(tmp_path), include=include, exclude=exclude)
    assert ids(cfg) == expected


def test_globs_are_counted_by_reason_and_apply_to_every_path_kind(tmp_path):
    tree(tmp_path / "repo")
    stats = SourceStats()
    cfg = SourceConfig(name="r", kind="code_repo", path=str(tmp_path / "repo"), include=["src/**"],
                       exclude=["tests", "*.min.js"])
    assert ids(cfg, stats=stats) == ["src/a.py", "src/sub/c.py", "src/sub/d.js"]
    assert stats.dirs_skipped == {"excluded by glob": 2}  # tests/ and src/tests/, not entered
    assert stats.files_skipped == {"excluded by glob": 1, "not included": 5}  # README, build.py, lib, docs
    for name in ("keep.txt", "drop.txt", "old/keep.txt"):
        write(tmp_path / "notes", name, f"{name}\n")
    cfg = SourceConfig(name="t", kind="text_dir", path=str(tmp_path / "notes"), exclude=["drop.txt", "old/"])
    assert ids(cfg) == ["keep.txt"]
    for name in ("a.jsonl", "b.jsonl", "part/c.jsonl"):
        write(tmp_path / "dump", name, json.dumps({"text": name}) + "\n")
    cfg = SourceConfig(name="j", kind="jsonl", path=str(tmp_path / "dump"), include=["part/*.jsonl", "a.*"])
    assert [d.text for d in read(cfg)[0]] == ["a.jsonl", "part/c.jsonl"]


@pytest.mark.parametrize("pattern, message", [
    ("", "empty pattern"),
    ("  ", "empty pattern"),
    ("docs\\*.md", "backslash"),
    ("src/**.py", "whole segment"),
    ("a[bc", "without its ]"),
    ("../other/*.py", "'..'"),
    ("docs//a.md", "empty"),
    ("/", "names no file"),
    (3, "not a string"),
])
def test_bad_globs_are_config_errors_naming_the_key(tmp_path, pattern, message):
    from loom.config import load_config

    tree(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.sources\[r\]\.exclude: .*" + message):
        validate_source(SourceConfig(name="r", kind="code_repo", path=str(tmp_path), exclude=[pattern]))
    value = json.dumps(pattern)
    # the config's type check names a non-string first
    in_config = r"data\.sources\[0\]\.include: .*" + message if isinstance(pattern, str) else r"\[0\] must be str"
    with pytest.raises(ConfigError, match=in_config):
        load_config(None, [f'data.sources=[{{name="r", kind="code_repo", path="{tmp_path}", include=[{value}]}}]'])


def test_globs_need_a_directory_and_select_something(tmp_path):
    write(tmp_path, "one.jsonl", json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ConfigError, match="path .* is a file"):
        validate_source(SourceConfig(name="j", kind="jsonl", path=str(tmp_path / "one.jsonl"), exclude=["*.bak"]))
    with pytest.raises(ConfigError, match="stdlib source has none"):
        validate_source(SourceConfig(include=["*.py"]))
    with pytest.raises(ConfigError, match="that include and exclude let through"):
        validate_source(SourceConfig(name="j", kind="jsonl", path=str(tmp_path), include=["*.parquet"]))


def test_markup_of_records_comes_from_the_source(tmp_path):
    write(tmp_path, "readmes.jsonl", json.dumps({"text": "# Title\n\nSome `code`."}) + "\n")
    docs, _, _ = read(SourceConfig(name="j", kind="jsonl", path=str(tmp_path / "readmes.jsonl")))
    assert "markup" not in docs[0].meta  # as web text is extracted: datatrove's layout
    docs, _, _ = read(SourceConfig(name="j", kind="jsonl", path=str(tmp_path / "readmes.jsonl"), markup="markdown"))
    assert docs[0].meta["markup"] == "markdown"
    write(tmp_path / "notes", "a.md", "# A\n")
    docs, _, _ = read(SourceConfig(name="t", kind="text_dir", path=str(tmp_path / "notes"), markup="none"))
    assert "markup" not in docs[0].meta
    with pytest.raises(ConfigError, match=r"markup 'html' is not known"):
        validate_source(SourceConfig(name="t", kind="text_dir", path=str(tmp_path / "notes"), markup="html"))
