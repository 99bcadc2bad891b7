"""Sparse MoE against dense at equal active compute, on the embedded corpus.

Trains the `quickstart` model and its sparse twin `quickstart-moe` (8 experts of half the dense
MLP width, top-2: the same active parameters and FLOPs per token) for the same steps, tokens,
schedule and seed, one after the other in this process's machine, through the real `loom train`,
and prints a table: total and active parameters, final validation loss, tokens/s, and for the MoE
run the lowest share of routed tokens any expert got in any layer after warm-up, against the
uniform share (the issue asks that none stays below a quarter of uniform).

    python bench/moe_vs_dense.py                # 300 steps each, as the quickstart (about 15 min on 2 cores)
    python bench/moe_vs_dense.py --steps 120    # a shorter comparison

The data is built once (`data/stdlib`, shared with the quickstart). The runs go to
`runs/bench-dense` and `runs/bench-moe` and are started afresh each time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from loom.config import load_config
from loom.data import build_dataset
from loom.model import GPT
from loom.train import train


def run(preset: str, name: str, steps: int, extra: list[str]) -> dict:
    cfg = load_config(preset, [f'run.name="{name}"', f"train.steps={steps}", f"train.eval_every={steps}",
                               f"train.ckpt_every={steps}", "train.log_every=5", *extra])
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    build_dataset(cfg)
    started = time.time()
    summary = train(cfg)
    summary["wall_s"] = time.time() - started
    model = GPT(cfg.model)
    summary["active"] = model.num_active_params()
    summary["total"] = model.num_params()
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    warm = cfg.train.warmup_steps
    loads = [layer["load"] for r in records if "moe" in r and r["step"] > warm for layer in r["moe"]]
    if loads:
        experts = len(loads[0])
        summary["min_load_vs_uniform"] = min(min(load) for load in loads) * experts
        summary["mean_imbalance"] = sum(max(load) * experts for load in loads) / len(loads)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="override for both runs")
    args = parser.parse_args()

    dense = run("quickstart", "bench-dense", args.steps, args.extra)
    moe = run("quickstart-moe", "bench-moe", args.steps, args.extra)

    print("\n| model | total params | active params | steps | final val loss | tokens/s | min expert load "
          "(x uniform, after warm-up) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, s in (("dense (quickstart)", dense), ("MoE 8x top-2 (quickstart-moe)", moe)):
        load = f"{s['min_load_vs_uniform']:.2f}" if "min_load_vs_uniform" in s else "-"
        print(f"| {label} | {s['total'] / 1e6:.2f}M | {s['active'] / 1e6:.2f}M | {s['steps']} | "
              f"{s['final_val_loss']:.4f} | {s['tokens_per_s']:,.0f} | {load} |")
    gap = dense["final_val_loss"] - moe["final_val_loss"]
    speed = moe["tokens_per_s"] / dense["tokens_per_s"]
    print(f"\nMoE - dense validation loss: {-gap:+.4f} ({'MoE lower' if gap > 0 else 'MoE NOT lower'}); "
          f"MoE tokens/s = {speed:.2f} x dense; lowest expert load {moe.get('min_load_vs_uniform', 0):.2f} x uniform "
          f"({'ok' if moe.get('min_load_vs_uniform', 0) >= 0.25 else 'BELOW'} the 0.25 floor)")
    sys.exit(0 if gap > 0 and moe.get("min_load_vs_uniform", 0) >= 0.25 else 1)


if __name__ == "__main__":
    main()
