"""`loom eval` end to end on a tiny trained run: results files, the table, compare, emit, and
clear errors; through the real command line."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_loom
from loom.errors import LoomError
from loom.eval.run import compare_runs, resolve_suites, suite_names
from loom.eval.suites import SUITES

loom = run_loom  # the command line, in a subprocess


def test_suite_names_and_groups():
    assert resolve_suites(["all"]) == suite_names() == ["bpb", *SUITES, "humaneval"]
    assert resolve_suites(["humaneval", "reasoning"]) == [*SUITES, "humaneval"]
    with pytest.raises(LoomError, match="unknown eval suite 'nope'; choose from all, reasoning, bpb"):
        resolve_suites(["nope"])


def test_eval_writes_results_and_table_and_compares(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    run = tmp_path / "a"
    shutil.copytree(run_dir, run)
    out = loom("eval", "--run", str(run), "--suite", "bpb,addition,last_letters", "--set", "eval.items=4",
               "--set", "eval.shots=2", "--set", "eval.difficulty={addition=[1, 2]}",
               "--set", "eval.bpb_max_bytes=30000", cwd=tmp_path)
    results = {p.stem: json.loads(p.read_text()) for p in (run / "eval").glob("*.json")}
    assert set(results) == {"bpb", "addition", "last_letters"}
    bpb = results["bpb"]["metrics"]
    assert bpb["all/bits_per_byte"] > 0 and "text/bits_per_byte" in bpb and "code:python/bits_per_byte" in bpb
    add = results["addition"]["metrics"]
    assert set(add) == {f"d{d}/{m}/exact_match" for d in (1, 2) for m in ("zero-shot", "2-shot")}
    assert all(0.0 <= v <= 1.0 for v in add.values())
    records = [json.loads(line) for line in (run / "eval" / "addition.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 4  # difficulties x modes x items
    for r in records:  # every verdict is exact match of the recorded prediction
        assert r["correct"] == (r["prediction"] == r["answer"])
    assert results["last_letters"]["settings"]["items"] == 4
    table = (run / "eval" / "results.md").read_text()
    assert "| bpb | code:python/bits_per_byte |" in table and "all/bits_per_byte" in table
    assert "| addition | d1/zero-shot/exact_match |" in table and "d2/2-shot/exact_match" in table
    assert table in out.stdout

    # a second run: only bpb, then compare side by side
    other = tmp_path / "b"
    shutil.copytree(run_dir, other)
    loom("eval", "--run", str(other), "--suite", "bpb", "--set", "eval.bpb_max_bytes=30000", cwd=tmp_path)
    text = compare_runs(run, other)
    row = next(line for line in text.splitlines() if "all/bits_per_byte" in line)
    assert row.endswith("| +0.0000 |")  # the same checkpoint: the same bits per byte
    assert "| addition | d1/zero-shot/exact_match |" in text
    assert loom("eval", "compare", str(run), str(other), cwd=tmp_path).stdout == text


def test_emit_writes_training_documents(tmp_path):
    out = tmp_path / "train.jsonl"
    loom("eval", "emit", "--suite", "addition,scan", "--items", "20", "--out", str(out), cwd=tmp_path)
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(docs) == 40 and all(d["text"].startswith("Q: ") and "\nA: " in d["text"] for d in docs)
    assert len({d["id"] for d in docs}) == 40


def test_eval_errors_are_clear(tiny_run, tmp_path):
    err = loom("eval", "--suite", "bpb", cwd=tmp_path, ok=False).stderr
    assert "loom eval needs --run RUN" in err and "Traceback" not in err
    err = loom("eval", "--run", str(tiny_run[0]), "--suite", "bogus", cwd=tmp_path, ok=False).stderr
    assert "unknown eval suite 'bogus'" in err
    err = loom("eval", "--run", str(tmp_path / "missing"), "--suite", "bpb", cwd=tmp_path, ok=False).stderr
    assert "is not a loom run" in err
    err = loom("eval", "compare", str(tmp_path), cwd=tmp_path, ok=False).stderr
    assert "usage: loom eval compare RUN_A RUN_B" in err
    err = loom("eval", "compare", str(tmp_path), str(tmp_path), cwd=tmp_path, ok=False).stderr
    assert "has no eval results" in err
    assert "addition" in loom("eval", "--list", cwd=tmp_path).stdout
