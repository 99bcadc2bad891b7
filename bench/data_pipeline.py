"""Acceptance benchmark of loom's data pipeline, side by side with datatrove on the same cores.

Two corpora, both built at run time from what is installed, so nothing is downloaded.

stdlib (>= 100,000 documents by default, `--docs`), from the running interpreter's standard library:
  - text: the reference topics of `pydoc_data.topics` and the docstrings of every module
    (`loom.data.stdlib_corpus`), cut into documents of consecutive paragraphs, each with a target
    length drawn at random (15 to 500 words, log-uniform) so that about a third fall under
    Gopher's 50-word floor;
  - code: every standard-library `.py` file cut at its `def` / `class` lines into function-sized
    chunks, long ones in pieces of at most N lines (N chosen so that the corpus reaches `--docs`);
  - planted near-duplicates: copies of two thirds of the text documents that pass loom's rules
    and of 2% of the code chunks that pass them (and have at least 40 word 5-grams).
third-party (`--third-party-files`, 6,000 by default), from the installed packages' own files in
site-packages (never the standard library):
  - code: a seeded sample of their `.py` files of at most 64 KB, one document per file;
  - text: each package's `*.dist-info/METADATA` description, its README / LICENSE / CHANGELOG /
    NOTICE files and `.md` / `.rst` files, and the docstrings of each sampled module (`ast`);
  - planted near-duplicates: copies of two thirds of the text documents and of a fifth of the
    code files that pass loom's rules. Real near duplicates are there too (vendored copies,
    licences, generated modules): precision counts them, recall only the planted pairs.
Each planted copy has its words substituted, inserted after or deleted at random positions
(whitespace kept, fixed seed) at a rate searched for so that its word 5-gram Jaccard similarity
with the original hits a target drawn uniformly from 0.55 to 0.85 (`plant_near`); the measured
span is reported. The (original, copy) pairs are the ground truth.

Each corpus is written as JSONL shards (`text/`, `code/`) and both pipelines read the same files:

  loom       the real clean stage, `loom.data.clean.clean_corpus`, at loom's DEFAULT settings
             for quality and deduplication (no `[dedup]` setting is passed), on two `jsonl`
             sources: per document normalize, C4 notice lines, quality rules (text: Gopher quality
             and repetition, C4 lorem ipsum, FineWeb lines; code: The Stack rules), content hash,
             MinHash signature and shingle set, in tasks on the local executor with 2 processes;
             then the merge: exact and near-duplicate clustering, every candidate verified by its
             exact Jaccard similarity. PII scrubbing is off (datatrove does none here).
  datatrove  LocalPipelineExecutor(tasks=2, workers=2, fork): JsonlReader -> C4QualityFilter ->
             GopherRepetitionFilter -> GopherQualityFilter -> FineWebQualityFilter -> JsonlWriter ->
             MinhashDedupSignature; then MinhashDedupBuckets (one task per band, 2 workers) and
             MinhashDedupCluster. Its filters see text documents only (code passes through, as
             datatrove has no code rules). The fourth MinHash stage, MinhashDedupFilter, re-reads
             the survivors to write a deduplicated copy; loom's clean stage has no counterpart (it
             records duplicate marks and drops duplicates when the corpus is read), so that stage
             is timed apart and left out of the ratio.
Both timings therefore cover: read, quality rules, writing the survivors (zstd JSONL), MinHash
signatures, LSH buckets and clustering, on 2 processes. Read the ratio: the machine is shared.

Datatrove's rules are configured to the parts loom implements, at the published thresholds:
C4 (Raffel et al. 2020) only the "lorem ipsum" page drop and the JavaScript / policy line
removal (no terminal-punctuation, sentence-count, line-length or curly-bracket rules); FineWeb
(Penedo et al. 2024) the three published line rules, with the duplicated-line character share at
the paper's 0.1 (datatrove's default is 0.01) and datatrove's extra newline-to-word ratio off.
C4 runs first in datatrove because loom removes notice lines before all its rules.

Near duplicates: loom runs at its defaults (`loom.data.dedup.DedupConfig`: word 5-grams, 40 bands
of 4 rows, candidates verified at an exact Jaccard of 0.6), read from its config and printed with
the table. Datatrove is given the same shingles and banding, `MinhashConfig(n_grams=5,
num_buckets=40, hashes_per_bucket=4)`, rather than its own 14 x 8, so that both draw candidates
from the same S-curve, 1 - (1 - J^4)^40; what differs is that datatrove merges every candidate
pair (as FineWeb), and loom checks each against the document its cluster keeps.

Word tokenizer (no download): datatrove 0.10.1 splits English into words with spaCy's rule-based
tokenizer (`spacy.blank("en")`, as its `assets/tokenizer_assignment.csv` assigns), not with NLTK,
so no `punkt` data is needed; that tokenizer's rules ship inside the `spacy` wheel. Datatrove
therefore runs here exactly as it ships, and `HF_HUB_OFFLINE` is set besides. loom cuts text
with its own spaCy-like splitter (`loom.data.quality.tokens`) and counts words the way datatrove
does (punctuation tokens in the letter and symbol ratios, not in word counts and lengths). Its
other rules differ from datatrove's in small, deliberate ways (stop words in any case, distinct;
blank lines are layout; n-gram repeats measured in characters spanned). Agreement is reported
twice, on the stdlib corpus: with datatrove as shipped, and with datatrove's rules given loom's
tokens (a `WordTokenizer` wrapping `tokens`, in this process, after the timed runs), which
compares the rules alone.

Metrics, for text and code separately where they are about duplicates:
  - throughput: documents per second of wall time over the work above (on the stdlib corpus,
    median of `--rounds` runs that take turns at going first; one run on the third-party one);
    the ratio is loom's speed over datatrove's;
  - agreement: share of the text documents (planted copies included) on which both keep, or
    both drop, after the quality rules; disagreements are broken down by the rule on each side;
  - near-duplicate recall: of the planted pairs whose copy has a word 5-gram Jaccard of at least
    0.6 with its original and whose two documents both passed that tool's quality rules, the
    share of which the tool's output holds at most one document (the other removed as a
    duplicate). How many ended in one cluster is shown too: fewer, for loom, where the original
    is itself a near duplicate of an earlier document (a licence text, a vendored module) and is
    removed in its favour, while its copy, compared with that earlier document as loom compares
    every removal with the document kept in its place, falls under 0.6 and stays: the output then
    holds no near-duplicate pair of the three. Pairs planted at 0.55-0.6 are below the definition
    of a near duplicate: how many of them each tool merged is shown apart;
  - near-duplicate precision: of the documents a tool removes as duplicates (leaving out exact
    copies of the document it keeps for them), the share whose kept document is either their
    planted partner (planted at 0.6 or more) or a true near duplicate: a Jaccard similarity of their lower-cased `\\w+`
    word 5-grams, computed here from the texts (not with loom's code), of at least 0.6. It is
    judged against the kept document because that is what stands in for the removed one in the
    output; a removal through a chain of weaker links counts as wrong. loom's check uses the
    same definition (on hashed shingles), so a loom precision under 1 would be a defect; what
    the number shows is what the check buys over merging every candidate.

    python bench/data_pipeline.py [--docs 100000] [--third-party-files 6000] [--quick] [--rounds 2]
                                  [--show-disagreements 5]

Needs `datatrove` (0.10.1), `spacy`, `orjson` and `xxhash<4` (datatrove's MinHash calls the 3.x API):
pip install datatrove spacy orjson "xxhash<4".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import platform
import random
import re
import shutil
import site
import statistics
import struct
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zstandard

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may reach the network

from datatrove.data import Document  # noqa: E402
from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature  # noqa: E402
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets  # noqa: E402
from datatrove.pipeline.filters import (  # noqa: E402
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402
from datatrove.utils.word_tokenizers import WordTokenizer  # noqa: E402

from loom.config import load_config  # noqa: E402
from loom.data.clean import clean_corpus, clean_dir  # noqa: E402
from loom.data.dedup import DedupConfig  # noqa: E402
from loom.data.normalize import normalize_text  # noqa: E402
from loom.data.quality import (  # noqa: E402
    CodeQualityConfig,
    TextQualityConfig,
    c4_remove_notice_lines,
    code_rejection,
    text_rejection,
)
from loom.data.quality import tokens as loom_tokens  # noqa: E402
from loom.data.stdlib_corpus import module_docstrings, stdlib_documents  # noqa: E402

SEED = 20240601
PARAGRAPH = re.compile(r"\n[ \t]*\n")
DEFINITION = re.compile(r"^\s*(?:async\s+def|def|class)\s|^\s*@")
CODE_LINE_CHOICES = (60, 40, 30, 25, 20, 15, 12, 10, 8, 6, 4)
TEXT_WORDS = (15, 500)  # per-document target length, drawn log-uniformly
PLANT_SPAN = (0.55, 0.85)  # word 5-gram Jaccard of a planted copy with its original, drawn uniformly
MIN_PLANT_SHINGLES = 40  # documents with fewer word 5-grams get no copy: their Jaccard moves in big steps
TEXT_PLANT_SHARE = 2 / 3  # of the text documents that pass loom's rules, this share gets a copy
STDLIB_CODE_PLANT_SHARE = 0.02  # of the stdlib code chunks that pass loom's rules
SITE_CODE_PLANT_SHARE = 0.2  # of the third-party code files that pass loom's rules
SITE_MAX_FILE_BYTES = 64 * 1024
SITE_DOC_NAMES = re.compile(r"^(readme|licen[cs]e|copying|notice|authors|changes|changelog|history)", re.I)
MAX_TEXT_SHARE = 0.3  # small corpora (--quick) keep at most this share of text documents
GT_WORD = re.compile(r"\w+")
GT_SHINGLE, GT_JACCARD = 5, 0.6  # the ground truth's near duplicate: word 5-gram Jaccard >= 0.6


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# The corpora
# ---------------------------------------------------------------------------------------------


@dataclass
class Pair:
    original: str
    copy: str
    jaccard: float  # word 5-gram Jaccard of the copy with the original, measured
    domain: str  # "text" or "code"


@dataclass
class Corpus:
    name: str
    text: list[tuple[str, str]]  # (id, text)
    code: list[tuple[str, str]]
    pairs: list[Pair]
    description: str
    texts: dict[str, str] = field(default_factory=dict)  # id -> text, all documents
    domain: dict[str, str] = field(default_factory=dict)  # id -> "text" or "code"

    def __post_init__(self):
        self.texts = dict(self.text) | dict(self.code)
        self.domain = {i: "text" for i, _ in self.text} | {i: "code" for i, _ in self.code}

    def __len__(self) -> int:
        return len(self.text) + len(self.code)

    @property
    def megabytes(self) -> float:
        return sum(len(t.encode("utf-8")) for t in self.texts.values()) / 1e6


def prose_pieces(sources: list, rng: random.Random) -> list[tuple[str, str]]:
    """Each text source cut into runs of whole paragraphs of a random target length."""
    lo, hi = math.log(TEXT_WORDS[0]), math.log(TEXT_WORDS[1])
    out = []
    for doc in sources:
        paragraphs = [p.strip("\n") for p in PARAGRAPH.split(doc.text) if p.strip()]
        i = part = 0
        while i < len(paragraphs):
            target = math.exp(rng.uniform(lo, hi))
            j, words = i, 0
            while j < len(paragraphs) and words < target:
                words += len(paragraphs[j].split())
                j += 1
            out.append((f"{doc.id}#{part}", "\n\n".join(paragraphs[i:j])))
            i, part = j, part + 1
    return out


def code_pieces(sources: list, max_lines: int) -> list[tuple[str, str]]:
    """Each file cut before every `def` / `class` (and its decorators), then into pieces of at
    most `max_lines` lines; pieces with nothing but blank lines are left out."""
    out = []
    for doc in sources:
        lines = doc.text.split("\n")
        starts = [0] + [k for k in range(1, len(lines))
                        if DEFINITION.match(lines[k]) and not DEFINITION.match(lines[k - 1])] + [len(lines)]
        part = 0
        for a, b in zip(starts, starts[1:]):
            for c in range(a, b, max_lines):
                piece = "\n".join(lines[c:min(b, c + max_lines)])
                if piece.strip():
                    out.append((f"{doc.id}#{part}", piece))
                    part += 1
    return out


def plant_copy(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    """`text` with round(rate x words) of its words each substituted by, or followed by, a word
    drawn from `vocabulary`, or deleted; positions drawn at random, whitespace kept."""
    parts = re.split(r"(\s+)", text)  # words at even positions, the whitespace between at odd ones
    words = [i for i in range(0, len(parts), 2) if parts[i]]
    for i in rng.sample(words, min(len(words), max(1, round(rate * len(words))))):
        op = rng.randrange(3)
        if op == 0:
            parts[i] = rng.choice(vocabulary)
        elif op == 1:
            parts[i] = f"{parts[i]} {rng.choice(vocabulary)}"
        else:
            parts[i] = ""
    return "".join(parts)


def plant_near(text: str, target: float, rng: random.Random, vocabulary: list[str]) -> tuple[str, float] | None:
    """A copy of `text` whose word 5-gram Jaccard with it is within PLANT_SPAN and as close to
    `target` as a few tries at adjusted edit rates get, with that Jaccard; None for documents
    too short to aim at. A copy keeps about (1 - rate)^5 of the shingles, so J ~ s / (2 - s)
    gives the first rate; a too similar copy raises it, a too different one lowers it."""
    original = gt_shingles(text)
    if len(original) < MIN_PLANT_SHINGLES:
        return None
    kept = 2 * target / (1 + target)
    rate = 1 - kept ** (1 / GT_SHINGLE)
    best = None
    for _ in range(12):
        copy = plant_copy(text, rate, rng, vocabulary)
        j = jaccard(original, gt_shingles(copy))
        if PLANT_SPAN[0] <= j <= PLANT_SPAN[1] and (best is None or abs(j - target) < abs(best[1] - target)):
            best = (copy, j)
        if best is not None and abs(best[1] - target) <= 0.01:
            break
        rate *= 1.15 if j > target else 1 / 1.15
    return best


def plant(pool: list[tuple[str, str]], share: float, rng: random.Random, vocabulary: list[str],
          domain: str) -> tuple[list[tuple[str, str]], list[Pair]]:
    """Planted copies of a random `share` of `pool`, each aimed at a Jaccard drawn from PLANT_SPAN."""
    copies, pairs = [], []
    for doc_id, text in rng.sample(pool, round(share * len(pool))):
        made = plant_near(text, rng.uniform(*PLANT_SPAN), rng, vocabulary)
        if made is None:
            continue
        copy_id = f"planted/{doc_id}"
        copies.append((copy_id, made[0]))
        pairs.append(Pair(doc_id, copy_id, made[1], domain))
    return copies, pairs


def loom_text_rejection(text: str, cfg: TextQualityConfig) -> str | None:
    """What the clean stage does to a text document before dedup: the rule that drops it, or None."""
    text = normalize_text(text)
    if not text.strip():
        return "normalize.empty"
    text, _ = c4_remove_notice_lines(text, cfg)
    return text_rejection(text, cfg)


def loom_code_passes(text: str, cfg: CodeQualityConfig) -> bool:
    return code_rejection(normalize_text(text), "python", cfg) is None


def identifiers(texts) -> list[str]:
    return [w for t in texts for w in t.split() if w.isidentifier()]


def build_stdlib_corpus(n_docs: int, seed: int) -> Corpus:
    rng = random.Random(seed)
    started = time.time()
    sources = list(stdlib_documents(workers=2))
    text_pool = prose_pieces([d for d in sources if d.domain == "text"], rng)
    if len(text_pool) > MAX_TEXT_SHARE * n_docs:
        keep = sorted(rng.sample(range(len(text_pool)), int(MAX_TEXT_SHARE * n_docs)))
        text_pool = [text_pool[i] for i in keep]
    text_cfg, code_cfg = TextQualityConfig(), CodeQualityConfig()
    passing = [(i, t) for i, t in text_pool if loom_text_rejection(t, text_cfg) is None]
    vocabulary = [w for _, t in text_pool for w in t.split() if w.isalpha()]
    text_copies, pairs = plant(passing, TEXT_PLANT_SHARE, rng, vocabulary, "text")
    text = text_pool + text_copies
    rng.shuffle(text)
    needed = n_docs - len(text)
    code_sources = [d for d in sources if d.domain != "text"]
    for max_lines in CODE_LINE_CHOICES:
        code = code_pieces(code_sources, max_lines)
        if len(code) >= needed:
            break
    else:
        raise SystemExit(f"the standard library gives only {len(code) + len(text):,} documents; ask for fewer")
    keep = sorted(rng.sample(range(len(code)), max(0, needed)))
    code = [code[i] for i in keep]
    code_copies, code_pairs = plant([d for d in code if loom_code_passes(d[1], code_cfg)], STDLIB_CODE_PLANT_SHARE,
                                    rng, identifiers(t for _, t in code), "code")
    code += code_copies
    rng.shuffle(code)
    corpus = Corpus("stdlib", text, code, pairs + code_pairs,
                    f"{len(text_pool):,} text pieces, {len(text_copies):,} planted text copies, "
                    f"{len(code) - len(code_copies):,} code chunks of <= {max_lines} lines, "
                    f"{len(code_copies):,} planted code copies")
    log(f"stdlib corpus: {len(corpus):,} documents ({corpus.description}), {corpus.megabytes:.1f} MB, "
        f"built in {time.time() - started:.0f}s")
    return corpus


def site_packages() -> list[Path]:
    """The site-packages directories of the running environment (third-party packages only)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    found = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                                          *site.getsitepackages())}
    return sorted(p for p in found if p.is_dir() and p.name in ("site-packages", "dist-packages") and p != stdlib)


def metadata_description(text: str) -> str:
    """The long description of a `METADATA` file: its body after the header block."""
    _, _, body = text.partition("\n\n")
    return body.strip()


def build_third_party_corpus(n_files: int, seed: int) -> Corpus:
    """Code files, package descriptions and documentation, and module docstrings of the installed
    third-party packages, with planted copies (module docstring)."""
    rng = random.Random(seed + 1)
    started = time.time()
    roots = site_packages()
    if not roots:
        raise SystemExit("no site-packages directory found for the third-party corpus")
    code_files, text = [], []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            rel_dir = Path(dirpath).relative_to(root)
            in_dist_info = bool(rel_dir.parts) and rel_dir.parts[0].endswith(".dist-info")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = f"{root.name}/{rel_dir / name}"
                suffix = path.suffix.lower()
                if in_dist_info and name == "METADATA":
                    if body := metadata_description(read_text(path) or ""):
                        text.append((f"site/text/{rel}", body))
                elif name.endswith(".py") and not in_dist_info and not name.startswith("__editable__"):
                    if path.stat().st_size <= SITE_MAX_FILE_BYTES:
                        code_files.append((f"site/code/{rel}", path))
                elif (suffix in (".md", ".rst") and not in_dist_info) or (
                        SITE_DOC_NAMES.match(name) and suffix in ("", ".txt", ".md", ".rst")):
                    if (body := read_text(path)) and body.strip():
                        text.append((f"site/text/{rel}", body))
    sample = sorted(rng.sample(range(len(code_files)), min(n_files, len(code_files))))
    code = []
    for i in sample:
        doc_id, path = code_files[i]
        source = read_text(path)
        if not source or not source.strip():
            continue
        code.append((doc_id, source))
        try:
            docstrings = module_docstrings(source)
        except (SyntaxError, ValueError, RecursionError):
            docstrings = []
        if docstrings:
            text.append((doc_id.replace("site/code/", "site/docstrings/", 1), "\n\n".join(docstrings)))
    text_cfg, code_cfg = TextQualityConfig(), CodeQualityConfig()
    passing = [(i, t) for i, t in text if loom_text_rejection(t, text_cfg) is None]
    text_copies, pairs = plant(passing, TEXT_PLANT_SHARE, rng, [w for _, t in text for w in t.split() if w.isalpha()],
                               "text")
    code_copies, code_pairs = plant([d for d in code if loom_code_passes(d[1], code_cfg)], SITE_CODE_PLANT_SHARE,
                                    rng, identifiers(t for _, t in code), "code")
    n_text, n_code = len(text), len(code)
    text, code = text + text_copies, code + code_copies
    rng.shuffle(text)
    rng.shuffle(code)
    corpus = Corpus("third-party", text, code, pairs + code_pairs,
                    f"{n_text:,} text documents ({len(passing):,} passing loom's rules), {len(text_copies):,} planted "
                    f"text copies, {n_code:,} .py files of {len(code_files):,} of at most "
                    f"{SITE_MAX_FILE_BYTES // 1024} KB, {len(code_copies):,} planted code copies; from "
                    + ", ".join(str(r) for r in roots))
    log(f"third-party corpus: {len(corpus):,} documents ({corpus.description}), {corpus.megabytes:.1f} MB, "
        f"built in {time.time() - started:.0f}s")
    return corpus


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_shards(corpus: Corpus, root: Path, shards: int) -> None:
    """`root/text/NN.jsonl` and `root/code/NN.jsonl`, documents dealt round-robin."""
    for domain, docs in (("text", corpus.text), ("code", corpus.code)):
        (root / domain).mkdir(parents=True)
        files = [open(root / domain / f"{k:02d}.jsonl", "w", encoding="utf-8") for k in range(shards)]
        for n, (doc_id, text) in enumerate(docs):
            files[n % shards].write(json.dumps({"id": doc_id, "text": text, "domain": domain}) + "\n")
        for f in files:
            f.close()


# ---------------------------------------------------------------------------------------------
# Running the two pipelines
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a pipeline did: seconds, the ids that passed its quality rules, its duplicate
    clusters (id -> cluster key, for documents in a cluster of two or more) and the ids it
    removes as duplicates."""

    seconds: float
    kept: set[str]
    cluster: dict[str, object]
    removed: set[str]
    extra_seconds: float = 0.0  # datatrove's filter stage, not in the ratio
    settings: str = ""


def zstd_lines(path: Path):
    with open(path, "rb") as raw:
        yield from io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")


def run_loom(corpus_dir: Path, work: Path, workers: int) -> Outcome:
    """loom's clean stage on the corpus, at its default quality and dedup settings."""
    sources = ", ".join(
        f'{{name="{d}", kind="jsonl", path="{corpus_dir / d}", id_field="id", domain="{dom}"}}'
        for d, dom in (("text", "text"), ("code", "code:python")))
    cfg = load_config(None, [
        f"data.sources=[{sources}]", f'data.dir="{work}"', 'data.executor="local"', f"data.workers={workers}",
        "data.task_files=1", "data.scrub_pii=false",
    ])
    started = time.perf_counter()
    manifest = clean_corpus(cfg)
    seconds = time.perf_counter() - started

    out = clean_dir(cfg)
    duplicate_of = np.load(out / "duplicate_of.npy")
    ids = []
    for index in range(manifest["tasks"]):
        for line in zstd_lines(out / "tasks" / f"{index:05d}.jsonl.zst"):
            ids.append(json.loads(line)["id"].split("/", 1)[1])  # "<source>/<id>"
    assert len(ids) == len(duplicate_of)

    def root(i: int) -> int:
        while duplicate_of[i] >= 0:
            i = int(duplicate_of[i])
        return i

    roots = [root(i) for i in range(len(ids))]
    sizes = Counter(roots)
    cluster = {doc_id: r for doc_id, r in zip(ids, roots) if sizes[r] > 1}
    removed = {ids[i] for i in np.flatnonzero(duplicate_of >= 0)}
    d = cfg.dedup
    settings = (f"loom defaults: {d.shingle_size}-word shingles, {d.bands} bands x {d.rows} rows, every candidate "
                f"verified at exact Jaccard >= {d.min_jaccard}")
    search = manifest["accounting"].get("near_search", {})
    log(f"loom merge: {manifest['accounting']['seconds']:.1f}s; near-duplicate search {search}")
    return Outcome(seconds, set(ids), cluster, removed, settings=settings)


def datatrove_minhash() -> MinhashConfig:
    """Datatrove's MinHash with loom's default shingles and banding (module docstring)."""
    d = DedupConfig()
    return MinhashConfig(n_grams=d.shingle_size, num_buckets=d.bands, hashes_per_bucket=d.rows, seed=1)


def run_datatrove(corpus_dir: Path, work: Path, workers: int, verbose: bool) -> Outcome:
    mh = datatrove_minhash()
    folders = {k: work / k for k in ("filtered", "signatures", "buckets", "remove_ids", "deduped", "logs")}

    def executor(pipeline, tasks, name):
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks), start_method="fork",
                                     logging_dir=str(folders["logs"] / name), skip_completed=False)

    stages = [
        ("quality + signatures", executor([
            JsonlReader(str(corpus_dir), glob_pattern="*/*.jsonl", compression=None),
            *(TextOnly(f) for f in datatrove_text_filters()),
            JsonlWriter(str(folders["filtered"]), compression="zstd"),
            MinhashDedupSignature(output_folder=str(folders["signatures"]), config=mh),
        ], workers, "1_signatures")),
        ("buckets", executor([
            MinhashDedupBuckets(input_folder=str(folders["signatures"]), output_folder=str(folders["buckets"]),
                                config=mh),
        ], mh.num_buckets, "2_buckets")),
        ("clusters", executor([
            MinhashDedupCluster(input_folder=str(folders["buckets"]), output_folder=str(folders["remove_ids"]),
                                config=mh, save_cluster_id=True),
        ], 1, "3_clusters")),
    ]
    filter_stage = executor([
        JsonlReader(str(folders["filtered"]), compression="zstd"),
        MinhashDedupFilter(input_folder=str(folders["remove_ids"])),
        JsonlWriter(str(folders["deduped"]), compression="zstd"),
    ], workers, "4_filter")

    work.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    with quiet(not verbose, work / "datatrove-console.log"):
        for name, stage in stages:
            started = time.perf_counter()
            stage.run()
            seconds += time.perf_counter() - started
            log(f"datatrove {name}: {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        filter_stage.run()
        extra = time.perf_counter() - started

    # Signature stage rank r numbered the documents it saw in the order its writer wrote them.
    kept, order = set(), {}
    for path in sorted(folders["filtered"].glob("*.jsonl.zst")):
        rank = int(path.name.split(".")[0])
        order[rank] = [json.loads(line)["id"] for line in zstd_lines(path)]
        kept.update(order[rank])
    cluster, removed = {}, set()
    for path in folders["remove_ids"].glob("*.clusters"):
        values = np.frombuffer(path.read_bytes(), dtype="<u4").reshape(-1, 2)
        rank = int(path.name.split(".")[0])
        for doc, cid in values:
            cluster[order[rank][doc]] = int(cid)
    for path in folders["remove_ids"].glob("*.remove"):
        rank = int(path.name.split(".")[0])
        removed.update(order[rank][d] for d in struct.unpack(f"<{path.stat().st_size // 4}I", path.read_bytes()))
    settings = (f"datatrove MinhashConfig(n_grams={mh.n_grams}, num_buckets={mh.num_buckets}, "
                f"hashes_per_bucket={mh.hashes_per_bucket}): every candidate merged")
    return Outcome(seconds, kept, cluster, removed, extra, settings)


class TextOnly(BaseFilter):
    """Applies one of datatrove's text filters to text documents only; code passes."""

    def __init__(self, inner: BaseFilter):
        super().__init__()
        self.inner = inner
        self.name = inner.name

    def filter(self, doc: Document):
        return self.inner.filter(doc) if doc.metadata.get("domain") == "text" else True


def datatrove_text_filters(words: WordTokenizer | None = None) -> list:
    """Datatrove's text rules, restricted to those loom implements (module docstring); `words`:
    a word tokenizer to use instead of datatrove's English one."""
    language = {} if words is None else {"language": words}
    return [
        C4QualityFilter(split_paragraph=True, remove_citations=False, filter_no_terminal_punct=False,
                        min_num_sentences=-1, min_words_per_line=-1, max_word_length=-1, filter_lorem_ipsum=True,
                        filter_javascript=True, filter_curly_bracket=False, filter_policy=True),
        GopherRepetitionFilter(**language),
        GopherQualityFilter(**language),
        FineWebQualityFilter(char_duplicates_ratio=0.1, new_line_ratio=math.inf, **language),
    ]


@contextlib.contextmanager
def quiet(enabled: bool, path: Path):
    """Sends this process' (and its children's) stderr to `path`: datatrove logs every task."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def datatrove_rejection(text: str, filters: list) -> str | None:
    """The first of datatrove's filters that drops `text`, as "filter: reason", or None."""
    doc = Document(text=text, id="x", metadata={})
    for f in filters:
        result = f.filter(doc)
        keep, reason = result if isinstance(result, tuple) else (result, None)
        if not keep:
            return f"{type(f).__name__.removesuffix('Filter')}: {reason}"
    return None


class LoomWords(WordTokenizer):
    """loom's splitter (`loom.data.quality.tokens`) as a datatrove word tokenizer: datatrove's
    rules then count the same tokens as loom's, so the rules alone are compared."""

    def __init__(self):
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return loom_tokens(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]  # not used by the rules compared here

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


@dataclass
class Agreement:
    name: str
    n: int
    agree: int
    by_rule: Counter  # (loom decision, datatrove decision) -> count, over disagreements
    examples: dict  # same key -> a few ids

    @property
    def percent(self) -> float:
        return 100 * self.agree / max(1, self.n)


def agreement(corpus: Corpus, loom: Outcome, dt: Outcome, show: int) -> list[Agreement]:
    """Keep/drop agreement on the text documents: with datatrove as it ran (its decisions read
    from its output, the rule behind each disagreement found again here), and with datatrove's
    rules run here on loom's words."""
    cfg = TextQualityConfig()
    shipped, same_words = datatrove_text_filters(), datatrove_text_filters(LoomWords())
    results = [Agreement("datatrove as shipped (spaCy words)", 0, 0, Counter(), defaultdict(list)),
               Agreement("datatrove's rules on loom's tokens", 0, 0, Counter(), defaultdict(list))]
    for doc_id, text in corpus.text:
        loom_keeps = doc_id in loom.kept
        loom_rule = None
        for result, filters, dt_keeps in ((results[0], shipped, doc_id in dt.kept), (results[1], same_words, None)):
            result.n += 1
            rule = None
            if dt_keeps is None:
                rule = datatrove_rejection(text, filters)
                dt_keeps = rule is None
            if loom_keeps == dt_keeps:
                result.agree += 1
                continue
            rule = rule or datatrove_rejection(text, filters)
            loom_rule = loom_rule or loom_text_rejection(text, cfg)
            key = (loom_rule or "kept", rule or "kept")
            assert (key[0] == "kept") == loom_keeps and (key[1] == "kept") == dt_keeps, (doc_id, key)
            result.by_rule[key] += 1
            if len(result.examples[key]) < show:
                result.examples[key].append(doc_id)
    return results


def gt_shingles(text: str, n: int = GT_SHINGLE) -> set:
    """The ground truth's shingles: lower-cased `\\w+` word n-grams, as tuples (not loom's hashes)."""
    words = GT_WORD.findall(text.lower())
    if len(words) <= n:
        return {tuple(words)} if words else set()
    return set(zip(*(words[i:] for i in range(n))))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class PairScores:
    evaluable: Counter  # domain -> planted pairs at J >= 0.6 whose two documents passed the quality rules
    found: Counter  # ... of which at most one document remains (the other removed as a duplicate)
    together: Counter  # ... of which the two documents ended in one cluster
    apart: Counter  # how pairs not in one cluster ended: "original removed, copy kept", ...
    weak: Counter  # domain -> evaluable planted pairs at J < 0.6 (below the definition)
    weak_merged: Counter  # ... that the tool put in one cluster all the same
    flagged: Counter  # domain -> documents removed as near duplicates (not identical to the kept one)
    justified: Counter  # domain -> ... of which the kept document is the planted partner or a true near duplicate
    false_examples: list  # (id, kept id, true Jaccard with the kept document, cluster size)
    missed: list  # (original, copy, planted Jaccard) of planted pairs at J >= 0.6 both kept
    weak_examples: list  # (original, copy, planted Jaccard, kept document, each one's true Jaccard with it)

    def recall(self, domain: str) -> float:
        return self.found[domain] / max(1, self.evaluable[domain])

    def precision(self, domain: str) -> float:
        return self.justified[domain] / max(1, self.flagged[domain])


def pair_scores(corpus: Corpus, out: Outcome) -> PairScores:
    """Recall over the planted pairs; precision over every removal, judged against the document
    that the tool keeps in the removed one's place (its cluster's survivor)."""
    scores = PairScores(Counter(), Counter(), Counter(), Counter(), Counter(), Counter(), Counter(), Counter(), [],
                        [], [])
    partner = {}  # planted near duplicates: the one at J >= 0.6 to each of its documents
    weak_together = []
    for p in corpus.pairs:
        if p.jaccard >= GT_JACCARD:
            partner[p.original], partner[p.copy] = p.copy, p.original
        if p.original not in out.kept or p.copy not in out.kept:
            continue
        c = out.cluster.get(p.original)
        together = c is not None and c == out.cluster.get(p.copy)
        both_remain = p.original not in out.removed and p.copy not in out.removed
        if p.jaccard >= GT_JACCARD:
            scores.evaluable[p.domain] += 1
            scores.found[p.domain] += not both_remain
            scores.together[p.domain] += together
            if not together:
                fate = [("kept", "removed")[doc in out.removed] for doc in (p.original, p.copy)]
                scores.apart[f"{p.domain}: original {fate[0]}, copy {fate[1]}"] += 1
            if both_remain and len(scores.missed) < 10:
                scores.missed.append((p.original, p.copy, round(p.jaccard, 3)))
        else:
            scores.weak[p.domain] += 1
            scores.weak_merged[p.domain] += together
            if together and len(weak_together) < 10:
                weak_together.append(p)
    members = defaultdict(list)
    for doc_id, c in out.cluster.items():
        members[c].append(doc_id)
    survivor = {}
    for c, ids in members.items():
        kept = [m for m in ids if m not in out.removed]
        assert len(kept) == 1, (c, len(ids), len(kept))
        survivor[c] = kept[0]

    shingles_of = functools.lru_cache(maxsize=4096)(lambda doc_id: gt_shingles(normalize_text(corpus.texts[doc_id])))
    for doc_id in sorted(out.removed):
        kept = survivor[out.cluster[doc_id]]
        if normalize_text(corpus.texts[doc_id]) == normalize_text(corpus.texts[kept]):
            continue  # an exact duplicate: not a near-duplicate decision
        domain = corpus.domain[doc_id]
        scores.flagged[domain] += 1
        if partner.get(doc_id) == kept:
            scores.justified[domain] += 1
            continue
        similarity = jaccard(shingles_of(doc_id), shingles_of(kept))
        if similarity >= GT_JACCARD:
            scores.justified[domain] += 1
        elif len(scores.false_examples) < 10:
            scores.false_examples.append((doc_id, kept, round(similarity, 3), len(members[out.cluster[doc_id]])))
    for p in weak_together:
        kept = survivor[out.cluster[p.original]]
        to_kept = (round(jaccard(shingles_of(d), shingles_of(kept)), 3) for d in (p.original, p.copy))
        scores.weak_examples.append((p.original, p.copy, round(p.jaccard, 3), kept, *to_kept))
    return scores


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    corpus: Corpus
    loom: Outcome
    datatrove: Outcome
    rounds: int
    scores: dict[str, PairScores]
    agreement: list[Agreement] = field(default_factory=list)


def run_corpus(corpus: Corpus, work: Path, args, rounds: int) -> Result:
    """Writes the corpus, runs both tools `rounds` times (taking turns at going first; medians
    of the times) and scores their duplicates."""
    times: dict[str, list[float]] = {"loom": [], "datatrove": [], "datatrove stage 4": []}
    write_shards(corpus, work / "corpus", args.shards)
    for r in range(rounds):
        for tool in ("loom", "datatrove")[:: 1 if r % 2 == 0 else -1]:
            if tool == "loom":
                log(f"{corpus.name}, round {r + 1}: loom clean stage (normalize, quality, hashes, sketches, dedup)")
                loom = run_loom(work / "corpus", work / f"loom-{r}", args.workers)
                times["loom"].append(loom.seconds)
                log(f"loom: {loom.seconds:.1f}s")
            else:
                log(f"{corpus.name}, round {r + 1}: datatrove filters and MinHash stages 1-3, then stage 4 (apart)")
                dt = run_datatrove(work / "corpus", work / f"datatrove-{r}", args.workers, args.verbose)
                times["datatrove"].append(dt.seconds)
                times["datatrove stage 4"].append(dt.extra_seconds)
                log(f"datatrove: {dt.seconds:.1f}s (+ {dt.extra_seconds:.1f}s for stage 4)")
    loom.seconds = statistics.median(times["loom"])  # the outcomes are the same in every round
    dt.seconds, dt.extra_seconds = statistics.median(times["datatrove"]), statistics.median(times["datatrove stage 4"])
    if rounds > 1:
        log("seconds per round: " + "; ".join(f"{k} " + ", ".join(f"{t:.1f}" for t in v) for k, v in times.items()))
    log(f"{corpus.name}: scoring")
    scores = {"loom": pair_scores(corpus, loom), "datatrove": pair_scores(corpus, dt)}
    return Result(corpus, loom, dt, rounds, scores)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=100_000, help="documents in the stdlib corpus (default 100000)")
    p.add_argument("--third-party-files", type=int, default=6_000,
                   help=".py files sampled from site-packages for the third-party corpus (default 6000)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 6,000 stdlib documents, 800 third-party files, one round")
    p.add_argument("--workers", type=int, default=2, help="processes for each tool (default 2)")
    p.add_argument("--shards", type=int, default=4, help="JSONL files per domain (default 4)")
    p.add_argument("--rounds", type=int, default=2,
                   help="timed runs of each tool on the stdlib corpus, taking turns at going first; medians are "
                        "shown (default 2; the third-party corpus runs once)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--show-disagreements", type=int, default=0, metavar="N",
                   help="print up to N example documents per kind of keep/drop disagreement")
    p.add_argument("--workdir", help="keep the corpora and all outputs here (default: a temporary directory)")
    p.add_argument("--verbose", action="store_true", help="let datatrove log to the console")
    args = p.parse_args()
    if args.quick:
        args.docs, args.third_party_files, args.rounds = 6_000, 800, 1

    started = time.time()
    log(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.workers} workers per tool")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="loom-bench-data-"))
    if args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    try:
        stdlib = run_corpus(build_stdlib_corpus(args.docs, args.seed), work / "stdlib", args, args.rounds)
        third = run_corpus(build_third_party_corpus(args.third_party_files, args.seed), work / "third-party", args, 1)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    log("stdlib: keep/drop agreement")
    stdlib.agreement = agreement(stdlib.corpus, stdlib.loom, stdlib.datatrove, args.show_disagreements)
    report([stdlib, third], args)
    log(f"done in {time.time() - started:.0f}s")


def report(results: list[Result], args) -> None:
    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def frac(num: int, den: int) -> str:
        return f"{num / max(1, den):.3f} ({num:,}/{den:,})"

    print()
    print(f"{os.cpu_count()} CPUs, {args.workers} processes per tool, python {platform.python_version()}.")
    print(f"Near duplicates: {results[0].loom.settings}; {results[0].datatrove.settings}. A removal is right when "
          f"the kept document is its planted partner (planted at J >= {GT_JACCARD}) or has a true word "
          f"{GT_SHINGLE}-gram Jaccard >= {GT_JACCARD} "
          "with it (computed by the benchmark from the texts).")
    for res in results:
        c, loom, dt = res.corpus, res.loom, res.datatrove
        ls, ds = res.scores["loom"], res.scores["datatrove"]
        n, mb = len(c), c.megabytes
        speedup = dt.seconds / loom.seconds
        planted = sorted(p.jaccard for p in c.pairs)
        span = {d: sorted(p.jaccard for p in c.pairs if p.domain == d) for d in ("text", "code")}

        def spans(d: str, span: dict = span) -> str:
            v = span[d]
            return f"{v[0]:.2f}-{v[-1]:.2f} (median {statistics.median(v):.2f}, n={len(v):,})" if v else "none"

        rows = [
            (f"wall time, read -> clusters (s){', median' if res.rounds > 1 else ''}", f"{loom.seconds:.1f}",
             f"{dt.seconds:.1f}", "", ""),
            ("throughput (docs/s)", f"{n / loom.seconds:,.0f}", f"{n / dt.seconds:,.0f}", "", ""),
            ("throughput (MB/s)", f"{mb / loom.seconds:.2f}", f"{mb / dt.seconds:.2f}", "", ""),
            ("speed ratio, loom / datatrove", f"{speedup:.2f}x", "", ">= 3x" if c.name == "stdlib" else "",
             met(speedup >= 3) if c.name == "stdlib" else ""),
            *((f"keep/drop agreement, {a.name}", f"{a.percent:.2f}%", "", ">= 98%", met(a.percent >= 98))
              for a in res.agreement),
            (f"text docs kept by the quality rules (of {len(c.text):,})", f"{sum(i in loom.kept for i, _ in c.text):,}",
             f"{sum(i in dt.kept for i, _ in c.text):,}", "", ""),
            ("planted text copies: word 5-gram Jaccard", spans("text"), "", "", ""),
            ("planted code copies: word 5-gram Jaccard", spans("code"), "", "", ""),
        ]
        for d in ("text", "code"):
            rows.append((f"near-dup recall, {d} (planted pairs at J >= {GT_JACCARD})",
                         frac(ls.found[d], ls.evaluable[d]), frac(ds.found[d], ds.evaluable[d]), ">= 0.95",
                         met(ls.recall(d) >= 0.95)))
        for d in ("text", "code"):
            rows.append((f"... {d} pairs in one cluster", frac(ls.together[d], ls.evaluable[d]),
                         frac(ds.together[d], ds.evaluable[d]), "", ""))
        for d in ("text", "code"):
            rows.append((f"near-dup precision, {d}", frac(ls.justified[d], ls.flagged[d]),
                         frac(ds.justified[d], ds.flagged[d]), ">= 0.95", met(ls.precision(d) >= 0.95)))
        rows += [
            (f"planted pairs at J < {GT_JACCARD} merged (not near duplicates)",
             f"{sum(ls.weak_merged.values()):,}/{sum(ls.weak.values()):,}",
             f"{sum(ds.weak_merged.values()):,}/{sum(ds.weak.values()):,}", "", ""),
            ("documents removed as duplicates", f"{len(loom.removed):,}", f"{len(dt.removed):,}", "", ""),
        ]
        print()
        print(f"### {c.name}: {n:,} documents, {mb:.1f} MB: {c.description}. Planted copies' Jaccard "
              f"{planted[0]:.2f}-{planted[-1]:.2f}. Not in the ratio: datatrove's 4th MinHash stage, "
              f"{dt.extra_seconds:.1f}s.")
        print()
        head = ("measure", "loom", "datatrove", "target", "")
        widths = [max(len(r[i]) for r in [*rows, head]) for i in range(5)]
        print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print("| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |")
        for a in res.agreement:
            print(f"\nKeep/drop disagreements with {a.name} ({a.n - a.agree:,}), as (loom, datatrove):")
            for (lr, dr), count in a.by_rule.most_common():
                print(f"  {count:6,}  loom {lr:36s} datatrove {dr}")
                for doc_id in a.examples.get((lr, dr), []):
                    text = c.texts[doc_id]
                    print(f"          --- {doc_id} ({len(text.split())} words)")
                    print("          " + text[:600].replace("\n", "\n          "))
        for name, sc in res.scores.items():
            if sc.apart:
                print(f"\n{c.name}, {name}: planted pairs at J >= {GT_JACCARD} not in one cluster: "
                      + ", ".join(f"{k} {v:,}" for k, v in sorted(sc.apart.items())))
            if sc.false_examples:
                print(f"\n{c.name}, {name}: some removals judged wrong "
                      "(id, kept document, true Jaccard, cluster size):")
                for example in sc.false_examples:
                    print(f"  {example}")
            if sc.missed:
                print(f"\n{c.name}, {name}: some planted pairs both kept (original, copy, planted Jaccard):")
                for example in sc.missed:
                    print(f"  {example}")
            if sc.weak_examples:
                print(f"\n{c.name}, {name}: some planted pairs at J < {GT_JACCARD} in one cluster (original, copy, "
                      "planted Jaccard, kept document, the original's and the copy's true Jaccard with it):")
                for example in sc.weak_examples:
                    print(f"  {example}")


if __name__ == "__main__":
    main()
