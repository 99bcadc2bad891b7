"""The clean stage: sources -> clean documents -> duplicates marked (`clean/`).

1. Every source's files are listed and grouped into tasks (`plan_tasks`); each task reads its
   files and passes each document down the clean chain (`clean_chain`: normalize, quality rules
   with C4 notice lines removed first, decontamination, PII scrubbing; each step returns the
   document or the rule that drops it), then hashes and MinHashes the survivors. A task writes
   its survivors (`tasks/NNNNN.jsonl.zst`), their hashes and signatures (`.npz`), their shingle
   sets (`.shingles.npy`) and its accounting, last, as its marker (`.json`). Tasks run on an
   executor (`loom.data.execute`: a local process pool, Ray or Slurm); a killed build started
   again redoes only the tasks that left no marker, and since a task's output depends only on
   its files, the result is the same whatever ran the tasks, in whatever order.
2. The merge finds exact and near duplicates across all sources at once (`loom.data.dedup`);
   each cluster keeps its earliest document, and every near duplicate removed has an exact
   Jaccard similarity of at least `dedup.min_jaccard` with it (its distribution goes to the card).

Accounting invariant: each input is exactly one of kept, dropped (by one named rule), duplicate
(exact or near) or unreadable (with file, line and error), and the card's numbers add up.
Memory: one task's files per worker; the merge holds every kept document's hash and MinHash
signature (16 + 4 x bands x rows bytes each: 656 bytes by default) and the band buckets they
share, and memory-maps the shingle sets (4 bytes per distinct shingle on disk), reading only
those of documents it compares.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import zstandard

from loom.data.contamination import ContaminationIndex
from loom.data.dedup import ShingleSets, content_hash, exact_duplicates, jaccard_summary, near_duplicates, sketch
from loom.data.documents import Document, split_of
from loom.data.normalize import normalize_text
from loom.data.pii import scrub
from loom.data.quality import c4_remove_notice_lines, code_rejection, text_rejection
from loom.data.sources import InputFile, SourceStats, Unreadable, list_inputs, read_input
from loom.data.stdlib_corpus import stdlib_root
from loom.data.workdirs import clean_dir, digest, log, progress, remove_temporaries, replace_dir
from loom.errors import DataError
from loom.util import atomic_write_text

CLEAN_FORMAT = "loom-clean/1"
MAX_LISTED_UNREADABLE = 1000  # the card lists this many unreadable inputs; it counts all


def _clean_settings(cfg, decontamination: dict | None) -> dict:
    return {
        "format": CLEAN_FORMAT,
        "sources": [asdict(s) for s in cfg.data.sources],
        "quality": asdict(cfg.quality),
        "dedup": asdict(cfg.dedup) | {"rensa": importlib.metadata.version("rensa")},  # its hashes make the sketches
        "scrub_pii": cfg.data.scrub_pii,
        "val_fraction": cfg.data.val_fraction,
        "python": platform.python_version(),
        "stdlib": stdlib_root(),
        "code": _cleaning_code_digest(),
        "decontaminate": decontamination,
    }


def _decontamination(cfg, test_ngrams) -> dict | None:
    """The settings of decontamination for the plan: None when `data.decontaminate` is off, else
    the suites, the n-gram length and a digest of `test_ngrams`, the n-grams the caller computed
    from those suites' test items (`loom.eval.contamination.item_ngrams`)."""
    if not cfg.data.decontaminate:
        return None
    if test_ngrams is None:
        raise DataError(f"data.decontaminate = {cfg.data.decontaminate} but no test n-grams were given to the "
                        "data build; run it as `loom data build` (or `loom.pipeline.build_data`), which computes "
                        "them from the suites, or pass test_ngrams")
    grams = sorted(set(test_ngrams))
    return {"suites": cfg.data.decontaminate, "ngram": cfg.data.decontaminate_ngram, "ngrams": len(grams),
            "digest": _ngrams_digest(grams)}


def _ngrams_digest(grams: list[str]) -> str:
    return hashlib.sha256("\n".join(grams).encode()).hexdigest()


TEST_NGRAMS = "test_ngrams.txt"  # in clean.work/: what every clean task checks documents against
_INDEX_CACHE: dict[str, ContaminationIndex] = {}


def _contamination_index(work: Path, settings: dict) -> ContaminationIndex:
    """The index of the plan's test n-grams, read from `clean.work/` (where a Slurm or Ray task
    finds them too) and checked against the plan's digest; built once per process."""
    digest = settings["digest"]
    if digest not in _INDEX_CACHE:
        path = work / TEST_NGRAMS
        try:
            grams = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise DataError(f"cannot read the test n-grams at {path} ({e.strerror}); run `loom data build` "
                            "again to write them") from None
        if _ngrams_digest(grams) != digest:
            raise DataError(f"the test n-grams at {path} are not the plan's; run `loom data build` again")
        _INDEX_CACHE[digest] = ContaminationIndex(grams)
    return _INDEX_CACHE[digest]


def _cleaning_code_digest() -> str:
    """A digest of the modules that decide what a clean document is, so that a loom whose rules
    changed rebuilds the clean corpus instead of reusing one made under the old rules."""
    from loom.data import contamination, dedup, filetypes, normalize, pii, quality, sources, stdlib_corpus

    h = hashlib.sha256()
    for module in (contamination, dedup, filetypes, normalize, pii, quality, sources, stdlib_corpus,
                   sys.modules[__name__]):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def plan_tasks(cfg, test_ngrams: list[str] | None = None) -> dict:
    """Lists every source's files (a directory walk, no reading) and groups runs of them into
    tasks of at most `data.task_files` files or about `data.task_bytes` bytes. The plan's
    fingerprint covers the settings and each file's size and modification time, so a changed
    input makes a new plan (and a new clean corpus). `test_ngrams`: see `build_dataset`."""
    settings = _clean_settings(cfg, _decontamination(cfg, test_ngrams))
    tasks, unreadable, passed_over = [], [], {}
    for index, source in enumerate(cfg.data.sources):
        stats = SourceStats()
        files, size = [], 0
        for entry in list_inputs(source, stats):
            if isinstance(entry, Unreadable):
                unreadable.append(asdict(entry))
                continue
            files.append(asdict(entry))
            size += entry.size
            if len(files) >= cfg.data.task_files or size >= cfg.data.task_bytes:
                tasks.append({"source": index, "files": files})
                files, size = [], 0
        if files:
            tasks.append({"source": index, "files": files})
        passed_over[source.name] = {"files": stats.files_skipped, "dirs": stats.dirs_skipped}
    plan = {"settings": settings, "tasks": tasks, "unreadable": unreadable, "passed_over": passed_over}
    plan["fingerprint"] = digest(plan)
    return plan


# The clean chain: steps with one signature, as datatrove's filters have (`BaseFilter.filter`
# returns keep or a reason): `step(doc, account)` returns the document, changed or not, or the
# name of the rule that drops it; the task counts the drops. Each step that changes text or finds
# something to count writes it into the task's account.


@dataclass
class TaskAccount:
    """What one clean task saw, written as its marker: inputs, drops by rule and by domain, PII
    redactions, C4 notice lines removed, unreadable inputs, and per clean document its domain,
    split and size in bytes."""

    task: int
    inputs: int = 0
    dropped_by_rule: Counter = field(default_factory=Counter)
    dropped_by_domain: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)
    c4_lines_removed: int = 0
    unreadable: int = 0
    unreadable_list: list = field(default_factory=list)
    docs: list = field(default_factory=list)  # [domain, split, bytes] per clean document
    seconds: float = 0.0

    def drop(self, doc: Document, rule: str) -> None:
        self.dropped_by_rule[rule] += 1
        self.dropped_by_domain[doc.domain] += 1

    def to_json(self) -> dict:
        # not dataclasses.asdict: it rebuilds a Counter from its (key, count) pairs as elements
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in values.items()}


Step = Callable[[Document, TaskAccount], "Document | str"]


def normalize_step(doc: Document, account: TaskAccount) -> Document | str:
    text = normalize_text(doc.text)
    return replace(doc, text=text) if text.strip() else "normalize.empty"


def quality_step(quality) -> Step:
    """The quality rules of `quality` (the [quality] section): code rules for code; for text,
    C4's notice lines removed (and counted), then the text rules, on the markup the source gave."""

    def step(doc: Document, account: TaskAccount) -> Document | str:
        if doc.domain_group == "code":
            return code_rejection(doc.text, doc.domain.split(":", 1)[1], quality.code) or doc
        text, removed = c4_remove_notice_lines(doc.text, quality.text)
        account.c4_lines_removed += removed
        return text_rejection(text, quality.text, doc.meta.get("markup")) or replace(doc, text=text)

    return step


def decontamination_step(contaminated: Callable[[str], bool]) -> Step:
    """Drops a document that shares an n-gram with an evaluation item (`contaminated(text)`)."""

    def step(doc: Document, account: TaskAccount) -> Document | str:
        return "decontamination" if contaminated(doc.text) else doc

    return step


def scrub_step(doc: Document, account: TaskAccount) -> Document | str:
    text, redactions = scrub(doc.text)
    account.redactions.update(redactions)
    return replace(doc, text=text)


def clean_chain(cfg, contaminated: Callable[[str], bool] | None = None) -> list[Step]:
    """The steps every document of a task goes through, in order; what follows the last (content
    hash and MinHash sketch) is not a step, as it neither drops nor changes."""
    steps: list[Step] = [normalize_step]
    if cfg.quality.enabled:
        steps.append(quality_step(cfg.quality))
    if contaminated is not None:
        steps.append(decontamination_step(contaminated))
    if cfg.data.scrub_pii:
        steps.append(scrub_step)
    return steps


def run_chain(steps: list[Step], doc: Document, account: TaskAccount) -> Document | None:
    """The document after every step, or None when one dropped it (counted in `account`)."""
    for step in steps:
        outcome = step(doc, account)
        if isinstance(outcome, str):
            account.drop(doc, outcome)
            return None
        doc = outcome
    return doc


def _task_paths(work: Path, index: int) -> tuple[Path, Path, Path]:
    """A task's clean documents, its hashes and signatures, and its marker (written last)."""
    stem = work / "tasks" / f"{index:05d}"
    return stem.with_suffix(".jsonl.zst"), stem.with_suffix(".npz"), stem.with_suffix(".json")


def _shingles_path(work: Path, index: int) -> Path:
    """A task's shingle sets, one flat uint32 array that the merge memory-maps (`loom.data.dedup`)."""
    return work / "tasks" / f"{index:05d}.shingles.npy"


def _save_sketches(sketches: list, cfg, path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    """Writes the shingle sets of a task's documents to `path` (atomically) and returns their
    signatures (N, bands * rows) and the offsets (N + 1,) of each set in the flat array."""
    sig_array = (np.stack([sig for sig, _ in sketches]) if sketches
                 else np.zeros((0, cfg.dedup.bands * cfg.dedup.rows), np.uint32))
    offsets = np.cumsum([0] + [len(s) for _, s in sketches], dtype=np.int64)
    if cfg.dedup.near:
        tmp = path.with_name(path.name + suffix)
        with open(tmp, "wb") as f:
            np.save(f, np.concatenate([s for _, s in sketches]) if sketches else np.zeros(0, np.uint32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return sig_array, offsets


def _load_shingles(work: Path, index: int, offsets: np.ndarray) -> np.ndarray:
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.uint32)  # an empty file cannot be memory-mapped
    return np.load(_shingles_path(work, index), mmap_mode="r")


def run_task(cfg, work: Path, index: int) -> dict:
    """Runs clean task `index` of the plan in `work`: reads its files, cleans each document and
    writes the survivors, their hashes and signatures and the task's accounting. Idempotent: a
    task whose marker exists is not run again; a task cut short leaves no marker and only
    temporary files, and running it again gives the same bytes."""
    docs_path, arrays_path, marker = _task_paths(work, index)
    shingles_path = _shingles_path(work, index)
    if marker.is_file():
        try:
            return json.loads(marker.read_text())
        except json.JSONDecodeError:
            pass  # a marker is written atomically, so this is outside damage: redo the task
    plan = json.loads((work / "plan.json").read_text())
    if not 0 <= index < len(plan["tasks"]):
        raise DataError(f"task {index} is not in the plan at {work / 'plan.json'} ({len(plan['tasks'])} tasks)")
    task = plan["tasks"][index]
    source = cfg.data.sources[task["source"]]
    started = time.time()
    acct = TaskAccount(index)
    hashes, signatures = [], []
    decontamination = plan["settings"].get("decontaminate")
    contaminated = _contamination_index(work, decontamination).contains if decontamination else None
    steps = clean_chain(cfg, contaminated)
    suffix = f".tmp-{os.getpid()}"
    docs_tmp = docs_path.with_name(docs_path.name + suffix)
    with open(docs_tmp, "wb") as raw:
        text_out = io.TextIOWrapper(zstandard.ZstdCompressor(level=3).stream_writer(raw), encoding="utf-8")
        for file in task["files"]:
            for item in read_input(source, InputFile(**file)):
                acct.inputs += 1
                if isinstance(item, Unreadable):
                    acct.unreadable += 1
                    if len(acct.unreadable_list) < MAX_LISTED_UNREADABLE:
                        acct.unreadable_list.append(asdict(item))
                    continue
                doc = run_chain(steps, item, acct)
                if doc is None:
                    continue
                split = split_of(doc.id, cfg.data.val_fraction)
                text_out.write(json.dumps({"id": doc.id, "text": doc.text, "domain": doc.domain,
                                           "source": doc.source, "split": split}) + "\n")
                acct.docs.append([doc.domain, split, len(doc.text.encode("utf-8"))])
                hashes.append(content_hash(doc.text))
                if cfg.dedup.near:
                    signatures.append(sketch(doc.text, cfg.dedup))
        text_out.flush()
        text_out.detach().flush(zstandard.FLUSH_FRAME)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(docs_tmp, docs_path)
    arrays_tmp = arrays_path.with_name(arrays_path.name + suffix)
    sig_array, shingle_offsets = _save_sketches(signatures, cfg, shingles_path, suffix)
    with open(arrays_tmp, "wb") as f:
        hash_array = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), 16)
        np.savez(f, hashes=hash_array, signatures=sig_array, shingle_offsets=shingle_offsets)
        f.flush()
        os.fsync(f.fileno())
    os.replace(arrays_tmp, arrays_path)
    acct.seconds = round(time.time() - started, 3)
    record = acct.to_json()
    atomic_write_text(marker, json.dumps(record, sort_keys=True))
    return record


def run_clean_task(cfg, index: int) -> dict:
    """Runs one task of the plan that `loom data build` left in `data.dir/clean.work/` (what a
    Slurm array task does); the build run after all tasks are done merges them."""
    work = clean_dir(cfg).parent / "clean.work"
    if not (work / "plan.json").is_file():
        raise DataError(f"no plan at {work / 'plan.json'}; run `loom data build` with this config first")
    plan = json.loads((work / "plan.json").read_text())
    # a task cannot compute the test n-grams (the build handed them over): it takes the plan's,
    # as long as this config asks for the same decontamination
    decontamination = None
    if cfg.data.decontaminate:
        decontamination = {**(plan["settings"].get("decontaminate") or {}), "suites": cfg.data.decontaminate,
                           "ngram": cfg.data.decontaminate_ngram}
    if plan["settings"] != json.loads(json.dumps(_clean_settings(cfg, decontamination), default=str)):
        raise DataError(f"the plan at {work / 'plan.json'} was made with other settings than this config's; "
                        "run `loom data build` with this config again to make a new one")
    return run_task(cfg, work, index)


def clean_corpus(cfg, test_ngrams: list[str] | None = None) -> dict:
    """Stages 1 and 2: makes `clean/` (documents, duplicate marks, manifest with the accounting)
    up to date and returns its manifest. Work happens in `clean.work/`, task by task; a build
    killed part way and started again with the same config redoes only unfinished tasks.
    `test_ngrams`: see `build_dataset`."""
    out = clean_dir(cfg)
    work = out.parent / "clean.work"
    remove_temporaries(out.parent, f".{out.name}.old-*")
    remove_temporaries(work / "tasks", "*.tmp-*")  # from tasks cut short
    plan = plan_tasks(cfg, test_ngrams)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("fingerprint") == plan["fingerprint"]:
                log(f"clean corpus in {out} is up to date")
                return manifest
        except json.JSONDecodeError:
            pass

    try:
        previous = json.loads((work / "plan.json").read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        previous = None
    if previous != plan["fingerprint"]:
        shutil.rmtree(work, ignore_errors=True)
        (work / "tasks").mkdir(parents=True)
        if plan["settings"]["decontaminate"]:
            atomic_write_text(work / TEST_NGRAMS, "\n".join(sorted(set(test_ngrams))))
        atomic_write_text(work / "plan.json", json.dumps(plan))
    n_tasks = len(plan["tasks"])
    pending = [i for i in range(n_tasks) if not _task_paths(work, i)[2].is_file()]
    if pending:
        _run_clean_tasks(cfg, work, n_tasks, pending)
    return _merge(cfg, work, plan, out)


def _run_clean_tasks(cfg, work: Path, n_tasks: int, pending: list[int]) -> None:
    from loom.data.execute import run_pending

    done_before = n_tasks - len(pending)
    resumed = f" ({done_before} done before, resuming)" if done_before else ""
    log(f"cleaning: {len(pending)} of {n_tasks} tasks to run on the {cfg.data.executor} executor{resumed}")
    bar = progress("cleaning")
    started = last_line = time.time()
    counts = {"tasks": 0, "docs": 0}

    def on_done(acct: dict) -> None:
        nonlocal last_line
        counts["tasks"] += 1
        counts["docs"] += acct["inputs"]
        bar.update(acct["inputs"])
        now = time.time()
        if bar.disable and (now - last_line > 10 or counts["tasks"] == len(pending)):
            last_line = now
            rate = counts["docs"] / max(now - started, 1e-9)
            log(f"cleaning: {counts['tasks']}/{len(pending)} tasks, {counts['docs']:,} inputs, {rate:,.0f} docs/s")

    run_pending(cfg, work, pending, run_task, on_done)
    bar.close()
    elapsed = time.time() - started
    log(f"cleaned {counts['docs']:,} inputs in {elapsed:.1f}s ({counts['docs'] / max(elapsed, 1e-9):,.0f} docs/s)")


@dataclass
class CorpusAccount:
    """The clean corpus' accounting, the tasks' accounts added up and the duplicates counted:
    every input is exactly one of kept, dropped, duplicate or unreadable, overall, per source
    and per domain. Written into the clean manifest and read by the data card."""

    sources: list[str]
    inputs: int = 0
    kept: int = 0
    dropped: int = 0
    duplicates: int = 0
    unreadable: int = 0
    dropped_by_rule: Counter = field(default_factory=Counter)
    duplicates_by_kind: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)
    c4_lines_removed: int = 0
    unreadable_list: list = field(default_factory=list)
    by_source: dict[str, Counter] = field(default_factory=dict)
    by_domain: dict[str, Counter] = field(default_factory=dict)
    passed_over: dict = field(default_factory=dict)
    near_jaccard: dict | None = None  # with near dedup: the removed pairs' Jaccard (loom.data.dedup)
    near_search: dict | None = None  # ... and the work the search did
    seconds: float = 0.0

    def __post_init__(self):
        self.by_source = {name: Counter() for name in self.sources}

    def domain(self, name: str) -> Counter:
        return self.by_domain.setdefault(name, Counter())

    def add_unreadable(self, entry: dict) -> None:
        """An input the plan could not list (counted here, not by a task)."""
        self.inputs += 1
        self.unreadable += 1
        self.by_source[entry["source"]]["unreadable"] += 1
        self._list(entry)

    def add_task(self, task: dict, source: str) -> None:
        """A task's marker (`TaskAccount.to_json`), from a task of `source`."""
        self.inputs += task["inputs"]
        self.c4_lines_removed += task["c4_lines_removed"]
        self.redactions.update(task["redactions"])
        self.dropped_by_rule.update(task["dropped_by_rule"])
        dropped = sum(task["dropped_by_rule"].values())
        self.dropped += dropped
        self.by_source[source]["dropped"] += dropped
        for domain, n in task["dropped_by_domain"].items():
            self.domain(domain)["dropped"] += n
        self.unreadable += task["unreadable"]
        self.by_source[source]["unreadable"] += task["unreadable"]
        for entry in task["unreadable_list"]:
            self._list(entry)

    def add_document(self, source: str, domain: str, split: str, n_bytes: int, kind: int) -> None:
        """A clean document, kept (kind 0) or removed as an exact (1) or near (2) duplicate."""
        status = ("kept", "duplicate_exact", "duplicate_near")[kind]
        self.by_source[source][status] += 1
        dom = self.domain(domain)
        dom[status] += 1
        if kind == 0:
            self.kept += 1
            dom[f"{split}_bytes"] += n_bytes
            dom[f"{split}_docs"] += 1
        else:
            self.duplicates += 1
            self.duplicates_by_kind["exact" if kind == 1 else "near"] += 1

    def _list(self, entry: dict) -> None:
        if len(self.unreadable_list) < MAX_LISTED_UNREADABLE:
            self.unreadable_list.append(entry)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sources" or value is None:
                continue
            if f.name in ("by_source", "by_domain"):
                value = {k: dict(v) for k, v in value.items()}
            out[f.name] = dict(value) if isinstance(value, Counter) else value
        return out


def _merge(cfg, work: Path, plan: dict, out: Path) -> dict:
    """Stage 2: adds up the tasks' accounts, finds duplicates across all of them, and swaps the
    finished work directory in as `clean/`."""
    started = time.time()
    acct = CorpusAccount([s.name for s in cfg.data.sources])
    records, hashes, signatures, shingle_parts = [], [], [], []
    for entry in plan["unreadable"]:
        acct.add_unreadable(entry)
    for index, task in enumerate(plan["tasks"]):
        source = cfg.data.sources[task["source"]].name
        _docs_path, arrays_path, marker = _task_paths(work, index)
        task_acct = json.loads(marker.read_text())
        acct.add_task(task_acct, source)
        records.extend((source, domain, split, n_bytes) for domain, split, n_bytes in task_acct["docs"])
        with np.load(arrays_path) as arrays:
            hashes.append(arrays["hashes"])
            signatures.append(arrays["signatures"])
            if cfg.dedup.near:
                offsets = arrays["shingle_offsets"]
                shingle_parts.append((_load_shingles(work, index, offsets), offsets))

    hash_matrix = np.concatenate(hashes) if hashes else np.zeros((0, 16), np.uint8)
    duplicate_of = exact_duplicates([h.tobytes() for h in hash_matrix]) if cfg.dedup.exact else None
    if duplicate_of is None:
        duplicate_of = np.full(len(records), -1, dtype=np.int64)
    kinds = np.where(duplicate_of >= 0, 1, 0)  # 1: exact
    if cfg.dedup.near and records:
        near_started = time.time()
        near = near_duplicates(np.concatenate(signatures), cfg.dedup, ShingleSets(shingle_parts),
                               candidates=duplicate_of < 0)
        shingle_parts.clear()  # closes the memory maps
        kinds = np.where(near.keeper >= 0, 2, kinds)
        duplicate_of = np.where(near.keeper >= 0, near.keeper, duplicate_of)
        acct.near_jaccard = _near_jaccard(near, records, cfg.dedup.min_jaccard)
        acct.near_search = near.stats | {"seconds": round(time.time() - near_started, 2)}
    for (source, domain, split, n_bytes), kind in zip(records, kinds):
        acct.add_document(source, domain, split, n_bytes, int(kind))
    acct.passed_over = plan["passed_over"]
    acct.seconds = round(time.time() - started, 2)
    np.save(work / "duplicate_of.npy", duplicate_of)
    manifest = {"format": CLEAN_FORMAT, "fingerprint": plan["fingerprint"], "tasks": len(plan["tasks"]),
                "documents": len(records), "accounting": acct.to_json(),
                "decontamination": plan["settings"].get("decontaminate")}
    atomic_write_text(work / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    replace_dir(work, out)
    a = manifest["accounting"]
    log(f"clean corpus: {a['inputs']:,} inputs: {a['kept']:,} kept, {a['dropped']:,} dropped, "
        f"{a['duplicates']:,} duplicates, {a['unreadable']:,} unreadable -> {out}")
    return manifest


def _near_jaccard(near, records: list, threshold: float) -> dict:
    """The distribution of each near-duplicate removal's exact Jaccard similarity with the
    document kept in its place, over all removals and per domain group (text, code)."""
    removed = near.keeper >= 0
    groups = np.array([domain.split(":", 1)[0] for _, domain, _, _ in records])
    out = {"all": jaccard_summary(near.jaccard[removed], threshold)}
    for group in sorted(set(groups[removed].tolist())):
        out[group] = jaccard_summary(near.jaccard[removed & (groups == group)], threshold)
    return out


def clean_documents(cfg, split: str | None = None) -> Iterator[Document]:
    """The kept (deduplicated) documents of the clean corpus, in plan order."""
    out = clean_dir(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    duplicate_of = np.load(out / "duplicate_of.npy")
    i = 0
    for index in range(manifest["tasks"]):
        docs_path = _task_paths(out, index)[0]
        with open(docs_path, "rb") as raw:
            reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
            for line in reader:
                i += 1
                if duplicate_of[i - 1] >= 0:
                    continue
                rec = json.loads(line)
                if split is None or rec["split"] == split:
                    yield Document(rec["id"], rec["text"], rec["domain"], rec["source"], {"split": rec["split"]})
