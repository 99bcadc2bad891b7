"""The embedded default corpus, built at run time from the running interpreter's standard library.

Nothing is downloaded, so it exists wherever Python does:
  - code domain (`code:python`): every `.py` file of the standard library, one document each;
  - text domain (`text`), English prose: the reference documentation bundled as
    `pydoc_data.topics` (one document per topic); the prose files of the library
    (`stdlib_prose_files`: its LICENSE.txt, IDLE's README, NEWS, HISTORY and help files,
    email's architecture notes, READMEs; one document each); and the docstrings of each module
    extracted with `ast` (one document per module: its module, class and function docstrings in
    source order), and its block comments (one document per module: `module_comments`).
    Docstrings (PEP 287), comments and the topics (reStructuredText rendered as text) carry
    `meta["markup"] = "rst"`, so the text rules judge their prose, not their code examples.

Document ids are paths relative to the standard library root, so they, and the split derived
from them, are the same on every machine. Files are parsed in a process pool, in a fixed order.
Files that are not valid Python 3 still count as code when they decode; their docstrings are
skipped. Files that are not valid UTF-8 (a few test fixtures) or cannot be read are left out:
counts of what was skipped are returned with the documents, and `on_unreadable` hears of each
such file with the reason, so a caller (`loom.data.sources`) can report it rather than only count it.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import re
import sysconfig
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

from loom.data.documents import Document
from loom.data.filetypes import is_prose_file, markup_of
from loom.util import end_with_parent

SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# Test directories hold fixtures (encodings, mail, numbers), not prose: only their READMEs are read.
TEST_DIRS = {"test", "tests", "idle_test"}
MIN_DOCSTRING_WORDS = 4  # one-word docstrings ("Return x.") carry no prose worth learning


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def stdlib_files(root: str | None = None, max_files: int = 0) -> list[str]:
    """Relative paths of the standard library's `.py` files, sorted."""
    root = root or stdlib_root()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    found.sort()
    return found[:max_files] if max_files > 0 else found


def stdlib_prose_files(root: str | None = None) -> list[str]:
    """Relative paths of the standard library's prose files (`loom.data.sources.is_prose_file`),
    sorted; in test directories only READMEs."""
    root = root or stdlib_root()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        in_tests = bool(TEST_DIRS & set(os.path.relpath(dirpath, root).split(os.sep)))
        for name in filenames:
            if is_prose_file(name) and (not in_tests or name.lower().startswith("readme")):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def read_prose_file(root: str, rel: str) -> tuple[list[Document], str | None]:
    """The document of one prose file of the standard library, and a message saying why it could
    not be read, or None."""
    try:
        with open(os.path.join(root, rel), "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        return [], f"cannot read: {e.strerror or e}"
    except UnicodeDecodeError as e:
        return [], f"not valid UTF-8 ({e.reason} at offset {e.start}); the file is left out"
    if not text.strip():
        return [], None
    meta = {"path": rel, "kind": "prose", "markup": markup_of(rel)}
    return [Document(f"prose/{rel}", text, "text", "stdlib", meta)], None


def module_docstrings(source: str) -> list[str]:
    """The module, class and function docstrings of `source`, in source order."""
    tree = ast.parse(source)
    nodes = [tree] + [
        n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    docs = []
    for node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc.split()) >= MIN_DOCSTRING_WORDS:
            docs.append(doc)
    return docs


def module_comments(source: str) -> list[str]:
    """The block comments of `source` (runs of lines holding only a `#` comment; PEP 8 asks
    them to be complete sentences), in source order, without their `#` and first space, each
    block's inner indentation and empty comment lines (its paragraph breaks) kept. Shebang,
    encoding and tool lines (`# noqa`, `# type:`...) are left out, and blocks shorter than
    `MIN_DOCSTRING_WORDS` words."""
    blocks, block, previous = [], [], -2
    for number, line in enumerate(source.split("\n")):
        stripped = line.lstrip()
        if not stripped.startswith("#") or stripped.startswith("#!") or _TOOL_COMMENT.match(stripped):
            continue
        if number != previous + 1 and block:
            blocks.append(block)
            block = []
        text = stripped[1:]
        block.append((text[1:] if text.startswith(" ") else text).rstrip())
        previous = number
    if block:
        blocks.append(block)
    return ["\n".join(b).strip("\n") for b in blocks if len(" ".join(b).split()) >= MIN_DOCSTRING_WORDS]


# comment lines that talk to a tool, not to a reader
_TOOL_COMMENT = re.compile(r"#\s*(?:-\*-|(?:vim?|noqa|type|pragma|fmt|pylint|isort|mypy|flake8)\b|coding[:=])")


def _read_one(args: tuple[str, str]) -> tuple[str, str | None, str | None, str | None, str | None, str | None]:
    """(relpath, code text or None, docstrings or None, comments or None, skip reason or None,
    message saying why the file could not be read, or None)."""
    root, rel = args
    try:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
    except OSError as e:
        return rel, None, None, None, "unreadable", f"cannot read: {e.strerror or e}"
    try:
        code = data.decode("utf-8")
    except UnicodeDecodeError as e:
        message = (
            f"not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}: {e.reason}); "
            "standard-library code is kept verbatim, so the file is left out"
        )
        return rel, None, None, None, "not_utf8", message
    comments = "\n\n".join(module_comments(code)) or None
    try:
        docstrings = module_docstrings(code)
    except (SyntaxError, ValueError, RecursionError):
        return rel, code, None, comments, "not_python3", None
    return rel, code, "\n\n".join(docstrings) if docstrings else None, comments, None, None


def _file_documents(rel: str, code: str | None, docstrings: str | None, comments: str | None) -> list[Document]:
    docs = []
    if code is not None and code.strip():
        docs.append(Document(f"code/{rel}", code, "code:python", "stdlib", {"path": rel}))
    # Docstrings are reST (PEP 287) and block comments quote code the same way: the text rules
    # judge the prose around their examples (loom.data.quality.markup_prose).
    for kind, text in (("docstrings", docstrings), ("comments", comments)):
        if text:
            docs.append(Document(f"{kind}/{rel}", text, "text", "stdlib", {"path": rel, "kind": kind, "markup": "rst"}))
    return docs


def pydoc_documents() -> list[Document]:
    """The bundled reference documentation, one document per topic, sorted by topic."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return [Document(f"pydoc/{name}", topics[name], "text", "stdlib", {"kind": "pydoc", "markup": "rst"})
            for name in sorted(topics)]


def read_stdlib_file(root: str, rel: str) -> tuple[list[Document], str | None]:
    """The documents of one standard-library file (its code, docstrings and comments), and a message
    saying why it could not be read, or None."""
    rel, code, docstrings, comments, _reason, message = _read_one((root, rel))
    return _file_documents(rel, code, docstrings, comments), message


def stdlib_documents(
    max_files: int = 0,
    workers: int = 0,
    skipped: dict | None = None,
    on_unreadable: Callable[[str, str], None] | None = None,
) -> Iterator[Document]:
    """Yields the corpus documents in a fixed order: pydoc topics, the prose files, then per
    `.py` file its code, its docstrings and its comments. `skipped`, when given, receives counts of skipped
    files by reason.
    `on_unreadable`, when given, is called as `on_unreadable(relpath, message)` for each file
    left out because it cannot be read or is not UTF-8, before the next document is yielded."""
    skipped = skipped if skipped is not None else {}
    yield from pydoc_documents()

    root = stdlib_root()
    for rel in stdlib_prose_files(root):
        docs, message = read_prose_file(root, rel)
        if message:
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            if on_unreadable is not None:
                on_unreadable(rel, message)
        yield from docs
    files = stdlib_files(root, max_files)
    workers = workers or os.cpu_count() or 1
    jobs = [(root, rel) for rel in files]
    if workers == 1 or len(jobs) < 64:
        results = map(_read_one, jobs)
        pool = None
    else:
        # fork where the platform has it: spawn would re-import the caller's main module,
        # which breaks scripts without a `__main__` guard. The workers only parse files, and end
        # with this process; a generator may be consumed from another thread than the one that
        # made the pool, so the workers watch their parent instead of asking for PDEATHSIG.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=end_with_parent,
                                   initargs=(os.getpid(), False))
        results = pool.map(_read_one, jobs, chunksize=16)
    try:
        for rel, code, docstrings, comments, reason, message in results:
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
            if message and on_unreadable is not None:
                on_unreadable(rel, message)
            yield from _file_documents(rel, code, docstrings, comments)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
