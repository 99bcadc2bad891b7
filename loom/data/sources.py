"""Sources: where documents come from, read as a stream.

Owns turning each `[[data.sources]]` table into a stream of `Document`s, in a fixed order, with
stable ids, and an `Unreadable` record (file, line or row, reason) for every input that could
not become one, so that nothing disappears without a trace. The kinds:

  - `stdlib`: the embedded corpus of `loom.data.stdlib_corpus` (its documents keep their own
    domains, `text` and `code:python`); standard-library files that are not UTF-8 come out as
    `Unreadable`. `max_files` limits its `.py` files; the pydoc topics and the prose files are
    always read.
  - `text_dir`: one document per file under `path` with a text extension (`TEXT_EXTENSIONS`) or
    no extension at all (README, LICENSE, Project Gutenberg dumps); domain `text`.
  - `code_repo`: one document per file under `path` whose language `language_of` knows; domain
    `code:<language>`. Its prose files (`is_prose_file`: `.md`, `.rst`, `.txt`, ... and README,
    LICENSE, CHANGELOG and the like) are documents of domain `text`, judged by the text rules.
    Version-control, vendored and build directories (`SKIP_DIRS`) are not read.
  - `jsonl`: one document per line of `path` (a file, or a directory searched recursively for
    `*.jsonl`, `*.jsonl.gz`, `*.jsonl.zst`); each line a JSON object whose `text_field` holds the
    text. Compressed files are decompressed as streams; one cut short yields the lines before the
    cut and one `Unreadable` at the line where it broke, then reading goes on with the next file.
  - `parquet`: one document per row of `path` (a file, or a directory searched recursively for
    `*.parquet`, as in a Hugging Face dataset's `data/train-00000-of-00002.parquet`), read batch by
    batch, only the text and id columns.

Ids are always `<source name>/...`, so they are unique across sources and the same on every
machine: the path relative to `path` (`text_dir`, `code_repo`, `stdlib`), the file and line or row
(`notes/a.jsonl:12`), or the record's own id when `id_field` is set (`<name>/<id>`, which must then
be unique within the source: not checked here, as that would hold every id in memory). `meta`
always has `path` (relative), and `line` (jsonl) or `row` (parquet); jsonl records' other small
scalar fields are copied to `meta` unless their names clash with those; `utf8_repairs` counts
invalid UTF-8 sequences replaced by U+FFFD. `Unreadable.file` is the path as configured, joined
with the relative path, so a user can open it.

Order: directory entries sorted by name, walked depth first (a directory's contents come where its
name sorts); lines and rows in file order. Memory: one file (capped by `max_file_bytes`), one line
or one batch of `PARQUET_BATCH_ROWS` rows at a time. Hidden files and directories are never read;
symlinked directories are not followed, and symlinked files only when they point inside `path`.
What was passed over is counted by reason in a `SourceStats`, when one is given to `read_source`.

Selecting files (`include`, `exclude`; text_dir, code_repo and directories of jsonl or parquet
files): lists of globs matched against a file's path relative to `path`, `/` between directories
(`src/pkg/mod.py`), case-sensitive. `*` matches within one name, never across a `/`; `?` one
character of a name; `[abc]`, `[a-z]`, `[!abc]` one character of (not of) a set; `**` as a whole
segment any number of directories, none included (`docs/**/*.md` matches `docs/a.md` and
`docs/x/y/a.md`). A pattern without a `/` matches a name at any depth (`*.min.js`, `tests`); one
with a `/` matches from the top of `path` (`src/*.py` matches `src/a.py`, not `src/sub/a.py` nor
`lib/src/a.py`; a leading `/` only anchors). A pattern that matches a directory covers everything
under it (`docs`, `docs/` and `docs/**` exclude the same files); a trailing `/` matches
directories only. A file is read when the kind reads its name, no exclude pattern covers it and,
if `include` is set, an include pattern does; an excluded directory is not entered. Passed over
by reason, in this order: the kind's own (hidden, unknown extension), "excluded by glob", "not
included". `fnmatch` is not used: its `*` crosses `/`, and `PurePath.full_match` needs 3.13.

Markup: text documents read from files carry `meta["markup"]`: `"markdown"` from `.md` /
`.markdown` files, `"rst"` from `.rst` files, `"plain"` from the others (text laid out by its
author, whose lines may be hard-wrapped); jsonl and parquet records carry none: their text is
taken to be laid out as web text is extracted, a paragraph per line, which is what the FineWeb and
Gopher rules were set on. A source's `markup` setting gives all its text documents one
(`"none"`: no markup, even for files). The text rules judge a document with a markup as rendered:
its prose rather than the code, tables and links around it, a paragraph per line
(`loom.data.quality.render_markup`).

Does not: normalize text beyond decoding it (`loom.data.normalize.decode_bytes`: UTF-8, BOM
dropped, small damage repaired, binary refused), judge quality, deduplicate or mix: the clean
stage of `loom.data.clean` does that to what this yields. Nothing is downloaded.

Why hand-written rather than taken from a library (datatrove's readers, HF `datasets`): each
reader is a thin loop over `os.scandir`, `gzip`, `zstandard` or `pyarrow.parquet`; what matters
here is the accounting (every input a document or an `Unreadable` with a reason a user can act
on), a deterministic order, stable ids and streaming, which a few hundred lines give without a
heavy dependency. `zstandard`'s `stream_reader` ends quietly on a truncated file, so zstd is read
with a decompression object whose end-of-frame flag tells a cut file from a whole one.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from loom.data.documents import Document
from loom.data.filetypes import MARKUPS, TEXT_EXTENSIONS, is_prose_file, language_of, markup_of
from loom.data.normalize import decode_bytes
from loom.errors import ConfigError


@dataclass
class SourceConfig:
    """One input of a dataset, a `[[data.sources]]` table of the config."""

    name: str = "stdlib"  # prefix of every document id from this source; unique within a dataset
    kind: str = "stdlib"  # stdlib | text_dir | code_repo | jsonl | parquet
    path: str = ""  # a directory, or a file / directory of files for jsonl and parquet
    text_field: str = "text"  # jsonl and parquet: the field holding the document's text
    id_field: str = ""  # jsonl and parquet: a field holding a stable id (default: file and line / row)
    domain: str = ""  # "text" or "code:LANG"; default: text, or code:<language from extension> for repos
    max_file_bytes: int = 1_000_000  # text_dir and code_repo: larger files are unreadable("too large")
    max_files: int = 0  # read only the first N files in path order (0: all); for quick trials
    # globs over paths relative to `path` (module docstring): read only files that match an
    # include pattern (empty: every file), and none that match an exclude pattern
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    # how text documents are laid out (module docstring): "" (files by their extension: .md
    # markdown, .rst rst, others plain; jsonl and parquet records none), or one of MARKUPS for all
    markup: str = ""

    def check(self, key: str) -> None:
        """Raises `ConfigError` naming the setting at fault (`key` is how the config names this
        table, e.g. data.sources[0]); the filesystem is `validate_source`'s."""
        if not self.name:
            raise ConfigError("data.sources: a source has an empty name; give it one (it prefixes the document ids)")
        if self.kind not in KINDS:
            raise ConfigError(f"{key}.kind {self.kind!r} is not known; use one of: {', '.join(KINDS)}")
        if self.domain and not (self.domain == "text" or re.fullmatch(r"code:[\w+#.-]+", self.domain)):
            raise ConfigError(
                f"{key}.domain {self.domain!r} is malformed; use 'text' or 'code:LANGUAGE' (e.g. code:python), "
                "or leave it empty for the default"
            )
        if self.max_file_bytes <= 0:
            raise ConfigError(f"{key}.max_file_bytes must be positive, not {self.max_file_bytes}")
        if self.max_files < 0:
            raise ConfigError(f"{key}.max_files must be zero (all files) or more, not {self.max_files}")
        if self.markup and self.markup not in MARKUPS:
            raise ConfigError(f"{key}.markup {self.markup!r} is not known; use one of {', '.join(MARKUPS)}, "
                              "or leave it empty to go by each file's extension")
        for globs in ("include", "exclude"):
            compile_globs(getattr(self, globs), f"{key}.{globs}")
        if self.kind == "stdlib":
            if self.include or self.exclude or self.markup:
                raise ConfigError(f"{key}: include, exclude and markup select and describe files under a path; "
                                  "a stdlib source has none: remove them")
            if self.path:
                raise ConfigError(
                    f"{key}.path is set, but a stdlib source reads the running interpreter's standard library; "
                    "remove path, or set kind to text_dir, code_repo, jsonl or parquet"
                )
            if self.domain:
                raise ConfigError(
                    f"{key}.domain is set, but a stdlib source's documents carry their own (text and code:python); "
                    "remove domain"
                )
            return
        if not self.path:
            raise ConfigError(f"{key}.path is required for a {self.kind} source")
        if self.kind in ("jsonl", "parquet") and not self.text_field:
            raise ConfigError(f"{key}.text_field is empty; name the field holding the text (e.g. text)")


@dataclass
class Unreadable:
    """An input that could not be turned into a document, with where and why."""

    source: str
    file: str
    line: int | None  # 1-based line (jsonl) or row (parquet) number; None for whole files
    error: str


@dataclass
class SourceStats:
    """What one `read_source` call did: filled as the stream is consumed."""

    files_seen: int = 0  # files selected for reading: each gave documents or unreadable records
    files_skipped: dict[str, int] = field(default_factory=dict)  # files passed over, by reason
    dirs_skipped: dict[str, int] = field(default_factory=dict)  # directories not entered, by reason
    documents: int = 0
    unreadable: int = 0


KINDS = ("stdlib", "text_dir", "code_repo", "jsonl", "parquet")
PATH_KINDS = ("text_dir", "code_repo", "jsonl", "parquet")

VCS_DIRS = frozenset({".git", ".hg", ".svn"})
SKIP_DIRS = VCS_DIRS | {
    "node_modules", "vendor", "third_party", ".venv", "venv", "__pycache__", "dist", "build", "site-packages",
}
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")

CHUNK_BYTES = 1 << 16  # bytes read from a file at a time
PARQUET_BATCH_ROWS = 1024  # rows decoded at a time: bounds memory when texts are long
MAX_META_CHARS = 256  # longer string fields of a jsonl record are not copied to meta
SNIFF_BYTES = 8192  # decode_bytes looks for NUL bytes this far

_SURROGATE = re.compile("[\ud800-\udfff]")  # lone surrogates: JSON can spell them, UTF-8 cannot


# ---------------------------------------------------------------------------------------------
# Globs
# ---------------------------------------------------------------------------------------------


class Glob(NamedTuple):
    """One include or exclude pattern (module docstring), compiled."""

    pattern: str
    regex: re.Pattern
    dirs_only: bool  # a trailing "/": matches directories, never a file

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Whether this path itself (not a parent of it) matches."""
        return (is_dir or not self.dirs_only) and self.regex.fullmatch(rel) is not None

    def covers(self, rel: str) -> bool:
        """Whether this file or one of the directories above it matches."""
        parts = rel.split("/")
        return any(self.matches("/".join(parts[:k]), k < len(parts)) for k in range(1, len(parts) + 1))


def glob_problem(pattern) -> str | None:
    """What is wrong with an include or exclude pattern, or None."""
    if not isinstance(pattern, str):
        return f"{pattern!r} is not a string"
    if not pattern.strip():
        return "an empty pattern matches nothing; remove it (every file is read when include is empty)"
    if pattern != pattern.strip():
        return f"{pattern!r} starts or ends with spaces; remove them"
    if "\\" in pattern:
        return f"{pattern!r} holds a backslash; separate directories with / (escapes are not supported)"
    body = pattern.strip("/")
    if not body:
        return f"{pattern!r} names no file or directory; use ** for everything"
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            return f"{pattern!r} has an empty, '.' or '..' segment; patterns are paths below path"
        if "**" in segment and segment != "**":
            return f"{pattern!r}: ** must be a whole segment (docs/**/*.md), use * within a name"
        if _translate_segment(segment) is None:
            return f"{pattern!r} has a [ without its ]"
    return None


def compile_globs(patterns: list[str], key: str) -> list[Glob]:
    """The compiled patterns; `ConfigError` naming `key` for a bad one."""
    if not isinstance(patterns, list):
        raise ConfigError(f"{key} must be a list of glob patterns, e.g. [\"docs/**/*.md\"]")
    globs = []
    for pattern in patterns:
        if problem := glob_problem(pattern):
            raise ConfigError(f"{key}: {problem}")
        anchored = "/" in pattern.rstrip("/")
        segments = pattern.strip("/").split("/")
        regex = "" if anchored or segments == ["**"] else "(?:.*/)?"
        for i, segment in enumerate(segments):
            last = i == len(segments) - 1
            if segment == "**":
                regex += ".*" if last else "(?:[^/]+/)*"
            else:
                regex += _translate_segment(segment) + ("" if last else "/")
        globs.append(Glob(pattern, re.compile(regex), pattern.endswith("/")))
    return globs


def _translate_segment(segment: str) -> str | None:
    """A regular expression for one `/`-free segment of a glob, or None when a `[` is not closed."""
    out, i = [], 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = segment.find("]", i + 2 if segment[i + 1:i + 2] in ("!", "]") else i + 1)
            if end < 0:
                return None
            inner = segment[i + 1:end]
            negate = inner.startswith("!")
            inner = inner[1:] if negate else inner
            out.append("[" + ("^/" if negate else "") + inner.replace("\\", "\\\\").replace("^", "\\^") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


class _Selection(NamedTuple):
    include: list[Glob]
    exclude: list[Glob]

    def file_reason(self, rel: str) -> str | None:
        if any(g.matches(rel, False) for g in self.exclude):  # a parent directory's match was pruned
            return "excluded by glob"
        if self.include and not any(g.covers(rel) for g in self.include):
            return "not included"
        return None

    def dir_excluded(self, rel: str) -> bool:
        return any(g.matches(rel, True) for g in self.exclude)


def _selection(cfg: SourceConfig) -> _Selection:
    key = f"data.sources[{cfg.name}]"
    return _Selection(compile_globs(cfg.include, f"{key}.include"), compile_globs(cfg.exclude, f"{key}.exclude"))


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def validate_source(cfg: SourceConfig) -> None:
    """Raises `ConfigError` naming the key at fault when `cfg` cannot be read: its settings
    (`SourceConfig.check`), then the filesystem: the path exists, is of the kind's shape and holds
    files the source would read. Lists directories but reads no file."""
    key = f"data.sources[{cfg.name}]"
    cfg.check(key)
    if cfg.kind == "stdlib":
        return
    selection = _selection(cfg)
    path = os.path.expanduser(cfg.path)
    if not os.path.exists(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise ConfigError(f"{key}.path: {cfg.path} does not exist{where}")
    if cfg.kind in ("text_dir", "code_repo") and not os.path.isdir(path):
        raise ConfigError(f"{key}.path: {cfg.path} is not a directory; a {cfg.kind} source reads every file under one")
    if not os.path.isdir(path) and (cfg.include or cfg.exclude):
        raise ConfigError(f"{key}: include and exclude select files under a directory, but path {cfg.path} is "
                          "a file; remove them, or point path at the directory")
    if os.path.isdir(path):
        select = _selector(cfg.kind)
        if next(_walk(path, cfg.kind, select, SourceStats(), cfg.name, selection), None) is None:
            wanted = {
                "text_dir": f"files with a text extension ({', '.join(sorted(TEXT_EXTENSIONS))}) or none",
                "code_repo": "files with a known code extension (see loom.data.sources.LANGUAGES) or prose files",
                "jsonl": "*.jsonl, *.jsonl.gz or *.jsonl.zst files",
                "parquet": "*.parquet files",
            }[cfg.kind]
            globs = " that include and exclude let through" if cfg.include or cfg.exclude else ""
            raise ConfigError(f"{key}.path: {cfg.path} holds no {wanted}{globs}; check the path, the kind"
                              + (" or the globs" if globs else ""))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_source(cfg: SourceConfig, stats: SourceStats | None = None) -> Iterator[Document | Unreadable]:
    """Streams the documents of one source, and an `Unreadable` for each input that is not one,
    in a fixed order. Validates `cfg` first (`ConfigError`, before anything is read). `stats`,
    when given, is filled as the stream is consumed. The same as `read_input` over `list_inputs`."""
    stats = stats if stats is not None else SourceStats()
    for entry in list_inputs(cfg, stats):
        items = [entry] if isinstance(entry, Unreadable) else read_input(cfg, entry)
        for item in items:
            if isinstance(item, Unreadable):
                stats.unreadable += 1
            else:
                stats.documents += 1
            yield item


@dataclass(frozen=True)
class InputFile:
    """One file of a source: the unit that the build splits its work into (see `list_inputs`)."""

    path: str  # the path to open
    rel: str  # relative to the source's path, with `/`; the document ids are made from it
    shown: str  # the configured path joined with `rel`: what error messages show a user
    language: str | None  # code_repo: the language its name says
    size: int  # bytes on disk (0 if unknown), to balance tasks
    mtime_ns: int  # when it last changed (0 if unknown): a changed input makes a new build


PYDOC_TOPICS = "<pydoc_data.topics>"  # the stdlib source's first input: the bundled reference topics


def list_inputs(cfg: SourceConfig, stats: SourceStats | None = None) -> Iterator[InputFile | Unreadable]:
    """The files of a source, in reading order, without reading them; an `Unreadable` for a
    directory that cannot be listed. Validates `cfg` first. Cheap: a directory walk."""
    validate_source(cfg)
    stats = stats if stats is not None else SourceStats()
    if cfg.kind == "stdlib":
        from loom.data.stdlib_corpus import stdlib_files, stdlib_prose_files, stdlib_root

        root = stdlib_root()
        yield InputFile(PYDOC_TOPICS, PYDOC_TOPICS, PYDOC_TOPICS, None, 0, 0)
        for rel in stdlib_prose_files(root):
            stats.files_seen += 1
            full = os.path.join(root, rel)
            yield InputFile(full, rel, full, None, *_size_and_mtime(full))
        for rel in stdlib_files(root, cfg.max_files):
            stats.files_seen += 1
            full = os.path.join(root, rel)
            yield InputFile(full, rel, full, "python", *_size_and_mtime(full))
        return
    path = os.path.expanduser(cfg.path)
    if os.path.isdir(path):
        entries = _walk(path, cfg.kind, _selector(cfg.kind), stats, cfg.name, _selection(cfg))
    else:  # jsonl or parquet: a single file, read whatever its name
        entries = iter([(path, os.path.basename(path), None)])
    seen = 0
    for entry in entries:
        if isinstance(entry, Unreadable):
            yield entry
            continue
        if cfg.max_files and seen >= cfg.max_files:
            return
        seen += 1
        stats.files_seen += 1
        full, rel, language = entry
        shown = os.path.join(cfg.path, rel) if os.path.isdir(path) else cfg.path
        yield InputFile(full, rel, shown, language, *_size_and_mtime(full))


def read_input(cfg: SourceConfig, item: InputFile) -> Iterator[Document | Unreadable]:
    """The documents of one input file of `list_inputs`, and an `Unreadable` for each part of it
    that is not one (a whole file, or a line or row)."""
    if cfg.kind == "stdlib":
        yield from _read_stdlib_input(cfg, item)
        return
    read_one = {
        "text_dir": _read_whole_file,
        "code_repo": _read_whole_file,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
    }[cfg.kind]
    yield from read_one(cfg, item.path, item.rel, item.shown, item.language)


def _size_and_mtime(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0  # reading it will say why
    return st.st_size, st.st_mtime_ns


def _read_stdlib_input(cfg: SourceConfig, item: InputFile) -> Iterator[Document | Unreadable]:
    from loom.data.stdlib_corpus import pydoc_documents, read_prose_file, read_stdlib_file, stdlib_root

    if item.rel == PYDOC_TOPICS:
        docs = pydoc_documents()
    else:
        read = read_stdlib_file if item.language == "python" else read_prose_file
        docs, error = read(stdlib_root(), item.rel)
        if error:
            yield Unreadable(cfg.name, item.shown, None, error)
    for doc in docs:
        yield Document(f"{cfg.name}/{doc.id}", doc.text, doc.domain, cfg.name, doc.meta)


# ---------------------------------------------------------------------------------------------
# Walking a directory
# ---------------------------------------------------------------------------------------------


def _selector(kind: str) -> Callable[[str], tuple[str | None, str | None]]:
    """For a file name: (language or None, None) when the kind reads it, else (None, skip reason)."""

    def select(name: str) -> tuple[str | None, str | None]:
        lower = name.lower()
        if name.startswith("."):
            return None, "hidden file"
        if kind == "code_repo":
            language = language_of(name)
            if language or is_prose_file(name):
                return language, None  # prose: no language, a text document
            return None, "unknown extension"
        if kind == "text_dir":
            ext = os.path.splitext(lower)[1]
            return (None, None) if ext in TEXT_EXTENSIONS or not ext else (None, "unknown extension")
        if kind == "jsonl":
            return (None, None) if lower.endswith(JSONL_SUFFIXES) else (None, "unknown extension")
        return (None, None) if lower.endswith(".parquet") else (None, "unknown extension")

    return select


def _dir_skip_reason(kind: str, name: str) -> str | None:
    if name in VCS_DIRS:
        return "version control dir"
    if kind == "code_repo" and name in SKIP_DIRS:
        return "vendored or build dir"
    if name.startswith("."):
        return "hidden dir"
    return None


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


def _walk(
    root: str, kind: str, select: Callable, stats: SourceStats, source: str, selection: _Selection
) -> Iterator[tuple[str, str, str | None] | Unreadable]:
    """(full path, relative path with `/`, language) of each file to read under `root`, entries
    sorted by name, depth first, as `selection`'s globs allow; an `Unreadable` for a directory
    that cannot be listed."""
    real_root = os.path.realpath(root)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)

    def walk(dirpath: str, prefix: str) -> Iterator:
        try:
            with os.scandir(dirpath) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield Unreadable(source, dirpath, None, f"cannot list directory: {e.strerror or e}")
            return
        for entry in entries:
            rel = prefix + entry.name
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows a link
                is_file = entry.is_file()
            except OSError as e:
                yield Unreadable(source, entry.path, None, f"cannot stat: {e.strerror or e}")
                continue
            if is_dir:
                if is_link:
                    _count(stats.dirs_skipped, "symlinked dir (not followed)")
                elif reason := _dir_skip_reason(kind, entry.name):
                    _count(stats.dirs_skipped, reason)
                elif selection.dir_excluded(rel):
                    _count(stats.dirs_skipped, "excluded by glob")
                else:
                    yield from walk(entry.path, rel + "/")
                continue
            language, reason = select(entry.name)
            reason = reason or selection.file_reason(rel)
            if reason:
                _count(stats.files_skipped, reason)
            elif is_link and not inside(entry.path):
                _count(stats.files_skipped, "symlink outside path")
            elif not is_file and (not is_link or os.path.exists(entry.path)):
                _count(stats.files_skipped, "not a regular file")  # a fifo or socket: open() could block
            else:  # a broken link inside path too: reading it reports why it cannot be read
                yield entry.path, rel, language

    yield from walk(root, "")


# ---------------------------------------------------------------------------------------------
# text_dir and code_repo: one document per file
# ---------------------------------------------------------------------------------------------


def _oserror(e: OSError) -> str:
    message = f"cannot read: {e.strerror or e}"
    if isinstance(e, PermissionError):
        message += "; make the file readable, or move it out of path"
    return message


def _not_text(data: bytes, invalid: int) -> str:
    if b"\0" in data[:SNIFF_BYTES]:
        return "binary file (NUL bytes), not text"
    return f"not text: {invalid} invalid UTF-8 sequences, too many to repair (is it in another encoding?)"


def _read_whole_file(cfg: SourceConfig, full: str, rel: str, shown: str, language: str | None) -> Iterator:
    limit = cfg.max_file_bytes
    too_large = "too large: {} bytes > max_file_bytes ({}); raise max_file_bytes to read it"
    try:
        size = os.stat(full).st_size
        if size > limit:
            yield Unreadable(cfg.name, shown, None, too_large.format(size, limit))
            return
        with open(full, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        yield Unreadable(cfg.name, shown, None, _oserror(e))
        return
    if len(data) > limit:  # grew since stat, or a special file that reports size 0
        yield Unreadable(cfg.name, shown, None, too_large.format(f"more than {limit}", limit))
        return
    if not data:
        yield Unreadable(cfg.name, shown, None, "empty file")
        return
    text, invalid = decode_bytes(data)
    if text is None:
        yield Unreadable(cfg.name, shown, None, _not_text(data, invalid))
        return
    if not text.strip():
        yield Unreadable(cfg.name, shown, None, "empty file (only whitespace)")
        return
    meta: dict = {"path": rel}
    if invalid:
        meta["utf8_repairs"] = invalid
    domain = cfg.domain or (f"code:{language}" if language else "text")
    if domain == "text" and (markup := _markup(cfg, rel)):
        meta["markup"] = markup
    yield Document(f"{cfg.name}/{rel}", text, domain, cfg.name, meta)


def _markup(cfg: SourceConfig, rel: str | None) -> str | None:
    """The markup of a text document: the source's, else its file's (`markup_of`); records: none."""
    if cfg.markup:
        return None if cfg.markup == "none" else cfg.markup
    return markup_of(rel) if rel is not None else None


# ---------------------------------------------------------------------------------------------
# jsonl: one document per line, plain, gzip or zstd
# ---------------------------------------------------------------------------------------------


class _BrokenStream(Exception):
    """A compressed stream that ends early or does not decompress."""


def _plain_chunks(raw) -> Iterator[bytes]:
    while chunk := raw.read(CHUNK_BYTES):
        yield chunk


def _gzip_chunks(raw) -> Iterator[bytes]:
    stream = gzip.GzipFile(fileobj=raw, mode="rb")
    while True:
        try:
            chunk = stream.read(CHUNK_BYTES)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise _BrokenStream(f"truncated or corrupt gzip stream: {e}") from e
        if not chunk:
            return
        yield chunk


def _zstd_chunks(raw) -> Iterator[bytes]:
    # Not `stream_reader`: it ends quietly where a truncated file does, giving a partial last line.
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    while data := raw.read(CHUNK_BYTES):
        while data:
            try:
                out = dobj.decompress(data)
            except zstandard.ZstdError as e:
                raise _BrokenStream(f"truncated or corrupt zstd stream: {e}") from e
            in_frame = True
            if out:
                yield out
            if dobj.eof:  # a frame ended; what follows it is the next frame
                data = dobj.unused_data
                dobj = dctx.decompressobj()
                in_frame = False
            else:
                data = b""
    if in_frame:
        raise _BrokenStream("truncated or corrupt zstd stream: the file ends inside a frame")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The `\\n`-separated lines of a byte stream, without the `\\n`; long lines are joined once."""
    pending: list[bytes] = []
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if pending:
                pending.append(chunk[start:end])
                yield b"".join(pending)
                pending = []
            else:
                yield chunk[start:end]
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield b"".join(pending)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _fields(obj: dict) -> str:
    names = sorted(obj)
    listed = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return listed or "none"


def _record_id(cfg: SourceConfig, obj: dict, where: str) -> tuple[str | None, str | None]:
    """(document id, None) or (None, error) for a record."""
    if not cfg.id_field:
        return f"{cfg.name}/{where}", None
    if cfg.id_field not in obj:
        return None, (
            f"no field {cfg.id_field!r} for the id (fields: {_fields(obj)}); "
            "set id_field, or leave it empty to use the file and line"
        )
    value = obj[cfg.id_field]
    if value == "":
        return None, f"id field {cfg.id_field!r} is empty"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"id field {cfg.id_field!r} is {_json_type(value)}, not a string or an integer"
    return _SURROGATE.sub("\ufffd", f"{cfg.name}/{value}"), None  # ids are hashed as UTF-8


def _jsonl_record(cfg: SourceConfig, line: bytes, number: int, rel: str, shown: str) -> Document | Unreadable | None:
    def bad(error: str) -> Unreadable:
        return Unreadable(cfg.name, shown, number, error)

    if not line.strip():
        return None  # blank lines (a trailing one above all) are not records
    text, invalid = decode_bytes(line)
    if text is None:
        return bad(_not_text(line, invalid))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return bad(f"malformed JSON: {e.msg} (column {e.colno}); each line must be one JSON object")
    except RecursionError:
        return bad("malformed JSON: nested too deeply")
    tf = cfg.text_field
    if not isinstance(obj, dict):
        return bad(f"not a JSON object but {_json_type(obj)}; each line must be an object with a {tf!r} field")
    if tf not in obj:
        return bad(f"no field {tf!r} (fields: {_fields(obj)}); set text_field")
    body = obj[tf]
    if not isinstance(body, str):
        return bad(f"field {tf!r} is {_json_type(body)}, not a string")
    if not body.strip():
        return bad(f"field {tf!r} is empty")
    doc_id, error = _record_id(cfg, obj, f"{rel}:{number}")
    if error:
        return bad(error)
    body, surrogates = _SURROGATE.subn("\ufffd", body)
    meta = {
        k: _SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v
        for k, v in obj.items()
        if k not in (tf, cfg.id_field, "path", "line", "utf8_repairs")
        and (v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= MAX_META_CHARS))
    }
    meta["path"] = rel
    meta["line"] = number
    if invalid + surrogates:
        meta["utf8_repairs"] = invalid + surrogates
    if not cfg.domain.startswith("code:") and (markup := _markup(cfg, None)):
        meta["markup"] = markup
    return Document(doc_id, body, cfg.domain or "text", cfg.name, meta)


def _read_jsonl(cfg: SourceConfig, full: str, rel: str, shown: str, _language: str | None) -> Iterator:
    lower = full.lower()
    chunks = _gzip_chunks if lower.endswith(".gz") else _zstd_chunks if lower.endswith(".zst") else _plain_chunks
    number = 0
    try:
        with open(full, "rb") as raw:
            for line in _lines(chunks(raw)):
                number += 1
                item = _jsonl_record(cfg, line, number, rel, shown)
                if item is not None:
                    yield item
    except _BrokenStream as e:
        yield Unreadable(cfg.name, shown, number + 1, f"{e}; the {number} lines before were read")
        return
    except OSError as e:
        yield Unreadable(cfg.name, shown, number + 1 if number else None, _oserror(e))
        return
    if number == 0:
        yield Unreadable(cfg.name, shown, None, "empty file")


# ---------------------------------------------------------------------------------------------
# parquet: one document per row, a batch at a time
# ---------------------------------------------------------------------------------------------


def _is_string(pa, t) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    is_view = getattr(pa.types, "is_string_view", lambda _: False)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or is_view(t)


def _read_parquet(cfg: SourceConfig, full: str, rel: str, shown: str, _language: str | None) -> Iterator:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def bad(error: str, row: int | None = None) -> Unreadable:
        return Unreadable(cfg.name, shown, row, error)

    try:
        pf = pq.ParquetFile(full)
    except (OSError, pa.ArrowException) as e:
        yield bad(f"not a readable parquet file: {e}")
        return
    with pf:
        schema = pf.schema_arrow
        names = schema.names
        tf, idf = cfg.text_field, cfg.id_field
        for column, key in ((tf, "text_field"), (idf, "id_field")):
            if column and column not in names:
                yield bad(f"no column {column!r} (columns: {', '.join(names) or 'none'}); set {key}")
                return
        text_type = schema.field(tf).type
        if not _is_string(pa, text_type):
            yield bad(f"column {tf!r} holds {text_type}, not strings; set text_field to a string column")
            return
        if idf:
            id_type = schema.field(idf).type
            if not (_is_string(pa, id_type) or pa.types.is_integer(id_type)):
                yield bad(f"column {idf!r} holds {id_type}, not strings or integers; set id_field to another column")
                return
        columns = [tf] + ([idf] if idf and idf != tf else [])
        markup = None if cfg.domain.startswith("code:") else _markup(cfg, None)
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns, use_threads=False):
                texts = batch.column(tf).to_pylist()
                ids = batch.column(idf).to_pylist() if idf else None
                for i, body in enumerate(texts):
                    row += 1
                    if body is None:
                        yield bad(f"column {tf!r} is null", row)
                        continue
                    if not body.strip():
                        yield bad(f"column {tf!r} is empty", row)
                        continue
                    if ids is None:
                        doc_id = f"{cfg.name}/{rel}:{row}"
                    elif ids[i] is None or ids[i] == "":
                        yield bad(f"id column {idf!r} is {'null' if ids[i] is None else 'empty'}", row)
                        continue
                    else:
                        doc_id = f"{cfg.name}/{ids[i]}"
                    meta = {"path": rel, "row": row} | ({"markup": markup} if markup else {})
                    yield Document(doc_id, body, cfg.domain or "text", cfg.name, meta)
        except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
            yield bad(f"corrupt parquet file after row {row}: {e}", row + 1)
            return
        if row == 0:
            yield bad("no rows")
