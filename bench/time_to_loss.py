"""Time to loss: loom's quickstart training against a GPT-2-recipe reference on the same data,
tokens and batch, in one run.

loom trains as `loom quickstart` does (`loom.train.train` on the `quickstart` preset, whatever
its model, optimizer and schedule are today), on the quickstart's own shards. The reference is
written here the way nanoGPT trains GPT-2 (Radford et al. 2019; Karpathy's nanoGPT): learned
absolute positions, pre-LayerNorm blocks with biases, full multi-head attention, a GELU MLP of
4x width, a tied head, N(0, 0.02) initialisation with the residual projections scaled by
1/sqrt(2L), AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), linear warmup and cosine
decay, gradient clipping at 1.0. Its width and depth are loom's; its learning rate, warmup and
steps are the preset's (`--ref-lr` to change the rate). Both read the same training windows in
the same order (`loom.data.ShardLoader`, the preset's seed) for the same number of steps.

Validation is the whole validation split, for both, at every `--eval-every` steps and at the
end; training time excludes it. Reported: parameters, final validation loss, training seconds,
the seconds each needed to first reach the reference's final validation loss (linear between
validation points; "not reached" if it never did), and the validation loss each had at loom's
final training time (the reference's interpolated there), and how many of `--samples` samples
of each (the quickstart's prompt and sampling settings, seeds 0 to n-1) parse with `ast.parse`
once cut after their last complete line. The two runs go one after the other
(loom first): read the ratios, and rerun on a quiet machine before trusting small differences.

    python bench/time_to_loss.py [--out runs/bench-time-to-loss] [--preset quickstart]
                                 [--steps N] [--eval-every 50] [--ref-lr LR] [--samples 20]
                                 [--threads N]
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# The reference: GPT-2's recipe at loom's width and depth
# ---------------------------------------------------------------------------------------------


class GPT2Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, vocab_size: int, max_seq_len: int, n_layer: int, n_head: int, d: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d)
        self.wpe = nn.Embedding(max_seq_len, d)
        self.blocks = nn.ModuleList(GPT2Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:  # GPT-2: residual projections scaled down by the depth
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The mean next-token loss against `targets`, or without them the logits."""
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))


def gpt2_optimizer(model: nn.Module, lr: float) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def warmup_cosine(step: int, lr: float, warmup: int, steps: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def whole_split_loss(model: nn.Module, shards: Path, seq_len: int, batch: int) -> float:
    """Mean next-token loss over every window of the validation split."""
    from loom.data import ShardLoader

    loader = ShardLoader(shards, "val", seq_len, batch, seed=0)
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(loader.batches_per_epoch):
        x, y = loader.next_batch()
        total += float(model(x, y))
    model.train(was_training)
    return total / loader.batches_per_epoch


def train_reference(cfg, shards: Path, steps: int, eval_every: int, lr: float, accum: int) -> dict:
    from loom.data import ShardLoader

    t, m = cfg.train, cfg.model
    torch.manual_seed(cfg.run.seed)
    model = GPT2(m.vocab_size, t.seq_len, m.n_layer, m.n_head, m.d_model)
    optimizer = gpt2_optimizer(model, lr)
    batches = ShardLoader(shards, "train", t.seq_len, t.micro_batch, seed=cfg.run.seed)  # the trainer's order
    curve, seconds = [(0, 0.0, whole_split_loss(model, shards, t.seq_len, t.micro_batch))], 0.0
    for step in range(steps):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, lr, t.warmup_steps, steps, t.min_lr_ratio)
        for _ in range(accum):
            x, y = batches.next_batch()
            (model(x, y) / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - started
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append((step + 1, seconds, whole_split_loss(model, shards, t.seq_len, t.micro_batch)))
            print(f"[bench] reference step {step + 1}/{steps}  val_loss {curve[-1][2]:.4f}  {seconds:.0f}s",
                  file=sys.stderr, flush=True)
    return {"parameters": sum(p.numel() for p in model.parameters()), "curve": curve, "model": model}


def train_loom(cfg, steps: int, eval_every: int) -> dict:
    """The quickstart's own training, its validation made the whole split: an eval_batches larger
    than the split takes every window once (`Validator`)."""
    from loom.train import train
    from loom.train.report import read_jsonl

    summary = train(cfg)
    curve = [(r["step"], r["elapsed_s"], r["val_loss"]) for r in read_jsonl(cfg.run_dir / "metrics.jsonl")
             if "val_loss" in r]
    return {"parameters": summary["parameters"], "curve": curve, "tokens": summary["tokens"]}


def parses(text: str) -> bool:
    """Whether a sample, cut after its last complete line, is Python that `ast.parse` takes; a
    sample with no complete line does not count."""
    complete = text[: text.rfind("\n")] if "\n" in text else ""
    if not complete.strip():
        return False
    try:
        ast.parse(complete)
    except (SyntaxError, ValueError):  # ValueError: a null byte
        return False
    return True


def loom_samples(cfg, n: int) -> list[str]:
    """The quickstart's closing sample (`loom.pipeline.sample_from_run`), with seeds 0 to n-1."""
    from loom.pipeline import sample_from_run

    s = cfg.sample
    return [s.prompt + "".join(sample_from_run(cfg.run_dir, s.prompt, s, seed=seed)) for seed in range(n)]


@torch.no_grad()
def reference_samples(model: GPT2, cfg, n: int) -> list[str]:
    """The same sampling settings from the reference: no cache, the context cropped to its length."""
    from loom.data import tokenizer_path
    from loom.model.generate import sample_next
    from loom.tokenizer import Tokenizer

    tok, s, texts = Tokenizer.from_file(tokenizer_path(cfg)), cfg.sample, []
    model.eval()
    for seed in range(n):
        generator = torch.Generator().manual_seed(seed)
        ids, new = [tok.bos_id, *tok.encode(s.prompt)], []
        for _ in range(s.max_new_tokens):
            logits = model(torch.tensor([(ids + new)[-cfg.train.seq_len:]]))[:, -1]
            token = int(sample_next(logits, s.temperature, s.top_k, s.top_p, generator))
            if token == tok.eos_id:
                break
            new.append(token)
        texts.append(s.prompt + tok.decode(new))
    return texts


def seconds_to_reach(curve: list[tuple[int, float, float]], target: float) -> float | None:
    """Training seconds at which the validation curve first reaches `target`, linear between points."""
    for (_, t0, l0), (_, t1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1) if l0 > target else t0
    return None


def loss_at(curve: list[tuple[int, float, float]], seconds: float) -> float:
    """The validation loss the curve had at `seconds` of training (linear between points; the
    last point past its end)."""
    for (_, t0, l0), (_, t1, l1) in zip(curve, curve[1:]):
        if t0 <= seconds <= t1:
            return l0 + (l1 - l0) * (seconds - t0) / max(t1 - t0, 1e-9)
    return curve[-1][2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-time-to-loss"))
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--steps", type=int, help="training steps of each (default: the preset's)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--ref-lr", type=float, help="the reference's peak learning rate (default: the preset's)")
    ap.add_argument("--samples", type=int, default=20, help="samples of each checked with ast.parse")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from loom.util import keep_freed_memory

    keep_freed_memory()  # as loom's trainer does on a CPU; the reference, in this process too, gets it alike

    from loom.config import load_config
    from loom.data import build_dataset
    from loom.util import atomic_write_text

    out = args.out.resolve()
    overrides = [f'run.dir="{out}/runs"', 'run.name="loom"', "train.eval_batches=1000000000",
                 f"train.eval_every={args.eval_every}", 'train.device="cpu"']
    if args.steps:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(args.preset, overrides)
    if cfg.model.moe.enabled:
        sys.exit(f"preset {args.preset} is a Mixture-of-Experts model; the reference is dense: use a dense preset")
    shards = build_dataset(cfg)  # the preset's data dir: the quickstart's shards, built once
    steps = cfg.train.steps
    accum = max(1, cfg.train.batch_tokens // (cfg.train.micro_batch * cfg.train.seq_len))

    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # a fresh run each time, not a resumed or finished one
    started = time.time()
    loom = train_loom(cfg, steps, args.eval_every)
    ref = train_reference(cfg, shards, steps, args.eval_every, args.ref_lr or cfg.train.lr, accum)
    loom["samples"] = loom_samples(cfg, args.samples)
    ref["samples"] = reference_samples(ref.pop("model"), cfg, args.samples)
    target = ref["curve"][-1][2]
    budget = loom["curve"][-1][1]  # loom's training seconds for the preset's steps
    rows = []
    for name, run in (("loom", loom), ("reference (GPT-2 recipe)", ref)):
        reach = seconds_to_reach(run["curve"], target)
        rows.append({"name": name, "parameters": run["parameters"], "final_val_loss": run["curve"][-1][2],
                     "train_seconds": run["curve"][-1][1], "seconds_to_reference_loss": reach,
                     "val_loss_at_loom_seconds": loss_at(run["curve"], budget), "curve": run["curve"],
                     "samples_that_parse": sum(map(parses, run["samples"])), "samples": run["samples"]})
    tokens = steps * accum * cfg.train.micro_batch * cfg.train.seq_len
    lines = [f"preset {args.preset}: {steps} steps of {tokens // steps:,} tokens ({tokens:,} in all) for each, on "
             f"{torch.get_num_threads()} CPU threads; validation on the whole validation split; "
             f"{time.time() - started:.0f} s in all\n",
             "| model | parameters | final val loss | train s | s to reach the reference's final loss | "
             f"val loss at {budget:.0f} s | samples that parse |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        reach = "not reached" if r["seconds_to_reference_loss"] is None else f"{r['seconds_to_reference_loss']:.0f}"
        lines.append(f"| {r['name']} | {r['parameters']:,} | {r['final_val_loss']:.3f} | {r['train_seconds']:.0f} | "
                     f"{reach} | {r['val_loss_at_loom_seconds']:.3f} | {r['samples_that_parse']}/{args.samples} |")
    loom_reach, ref_seconds = rows[0]["seconds_to_reference_loss"], rows[1]["train_seconds"]
    if loom_reach is not None:
        lines.append(f"\nloom reached the reference's final loss in {loom_reach / ref_seconds:.2f}x the reference's "
                     "training time")
    table = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", table)
    atomic_write_text(out / "rows.json", json.dumps(rows, indent=2) + "\n")
    print(table, end="")


if __name__ == "__main__":
    main()
