"""Issue 16, item 6: does code in pretraining help a model learn to plan? Two models of the same
shape pretrained on the same number of tokens of the standard-library corpus, one on its English
only (docstrings, comments, the reference topics, prose files) and one on English and code (the
quickstart's mixture), then given the same planner training (`loom.reason.plan_data`, the data of
plan_lengths.py, started from each one's weights). One tokenizer for all: trained once on the
English and code corpus and copied into the other datasets (`tokenizer.path`), so ids agree.

Reported: bits per byte of each base model on the validation English and code (before planner
training, the measure that does not depend on the tokenizer), and each planner's accuracy on the
suites by strategy (`direct`: one call; `code`: the model writes the plan, constrained, and runs
it; `graph`: the hand-written plan run by the same model) at lengths up to 2x the training cap.

    python experiments/code_text.py [--out runs/exp-code-text] [--size small|gpu]
        [--steps N] [--plan-steps M] [--seeds 2] [--items 5] [--lengths 2,4,8] [--device cpu]

Writes OUT/table.md, OUT/rows.json and OUT/accuracy.png (accuracy against length, a line per
base and strategy, a panel per suite). The default size fits 30 minutes on 2 CPU cores;
`--size gpu` trains a wider model longer (pass `--device cuda`).
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

SIZES = {  # model shape, pretraining and planner steps, planning data per size
    "small": {"model": ["model.n_layer=4", "model.n_head=8", "model.n_kv_head=4", "model.d_model=256"],
              "steps": 350, "plan_steps": 350, "questions": 1000, "step_items": 30000},
    "gpu": {"model": ["model.n_layer=12", "model.n_head=12", "model.n_kv_head=4", "model.d_model=768"],
            "steps": 5000, "plan_steps": 3000, "questions": 10000, "step_items": 60000},
}
BASES = {  # the pretraining mixture of each base model, by domain share of the training bytes
    "text": "{text = 1.0}",
    "text+code": "{text = 0.25, code = 0.75}",  # the quickstart's
}
VOCAB = 384  # close to characters, as in plan_lengths.py: a word's last letter must be a token


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/exp-code-text")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--steps", type=int, help="pretraining steps of each base (default: the size's)")
    ap.add_argument("--plan-steps", type=int, help="planner training steps of each (default: the size's)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--cap", type=int, default=4, help="the longest question planned in training")
    ap.add_argument("--lengths", default="2,4,8")
    ap.add_argument("--strategies", default="direct,code,graph")
    ap.add_argument("--suites", default="last_letters,sum_list,halve_or_triple,doubling")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from loom.checkpoint import find_resumable
    from loom.config import load_config
    from loom.data import build_dataset
    from loom.eval.bpb import bits_per_byte
    from loom.eval.lm import LoomLM
    from loom.reason import strategies_plot
    from loom.reason.backends.loom_run import LoomBackend
    from loom.util import atomic_write_text

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = SIZES[args.size]
    common = [f'run.dir="{out}/runs"', f"tokenizer.vocab_size={VOCAB}", "model.max_seq_len=512", "train.seq_len=512",
              "train.micro_batch=8", *size["model"], "train.eval_every=250", "train.ckpt_every=250",
              f'train.device="{args.device}"']
    tokenizer = out / "data-text+code" / "tokenizer.json"
    corpus = planning_corpus(out / "plans.jsonl", size["questions"], size["step_items"], args.cap)
    lengths = [int(x) for x in args.lengths.split(",")]
    strategies = args.strategies.split(",")
    bpb, rows = {}, []
    for base in sorted(BASES, key=lambda b: b != "text+code"):  # text+code first: it trains the tokenizer
        pretrain = load_config("quickstart", [
            *common, f'run.name="{base}"', f'data.dir="{out}/data-{base}"', f"data.mixture={BASES[base]}",
            *([f'tokenizer.path="{tokenizer}"'] if base != "text+code" else []),
            f"train.steps={args.steps or size['steps']}"])
        shards = build_dataset(pretrain)
        if base == "text+code":
            # the same validation documents for both bases (the split is a hash of each document's
            # id and the mixture samples only the training split): the English and the code
            val_shards = shards
        summary = train_to_the_end(pretrain)
        lm = LoomLM.from_run(pretrain.run_dir, args.device)
        figures = bits_per_byte(lm, val_shards, "val", max_bytes_per_domain=300_000)
        bpb[base] = {"tokens": summary["tokens"], **{d: f["bits_per_byte"] for d, f in figures.items()}}
        print(f"[exp] {base}: {summary['tokens']:,} tokens, bits per byte "
              + ", ".join(f"{d} {v:.3f}" for d, v in bpb[base].items() if d != "tokens"), file=sys.stderr)

        planner = load_config("quickstart", [
            *common, f'run.name="{base}-planner"', f'data.dir="{out}/data-plans"',
            f'data.sources=[{{name="plans", kind="jsonl", path="{corpus}", domain="code:python"}}]', "data.mixture={}",
            f'tokenizer.path="{tokenizer}"', *PLANNER_SETTINGS, f"train.steps={args.plan_steps or size['plan_steps']}"])
        build_dataset(planner)  # the same for both: built once, then up to date
        checkpoint, notes = find_resumable(pretrain.run_dir / "checkpoints")
        if checkpoint is None:
            raise SystemExit(f"{pretrain.run_dir} has no checkpoint to start the planner from: {'; '.join(notes)}")
        train_to_the_end(planner, init_from=checkpoint)
        for row in ask_planner(LoomBackend(planner.run_dir, args.device), args.suites.split(","), strategies,
                               lengths, args.items, args.seeds, out / "eval" / base, label=f"{base}: "):
            rows.append({**row, "base": base})

    atomic_write_text(out / "rows.json", json.dumps({"bits_per_byte": bpb, "rows": rows}, indent=2) + "\n")
    table = _table(rows, bpb, strategies, args)
    atomic_write_text(out / "table.md", table)
    strategies_plot(rows, out / "accuracy.png", label=lambda row: f"{row['base']} {row['strategy']}",
                    cap=training_caps(args.suites.split(","), args.cap))
    print(table, end="")
    return 0


def _table(rows: list[dict], bpb: dict, strategies: list[str], args) -> str:
    domains = sorted({d for figures in bpb.values() for d in figures if d != "tokens"})
    lines = ["Bits per byte on the validation split (up to 300 KB per domain), after pretraining:\n",
             "| base | tokens | " + " | ".join(domains) + " |", "|---|---:|" + "---:|" * len(domains)]
    lines += [f"| {b} | {f['tokens']:,} | " + " | ".join(f"{f[d]:.3f}" for d in domains) + " |" for b, f in bpb.items()]
    lines += ["", f"After the same planner training; training cap length {args.cap}; {args.seeds} seeds x "
              f"{args.items} items per cell; accuracy [95% Wilson interval]:\n",
              "| suite | length | " + " | ".join(f"{b} {s}" for s in strategies for b in bpb) + " |",
              "|---|---:|" + "---:|" * (len(strategies) * len(bpb))]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        for length in suite_lengths(rows, suite):
            cells = [cell(*pooled(rows, suite=suite, difficulty=length, strategy=s, base=b)) for s in strategies
                     for b in bpb]
            lines.append(f"| {suite} | {length} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
