"""Sparse MoE against dense at equal active compute, on the embedded corpus.

Trains the `quickstart` model and its sparse twin `quickstart-moe` (8 experts of half the dense
MLP width, top-2: the same active parameters and FLOPs per token) for the same steps, tokens,
schedule and seed, one after the other in this process's machine, through the real `loom train`,
and prints a table: total and active parameters, final validation loss, tokens/s, and for the MoE
run each expert's share of the routed tokens after warm-up against the uniform share: the lowest
mean over the run (no expert may stay below a quarter of uniform), the lowest single logged step,
and the longest stretch of logged steps any expert spent under a quarter.

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
    # per (layer, expert), its share of the routed tokens at each logged step after warm-up
    series: dict[tuple[int, int], list[float]] = {}
    for r in records:
        if "moe" in r and r["step"] > warm:
            for layer_index, layer in enumerate(r["moe"]):
                for expert, share in enumerate(layer["load"]):
                    series.setdefault((layer_index, expert), []).append(share)
    if series:
        experts = cfg.model.moe.n_experts
        floor = 0.25 / experts  # a quarter of the uniform share
        summary["experts"] = f"{experts} experts, top-{cfg.model.moe.top_k}" + (
            f", {cfg.model.moe.shared_experts} shared" if cfg.model.moe.shared_experts else "")
        summary["min_mean_load"] = min(sum(v) / len(v) for v in series.values()) * experts
        summary["min_step_load"] = min(min(v) for v in series.values()) * experts
        summary["longest_below"] = max(_longest_run(v, floor) for v in series.values())
        summary["logged_steps"] = max(len(v) for v in series.values())
    return summary


def _longest_run(values: list[float], floor: float) -> int:
    """The longest stretch of consecutive values under `floor`."""
    longest = current = 0
    for v in values:
        current = current + 1 if v < floor else 0
        longest = max(longest, current)
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="override for both runs")
    args = parser.parse_args()

    # both with AdamW, whatever the dense preset trains with: the comparison is of the layers
    dense = run("quickstart", "bench-dense", args.steps, ["train.optimizer=adamw", *args.extra])
    moe = run("quickstart-moe", "bench-moe", args.steps, ["train.optimizer=adamw", *args.extra])

    every = 5  # train.log_every above
    print("\n| model | total params | active params | steps | final val loss | tokens/s | expert load after "
          "warm-up (x uniform): lowest mean / lowest single step / longest stretch under 0.25 |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, s in (("dense (quickstart)", dense), (f"MoE, {moe.get('experts', '')} (quickstart-moe)", moe)):
        load = (f"{s['min_mean_load']:.2f} / {s['min_step_load']:.2f} / {s['longest_below'] * every} steps"
                if "min_mean_load" in s else "-")
        print(f"| {label} | {s['total'] / 1e6:.2f}M | {s['active'] / 1e6:.2f}M | {s['steps']} | "
              f"{s['final_val_loss']:.4f} | {s['tokens_per_s']:,.0f} | {load} |")
    gap = dense["final_val_loss"] - moe["final_val_loss"]
    speed = moe["tokens_per_s"] / dense["tokens_per_s"]
    balanced = moe.get("min_mean_load", 0) >= 0.25
    print(f"\nMoE - dense validation loss: {-gap:+.4f} ({'MoE lower' if gap > 0 else 'MoE NOT lower'}); "
          f"MoE tokens/s = {speed:.2f} x dense; every expert's mean load after warm-up >= 0.25 x uniform: "
          f"{'yes' if balanced else 'NO'} (lowest {moe.get('min_mean_load', 0):.2f})")
    sys.exit(0 if gap > 0 and balanced else 1)

if __name__ == "__main__":
    main()
