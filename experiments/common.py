"""What the planning experiments share (plan_lengths.py, code_text.py): the planning corpus, the
training settings for it, the evaluation across lengths, and pooling rows over seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Training on planning data (`loom.reason.plan_data`), whatever the model started from.
PLANNER_SETTINGS = [
    # generated, templated data: the web-text quality rules and near-duplicate removal would
    # take most of it (a plan differs from its siblings only in the question)
    "quality.enabled=false", "dedup.near=false",
    # a question at 4x the cap with its plan or worked steps runs to about 400 tokens
    "model.max_seq_len=512", "train.seq_len=512", "train.micro_batch=8",
]


def train_to_the_end(cfg, **kwargs) -> dict:
    """`loom.train.train`; a run that stops early (interrupted, a budget, a guard) ends the
    experiment here rather than have a half-trained model evaluated."""
    from loom.train import train

    summary = train(cfg, **kwargs)
    if summary["interrupted"] or summary["stopped_because"] or summary["steps"] < cfg.train.steps:
        why = summary["stopped_because"] or "interrupted"
        raise SystemExit(f"{cfg.run_dir}: training stopped at step {summary['steps']} of {cfg.train.steps} ({why}); "
                         "run the same command to continue from its checkpoint")
    return summary


def planning_corpus(path: Path, questions: int, step_items: int, cap: int) -> Path:
    """The planning documents as a jsonl source, written once."""
    from loom.reason.plan_data import planning_documents
    from loom.util import atomic_write_text

    if not path.is_file():
        docs = planning_documents(questions, step_items, cap)
        atomic_write_text(path, "".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def ask_planner(backend, suites: list[str], strategies: list[str], lengths: list[int], items: int, seeds: int,
                work: Path, label: str = "") -> list[dict]:
    """Each suite asked at each length with each strategy (`loom.reason.evaluate_strategies`),
    `seeds` x `items` questions; for `code`, how many of the model's plans were the hand-written
    plan exactly. One row per (suite, seed, length, strategy). SCAN is asked at the lengths of its
    own length split (`loom.reason.plan_data.evaluation_lengths`)."""
    from loom.reason import evaluate_strategies
    from loom.reason.plan_code import compile_plan, load_program
    from loom.reason.plan_data import PLANS, evaluation_lengths

    rows = []
    for suite in suites:
        program = load_program(compile_plan(PLANS[suite], name=f"{suite} (hand-written)"))
        asked = evaluation_lengths(suite, lengths)
        for seed in range(seeds):
            where = work / suite / f"seed{seed}"
            for row in evaluate_strategies(suite, backend, strategies, asked, items, seed, program, where,
                                           log=lambda _: None):
                row["seed"] = seed
                row["right"] = round(row["accuracy"] * row["items"])
                if row["strategy"] == "code":
                    row["exact_plans"] = _exact_plans(where / "code" / f"d{row['difficulty']}", PLANS[suite])
                rows.append(row)
                print(f"[exp] {label}{suite} length {row['difficulty']} seed {seed} {row['strategy']}: "
                      f"{row['right']}/{row['items']}", file=sys.stderr)
    return rows


def _exact_plans(folder: Path, plan: str) -> int:
    exact = 0
    for trace in folder.glob("*/trace.jsonl"):
        for line in trace.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "plan":
                exact += event["text"] == plan
    return exact


def training_caps(suites: list[str], cap: int) -> dict[str, int]:
    """The longest length each suite was trained at (SCAN's split sets its own)."""
    from loom.reason.plan_data import training_lengths

    return {suite: max(training_lengths(suite, cap)) for suite in suites}


def suite_lengths(rows: list[dict], suite: str) -> list[int]:
    return sorted({r["difficulty"] for r in rows if r["suite"] == suite})


def pooled(rows: list[dict], field: str = "right", **match) -> tuple[int, int]:
    """(sum of `field`, questions asked) over the rows whose fields equal `match`."""
    mine = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return sum(r[field] for r in mine), sum(r["items"] for r in mine)

