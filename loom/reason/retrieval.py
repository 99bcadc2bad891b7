"""BM25 retrieval over a folder of documents or a loom corpus, for retrieval nodes and `--rag`.

`build_index` cuts documents into passages of about `words` words at paragraph boundaries
and indexes them with `bm25s` (Lù 2024, a sparse-matrix BM25 that scores queries in
milliseconds); the index directory holds bm25s's arrays plus `passages.jsonl` (id, source,
text) and `index.json` (what was indexed, how). Passage ids are `<file or document id>#<n>`,
so a citation in a trace points back at its source. `search` returns the k best passages with
their scores; loaded indexes are kept per process.

Not here: embedding (dense) retrieval, and re-indexing on change: build again to refresh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from loom.errors import LoomError
from loom.util import atomic_write_text

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text", ".markdown")
PARAGRAPH = re.compile(r"\n\s*\n")
_LOADED: dict[str, tuple[object, list[dict]]] = {}
_LOCK = threading.Lock()


class RetrievalError(LoomError):
    """An index is missing, empty or unreadable."""


def passages(doc_id: str, text: str, source: str, words: int = 150) -> Iterator[dict]:
    """A document cut into passages of about `words` words, at paragraph boundaries when it can."""
    chunk: list[str] = []
    size = n = 0
    for para in PARAGRAPH.split(text):
        para = " ".join(para.split())
        if not para:
            continue
        para_words = para.split(" ")
        while len(para_words) > words:  # a very long paragraph is cut into pieces of its own
            if chunk:
                yield {"id": f"{doc_id}#{n}", "source": source, "text": " ".join(chunk)}
                n, chunk, size = n + 1, [], 0
            yield {"id": f"{doc_id}#{n}", "source": source, "text": " ".join(para_words[:words])}
            n, para_words = n + 1, para_words[words:]
        if size + len(para_words) > words and chunk:
            yield {"id": f"{doc_id}#{n}", "source": source, "text": " ".join(chunk)}
            n, chunk, size = n + 1, [], 0
        chunk.append(" ".join(para_words))
        size += len(para_words)
    if chunk:
        yield {"id": f"{doc_id}#{n}", "source": source, "text": " ".join(chunk)}


def folder_passages(folder: str | Path, words: int = 150) -> Iterator[dict]:
    """Passages of every text file (.txt, .md, .rst) under `folder`, in path order."""
    root = Path(folder)
    if not root.is_dir():
        raise RetrievalError(f"{root} is not a directory of documents")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        rel = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise RetrievalError(f"cannot read {path}: {e}") from None
        yield from passages(rel, text, str(root), words)


def corpus_passages(cfg, words: int = 150) -> Iterator[dict]:
    """Passages of the documents of a loom corpus (the clean stage of `loom data build`)."""
    from loom.data import clean_documents

    for doc in clean_documents(cfg):
        yield from passages(doc.id, doc.text, doc.source, words)


def build_index(out_dir: str | Path, items: Iterable[dict], description: dict | None = None) -> dict:
    """Indexes the passages into `out_dir` (replacing it only once the new index is complete)."""
    import bm25s

    out = Path(out_dir)
    corpus = list(items)
    if not corpus:
        raise RetrievalError("nothing to index: no passages (an empty folder, or no .txt / .md / .rst files?)")
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([p["text"] for p in corpus], stopwords="en", show_progress=False),
                    show_progress=False)
    retriever.save(str(tmp), show_progress=False)
    with open(tmp / "passages.jsonl", "w", encoding="utf-8") as f:
        for p in corpus:
            f.write(json.dumps(p) + "\n")
    info = {"passages": len(corpus), "sources": sorted({p["source"] for p in corpus})[:20], **(description or {})}
    atomic_write_text(tmp / "index.json", json.dumps(info, indent=2) + "\n")
    old = out.with_name(out.name + f".old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    with _LOCK:
        _LOADED.pop(str(out.resolve()), None)
    return info


def _load(index_dir: Path):
    key = str(index_dir.resolve())
    with _LOCK:
        if key not in _LOADED:
            import bm25s

            if not (index_dir / "passages.jsonl").is_file():
                raise RetrievalError(f"{index_dir} is not a loom index; build one with `loom index build`")
            retriever = bm25s.BM25.load(str(index_dir), show_progress=False)
            with open(index_dir / "passages.jsonl", encoding="utf-8") as f:
                corpus = [json.loads(line) for line in f]
            _LOADED[key] = (retriever, corpus)
        return _LOADED[key]


def search(index_dir: str | Path, query: str, k: int = 3) -> list[dict]:
    """The k passages that best match `query`: [{"id", "text", "source", "score"}], best first;
    fewer when fewer passages share a word with the query."""
    import bm25s

    retriever, corpus = _load(Path(index_dir))
    tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
    if not tokens.vocab:
        return []
    docs, scores = retriever.retrieve(tokens, k=min(k, len(corpus)), show_progress=False)
    return [{**corpus[int(i)], "score": round(float(s), 4)} for i, s in zip(docs[0], scores[0]) if s > 0]
