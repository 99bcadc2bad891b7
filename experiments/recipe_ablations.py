"""Recipe ablations at a fixed wall time (issue 17, item 2): the quickstart preset, one change at
a time, each trained for the same seconds of training on this machine, two seeds.

A change that makes a step slower gets fewer steps: each arm first times a short probe run,
then trains a fresh run of `budget / seconds per step` steps, so its schedule (warmup, decay)
ends when its time does. Validation is the whole validation split, once at the end, and bits
per byte (`loom.eval.bpb`) on the same documents, which is what compares arms of different
vocabularies. Arms (`--arms`, or `--arm name=key=value,key=value` for a combination):

  baseline     the preset as it stands
  muon         train.optimizer = muon (Muon for the blocks' matrices, AdamW for the rest)
  qk_norm      model.qk_norm
  relu2        model.mlp = relu2 at mlp_ratio 4 (SwiGLU-at-8/3's parameters)
  zero_init    model.zero_init_projections
  untied       model.tie_embeddings = false
  softcap      model.logit_softcap = 15
  wsd          train.schedule = wsd (20% linear cool-down)
  batch_half / batch_double   half / twice the preset's sequences per step
  lr_half / lr_double         half / twice its peak learning rate
  vocab_4096   tokenizer.vocab_size = 4096 (its own data directory; compare bits per byte)
  deeper / wider              1.5x its layers / 3 x 384 (32-wide heads)
  seq_warmup   sequence-length warmup (`SequenceLengthWarmup`): the first quarter of the steps
               train on sequences of 1/8, 1/4, then 1/2 the length, the same tokens per step

    python experiments/recipe_ablations.py [--out runs/exp-recipe] [--budget-s 120] [--seeds 2]
                                           [--arms baseline,muon,...] [--arm name=k=v,k=v]
                                           [--preset quickstart] [--threads N]

An override `key*f` is the preset's value times f. Rows land in `rows.jsonl` as they finish; a
rerun skips the arms and seeds already there.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

ARMS = {  # in the order they run: rows are kept as they finish, so a cut-short run has the first
    "baseline": [],
    "muon": ["train.optimizer=muon"],
    "qk_norm": ["model.qk_norm=true"],
    "wsd": ["train.schedule=wsd"],
    "zero_init": ["model.zero_init_projections=true"],
    "relu2": ["model.mlp=relu2", "model.mlp_ratio=4.0"],
    "untied": ["model.tie_embeddings=false"],
    "softcap": ["model.logit_softcap=15.0"],  # Gemma 2 caps at 30 with a vocabulary 30x this one's
    "lr_double": ["train.lr*2"],
    "lr_half": ["train.lr*0.5"],
    "batch_double": ["train.micro_batch*2"],
    "batch_half": ["train.micro_batch*0.5"],
    "deeper": ["model.n_layer*1.5"],
    "wider": ["model.n_layer=3", "model.d_model=384", "model.n_head=12", "model.n_kv_head=6"],
    "vocab_4096": ["tokenizer.vocab_size=4096", "model.vocab_size=4096"],
    "seq_warmup": [],  # not a config key: a loss plug (SequenceLengthWarmup)
}
PROBE_STEPS = 30  # the first 10 are left out of the timing (allocation, warm caches)


def scaled(overrides: list[str], base) -> list[str]:
    """`key*f` as `key=<the preset's value times f>` (an integer stays one); the rest as given."""
    out = []
    for o in overrides:
        key, star, factor = o.partition("*")
        if star and "=" not in key:
            section, name = key.split(".")
            value = getattr(getattr(base, section), name) * float(factor)
            o = f"{key}={round(value) if isinstance(getattr(getattr(base, section), name), int) else value}"
        out.append(o)
    return out


class SequenceLengthWarmup:
    """Sequence-length warmup (Li, Zhang and He 2022, "The Stability-Efficiency Dilemma"): over
    the first `ramp` steps each micro-batch of B sequences of T tokens is trained as B*T/t
    sequences of t tokens, t doubling from T/8 in equal stages; later steps train at T. Tokens
    per step, data order and schedule are the baseline's. It is a loss plug of the trainer (one
    call per micro-batch, `accum` to a step), so it lives here until an ablation earns it a key.
    The attention it saves is a small share of this model's work, so the arm gets the baseline's
    step count and its row shows the seconds it took."""

    def __init__(self, ramp: int, accum: int, seq_len: int, stages: int = 3):
        if seq_len % (1 << stages):
            raise SystemExit(f"seq_warmup: train.seq_len ({seq_len}) must be a multiple of {1 << stages}")
        self.ramp, self.accum, self.seq_len, self.stages, self.calls = max(1, ramp), accum, seq_len, stages, 0

    def length_at(self, step: int) -> int:
        stage = step * self.stages // self.ramp if step < self.ramp else self.stages
        return self.seq_len >> (self.stages - stage)

    def __call__(self, model, x, y):
        t = self.length_at(self.calls // self.accum)
        self.calls += 1
        return model(x.reshape(-1, t), y.reshape(-1, t))


def seconds_per_step(cfg) -> float:
    """Median training seconds per step of a short run of `cfg`, over steps 10 to PROBE_STEPS."""
    from loom.train import train
    from loom.train.report import read_jsonl

    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    train(cfg)
    times = {r["step"]: r["elapsed_s"] for r in read_jsonl(cfg.run_dir / "metrics.jsonl")
             if "elapsed_s" in r and "loss" in r}
    steps = sorted(s for s in times if s >= 10)
    gaps = [(times[b] - times[a]) / (b - a) for a, b in zip(steps, steps[1:])]
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    return statistics.median(gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/exp-recipe"))
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--budget-s", type=float, default=120.0, help="training seconds of every arm")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated names from the list above")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=K=V,K=V",
                    help="an extra arm: a name and its overrides (repeatable)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from common import train_to_the_end

    from loom.config import load_config
    from loom.data import build_dataset
    from loom.eval.bpb import bits_per_byte
    from loom.eval.lm import LoomLM
    from loom.util import atomic_write_text

    arms = {}
    for name in args.arms.split(","):
        if name not in ARMS:
            sys.exit(f"--arms: {name!r} is not an arm; the arms are {', '.join(ARMS)}")
        arms[name] = ARMS[name]
    for spec in args.arm:
        name, _, rest = spec.partition("=")
        if not name or not rest:
            sys.exit(f"--arm {spec!r}: write NAME=key=value,key=value")
        arms[name] = rest.split(",")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    kept = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["arm"], r["seed"]) for r in kept}
    # arms whose configs are the same (baseline and the loss-plug arms) share one probe, so one step count
    probed = {tuple(r["overrides"]): r["probe_seconds_per_step"] for r in kept}
    base = load_config(args.preset, [])
    for name, overrides in arms.items():
        overrides = scaled(overrides, base)
        data = []
        if any(o.startswith("tokenizer.") for o in overrides):  # another tokenizer: its own shards, whose
            data = [f'data.dir="{out}/data-{name}"']  # validation split is the same documents
        common = [f'run.dir="{out}/runs"', 'train.device="cpu"', "train.eval_batches=1000000000",
                  *data, *overrides]
        probe = load_config(args.preset, [*common, f'run.name="{name}-probe"', f"train.steps={PROBE_STEPS}",
                                          f"train.eval_every={PROBE_STEPS}", "train.eval_batches=1",
                                          "train.log_every=1", f"train.ckpt_every={PROBE_STEPS}",
                                          "train.warmup_steps=5"])
        shards = build_dataset(probe)  # bits per byte on its validation split: the same documents for every arm
        for seed in range(1, args.seeds + 1):
            if (name, seed) in done:
                continue
            step_s = probed.get(tuple(overrides)) or seconds_per_step(probe)
            probed[tuple(overrides)] = step_s
            steps = max(PROBE_STEPS, math.floor(args.budget_s / step_s))
            # warmup keeps its share of the preset's schedule
            warmup = max(1, round(base.train.warmup_steps * steps / base.train.steps))
            cfg = load_config(args.preset, [*common, f'run.name="{name}-seed{seed}"', f"run.seed={seed}",
                                            f"train.steps={steps}", f"train.warmup_steps={warmup}",
                                            f"train.eval_every={steps}", f"train.ckpt_every={steps}"])
            shutil.rmtree(cfg.run_dir, ignore_errors=True)
            started = time.time()
            plugs = {}
            if name == "seq_warmup":
                accum = max(1, cfg.train.batch_tokens // (cfg.train.micro_batch * cfg.train.seq_len))
                plugs["loss"] = SequenceLengthWarmup(steps // 4, accum, cfg.train.seq_len)
            summary = train_to_the_end(cfg, **plugs)
            figures = bits_per_byte(LoomLM.from_run(cfg.run_dir), shards, "val",
                                    max_bytes_per_domain=100_000)
            row = {"arm": name, "seed": seed, "overrides": overrides, "steps": steps,
                   "probe_seconds_per_step": round(step_s, 4), "train_seconds": round(summary["train_seconds"], 1),
                   "parameters": summary["parameters"], "tokens": summary["tokens"],
                   "val_loss": summary["final_val_loss"], "bits_per_byte": figures["all"]["bits_per_byte"],
                   "bits_per_byte_of": figures["all"]["bytes"],
                   "wall_seconds": round(time.time() - started, 1)}
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[exp] {name} seed {seed}: {steps} steps in {row['train_seconds']:.0f} s, val loss "
                  f"{row['val_loss']:.4f}, {row['bits_per_byte']:.4f} bits per byte", file=sys.stderr, flush=True)
            shutil.rmtree(cfg.run_dir / "checkpoints", ignore_errors=True)  # the rows are what is kept

    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    table = ablation_table(rows, args)
    atomic_write_text(out / "table.md", table)
    print(table, end="")


def ablation_table(rows: list[dict], args) -> str:
    by_arm: dict[str, list[dict]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    base = by_arm.get("baseline")
    base_bpb = statistics.mean(r["bits_per_byte"] for r in base) if base else None
    lines = [f"preset {args.preset}, {args.budget_s:.0f} s of training per run, seeds 1..{args.seeds}; validation "
             "loss on the whole validation split, bits per byte on its documents (100 KB per domain)\n",
             "| arm | steps | train s | parameters | val loss (per seed) | bits per byte (mean) "
             "| vs baseline (bits per byte) |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for name, arm_rows in by_arm.items():
        arm_rows.sort(key=lambda r: r["seed"])
        bpb = statistics.mean(r["bits_per_byte"] for r in arm_rows)
        delta = "" if base_bpb is None or name == "baseline" else f"{bpb - base_bpb:+.4f}"
        steps = ", ".join(str(r["steps"]) for r in arm_rows)
        seconds = ", ".join(f"{r['train_seconds']:.0f}" for r in arm_rows)
        losses = ", ".join(f"{r['val_loss']:.4f}" for r in arm_rows)
        lines.append(f"| {name} | {steps} | {seconds} | {arm_rows[0]['parameters']:,} | {losses} | {bpb:.4f} | "
                     f"{delta} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
