"""Issue 16, item 4: does a model that learnt to write plans answer questions longer than any it
was trained on? One command: planning data (`loom.reason.plan_data`: every training question answered
directly, worked step by step and planned, up to a length cap), a model trained on it from
nothing, then each suite asked at lengths from below the cap to 4x it with each strategy:
`direct` (one call), `cot` (a chain of thought, as trained), `sc` (self-consistency: the
majority of 5 sampled chains), `code` (the model writes the plan under constrained decoding,
then runs it), `graph` (the hand-written plan, run by the same model). For `code`, also how
often the model's plan is the hand-written one, exactly. SCAN keeps its own length split whatever `--cap` and
`--lengths` say: trained on commands of up to 22 actions, asked at 24, up to 36 and up to 48.

    python experiments/plan_lengths.py [--out runs/exp-plan-lengths] [--size small|gpu]
        [--seeds 3] [--items 5] [--cap 4] [--lengths 2,4,8,16] [--strategies direct,cot,sc,code,graph]

Writes OUT/table.md (accuracy with a 95% Wilson interval over seeds x items, per suite, length
and strategy), OUT/rows.json and OUT/accuracy.png (accuracy against length, one line per
strategy, a panel per suite). The default size fits 30 minutes on 2 CPU cores; `--size gpu`
trains longer and wider (pass `--device cuda`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import (
    PLANNER_SETTINGS,
    ask_planner,
    planning_corpus,
    pooled,
    suite_lengths,
    train_to_the_end,
    training_caps,
)

from loom.eval.stats import accuracy_with_interval as cell

SIZES = {  # model and training per size; the data scales with the steps
    "small": {"model": ["model.n_layer=4", "model.n_head=8", "model.n_kv_head=4", "model.d_model=256"],
              "steps": 800, "questions": 1000, "step_items": 30000},
    "gpu": {"model": ["model.n_layer=12", "model.n_head=12", "model.n_kv_head=4", "model.d_model=768"],
            "steps": 5000, "questions": 10000, "step_items": 60000},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/exp-plan-lengths")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--cap", type=int, default=4, help="the longest question planned in training")
    ap.add_argument("--lengths", default="2,4,8,16")
    ap.add_argument("--strategies", default="direct,cot,sc,code,graph")
    ap.add_argument("--suites", default="last_letters,sum_list,halve_or_triple,doubling,scan")
    ap.add_argument("--steps", type=int, help="training steps (default: the size's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from loom.config import load_config
    from loom.data import build_dataset
    from loom.reason import strategies_plot
    from loom.reason.backends.loom_run import LoomBackend
    from loom.util import atomic_write_text

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = SIZES[args.size]
    corpus = planning_corpus(out / "plans.jsonl", size["questions"], size["step_items"], args.cap)
    cfg = load_config("quickstart", [
        f'run.dir="{out}/runs"', 'run.name="planner"', f'data.dir="{out}/data"',
        f'data.sources=[{{name="plans", kind="jsonl", path="{corpus}", domain="code:python"}}]', "data.mixture={}",
        # close to characters, so that a word's last letter is a token the model sees (with 1,024
        # tokens most of the 200 words are one token each, and the step failed: docs/LOG.md)
        "tokenizer.vocab_size=384", "tokenizer.train_bytes=2000000", *PLANNER_SETTINGS,
        *size["model"], f"train.steps={args.steps or size['steps']}", "train.eval_every=200", "train.ckpt_every=200",
        f'train.device="{args.device}"'])
    build_dataset(cfg)
    train_to_the_end(cfg)
    backend = LoomBackend(cfg.run_dir, args.device)

    lengths = [int(x) for x in args.lengths.split(",")]
    strategies = args.strategies.split(",")
    rows = ask_planner(backend, args.suites.split(","), strategies, lengths, args.items, args.seeds, out / "eval")
    atomic_write_text(out / "rows.json", json.dumps(rows, indent=2) + "\n")
    table = _table(rows, strategies, args)
    atomic_write_text(out / "table.md", table)
    strategies_plot(rows, out / "accuracy.png", label=lambda row: row["strategy"],
                    cap=training_caps(args.suites.split(","), args.cap))
    print(table, end="")
    return 0


def _table(rows: list[dict], strategies: list[str], args) -> str:
    lines = [f"Training cap: length {args.cap}; {args.seeds} seeds x {args.items} items per cell; "
             "accuracy [95% Wilson interval]; for code, exact plans / plans written.\n",
             "| suite | length | " + " | ".join(strategies) + " |", "|---|---:|" + "---:|" * len(strategies)]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        for length in suite_lengths(rows, suite):
            cells = []
            for strategy in strategies:
                where = {"suite": suite, "difficulty": length, "strategy": strategy}
                text = cell(*pooled(rows, **where))
                if strategy == "code":
                    exact, n = pooled(rows, "exact_plans", **where)
                    text += f", plans {exact}/{n}"
                cells.append(text)
            lines.append(f"| {suite} | {length} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
