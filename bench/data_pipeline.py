"""Acceptance benchmark of loom's data pipeline, side by side with datatrove on the same cores.

The corpus (>= 100,000 documents by default) is built at run time from the running interpreter's
standard library, so nothing is downloaded:
  - text: the reference topics of `pydoc_data.topics` and the docstrings of every module
    (`loom.data.stdlib_corpus`), cut into documents of consecutive paragraphs, each with a target
    length drawn at random (15 to 500 words, log-uniform) so that about a third fall under
    Gopher's 50-word floor;
  - code: every standard-library `.py` file cut at its `def` / `class` lines into function-sized
    chunks, long ones in pieces of at most N lines (N chosen so that the corpus reaches `--docs`);
  - planted near-duplicates: copies of two thirds of the text documents that pass loom's rules,
    with 5-10% of their words substituted, inserted or deleted at random positions (fixed seed).
    The (original, copy) pairs are the ground truth.
It is written as JSONL shards (`text/`, `code/`) and both pipelines read the same files:

  loom       the real clean stage, `loom.data.build.clean_corpus`, on two `jsonl` sources: per
             document normalize, C4 notice lines, quality rules (text: Gopher quality and
             repetition, C4 lorem ipsum, FineWeb lines; code: The Stack rules), content hash and
             MinHash signature, in tasks on the local executor with 2 processes; then the merge:
             exact and near-duplicate clustering. PII scrubbing is off (datatrove does none here).
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

Near duplicates: copies with 5-10% of their words edited keep a word 5-gram Jaccard similarity of
only 0.35-0.77 with their original (median 0.54), mostly below what the default 14 bands x 8 rows
(FineWeb's) catches, about 0.75. Both tools therefore run with 3-word shingles (planted pairs:
0.55-0.83, median 0.69) and 20 bands of 3 rows, 60 hashes: a pair becomes a candidate with
probability 1 - (1 - J^3)^20, one half at J = 0.32, 0.97 at J = 0.55. In datatrove that is
`MinhashConfig(n_grams=3, num_buckets=20, hashes_per_bucket=3)`. loom also checks each candidate
against the document its cluster keeps (`min_jaccard` 0.5, estimated from the signatures);
datatrove has no such check.

Word tokenizer (no download): datatrove 0.10.1 splits English into words with spaCy's rule-based
tokenizer (`spacy.blank("en")`, as its `assets/tokenizer_assignment.csv` assigns), not with NLTK,
so no `punkt` data is needed; that tokenizer's rules ship inside the `spacy` wheel. Datatrove
therefore runs here exactly as it ships, and `HF_HUB_OFFLINE` is set besides. loom cuts text
with its own spaCy-like splitter (`loom.data.quality.tokens`) and counts words the way datatrove
does (punctuation tokens in the letter and symbol ratios, not in word counts and lengths). Its
other rules differ from datatrove's in small, deliberate ways (stop words in any case, distinct;
blank lines are layout; n-gram repeats measured in characters spanned). Agreement is reported
twice: with datatrove as shipped, and with datatrove's rules given loom's tokens (a
`WordTokenizer` wrapping `tokens`, in this process, after the timed runs), which compares the
rules alone.

Metrics:
  - throughput: documents per second of wall time over the work above (median of `--rounds`
    runs that take turns at going first); the ratio is loom's speed over datatrove's;
  - agreement: share of the text documents (planted copies included) on which both keep, or
    both drop, after the quality rules; disagreements are broken down by the rule on each side;
  - near-duplicate recall: planted pairs whose two documents end in one duplicate cluster, over
    the planted pairs whose two documents both passed that tool's quality rules;
  - near-duplicate precision: of the documents a tool removes as duplicates (leaving out exact
    copies of the document it keeps for them), the share whose kept document is either their
    planted partner or a true near duplicate: a Jaccard similarity of their lower-cased `\\w+`
    word 3-grams, computed exactly from the texts, of at least `--min-jaccard`. It is judged
    against the kept document because that is what stands in for the removed one in the output;
    a removal through a chain of weaker links counts as wrong. The target is on text documents,
    the domain of the planted pairs. For code chunks the number is shown too, but words are a
    rough ground truth there (loom's code shingles are code tokens, punctuation included), and
    3-grams at 0.5 are a setting for edited prose, far looser than code deduplication needs:
    similar test methods abound in the standard library.

    python bench/data_pipeline.py [--docs 100000] [--quick] [--rounds 2] [--show-disagreements 5]

Needs `datatrove` (0.10.1), `spacy`, `orjson` and `xxhash<4` (datatrove's MinHash calls the 3.x API):
pip install datatrove spacy orjson "xxhash<4".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import struct
import sys
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
from loom.data.build import clean_corpus, clean_dir  # noqa: E402
from loom.data.normalize import normalize_text  # noqa: E402
from loom.data.quality import TextQualityConfig, c4_remove_notice_lines, text_rejection  # noqa: E402
from loom.data.quality import tokens as loom_tokens  # noqa: E402
from loom.data.stdlib_corpus import stdlib_documents  # noqa: E402

SEED = 20240601
PARAGRAPH = re.compile(r"\n[ \t]*\n")
DEFINITION = re.compile(r"^\s*(?:async\s+def|def|class)\s|^\s*@")
CODE_LINE_CHOICES = (60, 40, 30, 25, 20, 15, 12, 10, 8, 6, 4)
TEXT_WORDS = (15, 500)  # per-document target length, drawn log-uniformly
EDIT_RATE = (0.05, 0.10)  # share of a planted copy's words edited
PLANT_SHARE = 2 / 3  # of the text documents that pass loom's rules, this share gets a copy
MAX_TEXT_SHARE = 0.3  # small corpora (--quick) keep at most this share of text documents
GT_WORD = re.compile(r"\w+")


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    text: list[tuple[str, str]]  # (id, text)
    code: list[tuple[str, str]]
    pairs: list[tuple[str, str, float]]  # (original id, copy id, edit rate)
    code_lines: int = 0
    texts: dict[str, str] = field(default_factory=dict)  # id -> text, all documents

    def __post_init__(self):
        self.texts = dict(self.text) | dict(self.code)

    def __len__(self) -> int:
        return len(self.text) + len(self.code)


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
    for i in rng.sample(words, max(1, round(rate * len(words)))):
        op = rng.randrange(3)
        if op == 0:
            parts[i] = rng.choice(vocabulary)
        elif op == 1:
            parts[i] = f"{parts[i]} {rng.choice(vocabulary)}"
        else:
            parts[i] = ""
    return "".join(parts)


def loom_text_rejection(text: str, cfg: TextQualityConfig) -> str | None:
    """What the clean stage does to a text document before dedup: the rule that drops it, or None."""
    text = normalize_text(text)
    if not text.strip():
        return "normalize.empty"
    text, _ = c4_remove_notice_lines(text, cfg)
    return text_rejection(text, cfg)


def build_corpus(n_docs: int, seed: int) -> Corpus:
    rng = random.Random(seed)
    started = time.time()
    sources = list(stdlib_documents(workers=2))
    text_pool = prose_pieces([d for d in sources if d.domain == "text"], rng)
    if len(text_pool) > MAX_TEXT_SHARE * n_docs:
        keep = sorted(rng.sample(range(len(text_pool)), int(MAX_TEXT_SHARE * n_docs)))
        text_pool = [text_pool[i] for i in keep]
    cfg = TextQualityConfig()
    passing = [(i, t) for i, t in text_pool if loom_text_rejection(t, cfg) is None]
    vocabulary = [w for _, t in text_pool for w in t.split() if w.isalpha()]
    pairs, copies = [], []
    for doc_id, text in rng.sample(passing, round(PLANT_SHARE * len(passing))):
        rate = rng.uniform(*EDIT_RATE)
        copy_id = f"planted/{doc_id}"
        copies.append((copy_id, plant_copy(text, rate, rng, vocabulary)))
        pairs.append((doc_id, copy_id, rate))
    text = text_pool + copies
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
    corpus = Corpus(text, [code[i] for i in keep], pairs, max_lines)
    log(f"corpus: {len(corpus):,} documents ({len(text_pool):,} text, {len(pairs):,} planted copies, "
        f"{len(corpus.code):,} code chunks of at most {max_lines} lines), "
        f"{sum(len(t) for t in corpus.texts.values()) / 1e6:.1f} MB, built in {time.time() - started:.0f}s")
    return corpus


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
class Dedup:
    shingle: int
    bands: int
    rows: int
    min_jaccard: float


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


def zstd_lines(path: Path):
    with open(path, "rb") as raw:
        yield from io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")


def run_loom(corpus_dir: Path, work: Path, workers: int, dedup: Dedup) -> Outcome:
    sources = ", ".join(
        f'{{name="{d}", kind="jsonl", path="{corpus_dir / d}", id_field="id", domain="{dom}"}}'
        for d, dom in (("text", "text"), ("code", "code:python")))
    cfg = load_config(None, [
        f"data.sources=[{sources}]", f'data.dir="{work}"', 'data.executor="local"', f"data.workers={workers}",
        "data.task_files=1", "data.scrub_pii=false", f"dedup.shingle_size={dedup.shingle}",
        f"dedup.bands={dedup.bands}", f"dedup.rows={dedup.rows}", f"dedup.min_jaccard={dedup.min_jaccard}",
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
    return Outcome(seconds, set(ids), cluster, removed)


def run_datatrove(corpus_dir: Path, work: Path, workers: int, dedup: Dedup, verbose: bool) -> Outcome:
    mh = MinhashConfig(n_grams=dedup.shingle, num_buckets=dedup.bands, hashes_per_bucket=dedup.rows, seed=1)
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
        ], dedup.bands, "2_buckets")),
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
    return Outcome(seconds, kept, cluster, removed, extra)


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


def gt_shingles(text: str, n: int) -> set:
    words = GT_WORD.findall(text.lower())
    if len(words) <= n:
        return {tuple(words)}
    return set(zip(*(words[i:] for i in range(n))))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class PairScores:
    evaluable: int  # planted pairs whose two documents passed the tool's quality rules
    found: int  # ... and ended in one cluster
    flagged: Counter  # domain -> documents removed as near duplicates (not identical to the kept one)
    justified: Counter  # domain -> ... of which the kept document is a true near duplicate
    false_examples: list  # (id, true Jaccard with the kept document, cluster size)

    @property
    def recall(self) -> float:
        return self.found / max(1, self.evaluable)

    def precision(self, domain: str | None = None) -> float:
        if domain is None:
            return sum(self.justified.values()) / max(1, sum(self.flagged.values()))
        return self.justified[domain] / max(1, self.flagged[domain])


def pair_scores(corpus: Corpus, out: Outcome, n: int, min_jaccard: float) -> PairScores:
    """Recall over the planted pairs; precision over every removal, judged against the document
    that the tool keeps in the removed one's place (its cluster's survivor)."""
    evaluable = found = 0
    partner = {}
    for original, copy, _ in corpus.pairs:
        partner[original], partner[copy] = copy, original
        if original in out.kept and copy in out.kept:
            evaluable += 1
            c = out.cluster.get(original)
            found += c is not None and c == out.cluster.get(copy)
    members = defaultdict(list)
    for doc_id, c in out.cluster.items():
        members[c].append(doc_id)
    survivor = {}
    for c, ids in members.items():
        kept = [m for m in ids if m not in out.removed]
        assert len(kept) == 1, (c, len(ids), len(kept))
        survivor[c] = kept[0]

    flagged, justified, false_examples = Counter(), Counter(), []
    for doc_id in out.removed:
        kept = survivor[out.cluster[doc_id]]
        text, kept_text = normalize_text(corpus.texts[doc_id]), normalize_text(corpus.texts[kept])
        if text == kept_text:
            continue  # an exact duplicate: not a near-duplicate decision
        domain = "code" if doc_id.startswith("code/") else "text"
        flagged[domain] += 1
        if partner.get(doc_id) == kept:
            justified[domain] += 1
            continue
        similarity = jaccard(gt_shingles(text, n), gt_shingles(kept_text, n))
        if similarity >= min_jaccard:
            justified[domain] += 1
        elif len(false_examples) < 5 or (domain == "text" and len(false_examples) < 10):
            false_examples.append((doc_id, kept, round(similarity, 3), len(members[out.cluster[doc_id]])))
    return PairScores(evaluable, found, flagged, justified, false_examples)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=100_000, help="documents in the corpus (default 100000)")
    p.add_argument("--quick", action="store_true", help="a smoke run on 6,000 documents")
    p.add_argument("--workers", type=int, default=2, help="processes for each tool (default 2)")
    p.add_argument("--shards", type=int, default=4, help="JSONL files per domain (default 4)")
    p.add_argument("--shingle", type=int, default=3, help="words (code: tokens) per shingle, both tools")
    p.add_argument("--bands", type=int, default=20, help="LSH bands (datatrove: buckets), both tools")
    p.add_argument("--rows", type=int, default=3, help="MinHash values per band, both tools")
    p.add_argument("--min-jaccard", type=float, default=0.5,
                   help="loom's check of candidate pairs, and the precision threshold for both tools")
    p.add_argument("--rounds", type=int, default=2,
                   help="timed runs of each tool, taking turns at going first; medians are shown (default 2)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--show-disagreements", type=int, default=0, metavar="N",
                   help="print up to N example documents per kind of keep/drop disagreement")
    p.add_argument("--workdir", help="keep the corpus and both outputs here (default: a temporary directory)")
    p.add_argument("--verbose", action="store_true", help="let datatrove log to the console")
    args = p.parse_args()
    if args.quick:
        args.docs = 6_000
    dedup = Dedup(args.shingle, args.bands, args.rows, args.min_jaccard)

    log(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.workers} workers per tool")
    corpus = build_corpus(args.docs, args.seed)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="loom-bench-data-"))
    if args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    times: dict[str, list[float]] = {"loom": [], "datatrove": [], "datatrove stage 4": []}
    try:
        write_shards(corpus, work / "corpus", args.shards)
        for r in range(args.rounds):  # rounds alternate which tool goes first
            for tool in ("loom", "datatrove")[:: 1 if r % 2 == 0 else -1]:
                if tool == "loom":
                    log(f"round {r + 1}: loom clean stage (normalize, quality, hashes, signatures, dedup)")
                    loom = run_loom(work / "corpus", work / f"loom-{r}", args.workers, dedup)
                    times["loom"].append(loom.seconds)
                    log(f"loom: {loom.seconds:.1f}s")
                else:
                    log(f"round {r + 1}: datatrove filters and MinHash stages 1-3, then stage 4 (timed apart)")
                    dt = run_datatrove(work / "corpus", work / f"datatrove-{r}", args.workers, dedup, args.verbose)
                    times["datatrove"].append(dt.seconds)
                    times["datatrove stage 4"].append(dt.extra_seconds)
                    log(f"datatrove: {dt.seconds:.1f}s (+ {dt.extra_seconds:.1f}s for stage 4)")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    loom.seconds = statistics.median(times["loom"])  # the outcomes are the same in every round
    dt.seconds, dt.extra_seconds = statistics.median(times["datatrove"]), statistics.median(times["datatrove stage 4"])
    if args.rounds > 1:
        log("seconds per round: " + "; ".join(f"{k} " + ", ".join(f"{t:.1f}" for t in v) for k, v in times.items()))

    log("scoring")
    agree = agreement(corpus, loom, dt, args.show_disagreements)
    scores = {name: pair_scores(corpus, out, dedup.shingle, dedup.min_jaccard)
              for name, out in (("loom", loom), ("datatrove", dt))}
    report(corpus, args, dedup, loom, dt, agree, scores)


def report(corpus: Corpus, args, dedup: Dedup, loom: Outcome, dt: Outcome, agree: list[Agreement],
           scores: dict[str, PairScores]) -> None:
    n = len(corpus)
    mb = sum(len(t.encode("utf-8")) for t in corpus.texts.values()) / 1e6
    speedup = dt.seconds / loom.seconds
    ls, ds = scores["loom"], scores["datatrove"]
    n_text = sum(1 for _ in corpus.text)

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def prec(s: PairScores, domain: str) -> str:
        return f"{s.precision(domain):.3f} ({s.justified[domain]:,}/{s.flagged[domain]:,})"

    rows = [
        (f"wall time, read -> clusters (s){', median' if args.rounds > 1 else ''}", f"{loom.seconds:.1f}",
         f"{dt.seconds:.1f}", "", ""),
        ("throughput (docs/s)", f"{n / loom.seconds:,.0f}", f"{n / dt.seconds:,.0f}", "", ""),
        ("throughput (MB/s)", f"{mb / loom.seconds:.2f}", f"{mb / dt.seconds:.2f}", "", ""),
        ("speed ratio, loom / datatrove", f"{speedup:.2f}x", "", ">= 3x", met(speedup >= 3)),
        *((f"keep/drop agreement, {a.name}", f"{a.percent:.2f}%", "", ">= 98%", met(a.percent >= 98))
          for a in agree),
        (f"text docs kept by the quality rules (of {n_text:,})", f"{sum(i in loom.kept for i, _ in corpus.text):,}",
         f"{sum(i in dt.kept for i, _ in corpus.text):,}", "", ""),
        ("near-dup recall, planted pairs", f"{ls.recall:.3f} ({ls.found:,}/{ls.evaluable:,})",
         f"{ds.recall:.3f} ({ds.found:,}/{ds.evaluable:,})", ">= 0.95", met(ls.recall >= 0.95)),
        ("near-dup precision, text docs", prec(ls, "text"), prec(ds, "text"), ">= 0.95",
         met(ls.precision("text") >= 0.95)),
        ("near-dup precision, code chunks (see notes)", prec(ls, "code"), prec(ds, "code"), "", ""),
        ("documents removed as duplicates", f"{len(loom.removed):,}", f"{len(dt.removed):,}", "", ""),
    ]
    print()
    print(f"Corpus: {n:,} documents, {mb:.1f} MB: {n_text - len(corpus.pairs):,} text, {len(corpus.pairs):,} "
          f"planted near-duplicate copies, {len(corpus.code):,} code chunks of <= {corpus.code_lines} lines. "
          f"{args.workers} processes per tool, {os.cpu_count()} CPUs, python {platform.python_version()}.")
    print(f"MinHash, both tools: {dedup.shingle}-word shingles (loom: {dedup.shingle}-token shingles for code), "
          f"{dedup.bands} bands x {dedup.rows} rows; loom checks candidates at estimated Jaccard >= "
          f"{dedup.min_jaccard}. A removal is right when the kept document is its planted partner or has "
          f"a true {dedup.shingle}-word Jaccard >= {dedup.min_jaccard} with it.")
    print(f"Not in the ratio: datatrove's 4th MinHash stage (re-read, write the deduplicated corpus): "
          f"{dt.extra_seconds:.1f}s.")
    print()
    head = ("measure", "loom", "datatrove", "target", "")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(5)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    for a in agree:
        print(f"\nKeep/drop disagreements with {a.name} ({a.n - a.agree:,}), as (loom, datatrove):")
        for (lr, dr), count in a.by_rule.most_common():
            print(f"  {count:6,}  loom {lr:36s} datatrove {dr}")
            for doc_id in a.examples.get((lr, dr), []):
                text = corpus.texts[doc_id]
                print(f"          --- {doc_id} ({len(text.split())} words)")
                print("          " + text[:600].replace("\n", "\n          "))
    for name, sc in scores.items():
        if sc.false_examples:
            print(f"\n{name}: some removals judged wrong (id, kept document, true Jaccard, cluster size):")
            for example in sc.false_examples:
                print(f"  {example}")


if __name__ == "__main__":
    main()
