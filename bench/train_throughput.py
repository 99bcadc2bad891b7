"""Training throughput of loom's GPT against a plain-PyTorch reference of the same shape.

What it measures: full training steps (forward with the loss, backward, AdamW step, zero_grad)
of loom's `GPT` and of `RefGPT` below, a straightforward nanoGPT-style model with the same
architecture, shapes and parameter count (RoPE, RMSNorm, grouped-query attention, SwiGLU, tied
head), on the same random batch and with the same optimizer hyper-parameters.

  case a (always):     the `quickstart` preset on the CPU, fp32, micro_batch x seq_len tokens per step;
  case b (CUDA only):  the `gpt2-124m` preset at 16 x 1024, bf16 autocast, torch.compile, fused AdamW;
                       with `--float8`, also loom with its blocks' projections in float8
                       (`train.float8`, torchao), its MFU still against the bf16 peak;
  case c (always):     loom's layouts over two processes (`torchrun`, gloo on the CPU): DDP,
                       FSDP2 (`parallel.dp_shard = 2`) and tensor parallel (`parallel.tp = 2`)
                       of the `quickstart` preset, each rank a micro-batch of its own (the two
                       tp ranks share one), timed in interleaved rounds in the same processes;
                       the ratio is tokens/s against DDP's.

For each it reports tokens/s, MFU and the loom/reference ratio of tokens/s. Training FLOPs per
token follow PaLM appendix B (Chowdhery et al. 2022): 6N + 12·L·d·T, with N the parameters used
in matrix products (loom's `num_matmul_params`), L layers, width d and sequence length T; the
reference has the same shapes, so the same count. MFU is tokens/s times that, over the peak
matrix-product rate measured in the same run (an fp32 matmul on the CPU, a bf16 matmul on CUDA).

The machine this runs on is often shared and noisy, so absolute numbers move from run to run.
The two models are therefore timed side by side, in interleaved rounds whose order alternates,
and the number to read is the ratio: noise hits both implementations alike.

    python bench/train_throughput.py [--cases a,b,c] [--steps N] [--rounds N] [--threads N] [--float8]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from loom.config import load_config
from loom.model import GPT, ModelConfig
from loom.train.cost import device_name, matmul_peak
from loom.train.optim import autocast_context, make_optimizer
from loom.train.parallelize import float8_matmuls
from loom.util import keep_freed_memory

# the model step both sides take: AdamW whatever the preset trains with (Muon is not the model)
ADAMW = ["train.optimizer=adamw"]

SEED = 1337

# ---------------------------------------------------------------------------------------------
# The reference: a plain nanoGPT-style model of loom's architecture
# ---------------------------------------------------------------------------------------------


def rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).type_as(x)


class RefBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd = cfg.d_model, cfg.head_dim
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, hd
        self.norm1 = nn.RMSNorm(d, eps=cfg.norm_eps)
        self.q = nn.Linear(d, cfg.n_head * hd, bias=False)
        self.k = nn.Linear(d, cfg.n_kv_head * hd, bias=False)
        self.v = nn.Linear(d, cfg.n_kv_head * hd, bias=False)
        self.proj = nn.Linear(cfg.n_head * hd, d, bias=False)
        self.norm2 = nn.RMSNorm(d, eps=cfg.norm_eps)
        self.gate = nn.Linear(d, cfg.mlp_hidden, bias=False)
        self.up = nn.Linear(d, cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.norm1(x)
        q = self.q(h).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k(h).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v(h).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = rotate_half(q, cos, sin), rotate_half(k, cos, sin)
        if self.n_head != self.n_kv_head:  # GQA: every kv head serves a group of query heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class RefGPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(RefBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        angles = torch.outer(torch.arange(cfg.max_seq_len).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x, self.cos[:T], self.sin[:T])
        logits = self.head(self.norm(x)).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def interleaved_times(step_fns: dict[str, Callable[[], object]], steps: int, rounds: int, sync) -> dict[str, float]:
    """Median seconds per step of each function, timed in `rounds` rounds of `steps` steps
    each, the implementations alternating and the order of each round reversed from the last."""
    names = list(step_fns)
    per_step: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                step_fns[name]()
            sync()
            per_step[name].append((time.perf_counter() - t0) / steps)
    return {name: statistics.median(times) for name, times in per_step.items()}


def run_case(
    preset: str, device: torch.device, batch: int, seq_len: int, amp: bool, compile_: bool,
    steps: int, rounds: int, warmup: int, float8: bool = False,
) -> dict:
    cfg = load_config(preset, ADAMW)
    mcfg, t = cfg.model, cfg.train
    torch.manual_seed(SEED)
    loom_model = GPT(mcfg).to(device)
    torch.manual_seed(SEED)
    ref_model = RefGPT(mcfg).to(device)
    n_loom, n_ref = loom_model.num_params(), sum(p.numel() for p in ref_model.parameters())
    if n_loom != n_ref:
        raise RuntimeError(f"{preset}: the reference has {n_ref:,} parameters but loom's GPT {n_loom:,}; "
                           "the two models are not the same shape, so the comparison would be meaningless")

    loom_opt = make_optimizer(loom_model, cfg.train, device)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
                                weight_decay=t.weight_decay, fused=device.type == "cuda")

    generator = torch.Generator().manual_seed(SEED)
    tokens = torch.randint(mcfg.vocab_size, (batch, seq_len + 1), generator=generator).to(device)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def loom_amp():
        return autocast_context(device, "bfloat16" if amp else "float32")

    def ref_amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def make_step(model, opt, amp_context):
        forward = torch.compile(model) if compile_ else model

        def step():
            with amp_context():
                loss = forward(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        return step

    step_fns = {"loom": make_step(loom_model, loom_opt, loom_amp), "reference": make_step(ref_model, ref_opt, ref_amp)}
    if float8:
        torch.manual_seed(SEED)
        fp8_model = GPT(mcfg).to(device)
        float8_matmuls(fp8_model)
        step_fns["loom float8"] = make_step(fp8_model, make_optimizer(fp8_model, cfg.train, device), loom_amp)
    first_loss = {}
    for name, step in step_fns.items():
        first_loss[name] = step().item()
        for _ in range(warmup - 1):
            step()
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    seconds = interleaved_times(step_fns, steps, rounds, sync)
    return {
        "preset": preset, "batch": batch, "seq_len": seq_len, "params": n_loom,
        "flops_per_token": loom_model.flops_per_token(seq_len), "seconds": seconds,
        "first_loss": first_loss, "uniform_loss": math.log(mcfg.vocab_size),
    }


def layouts_worker(steps: int, rounds: int, warmup: int) -> None:
    """Case c, on each rank under torchrun: DDP, FSDP2 and tensor parallel steps of the
    quickstart model, interleaved; rank 0 prints the median seconds per step as JSON."""
    import json

    import torch.distributed as dist

    from loom.config import ParallelConfig
    from loom.train.distributed import init_distributed
    from loom.train.parallelize import data_coordinates, plan_for

    cfg = load_config("quickstart", ADAMW)
    t = cfg.train
    info = init_distributed("cpu")
    layouts = {"DDP": ParallelConfig(), "dp_shard=2": ParallelConfig(dp_shard=2), "tp=2": ParallelConfig(tp=2)}
    step_fns, tokens_per_step = {}, {}
    for name, p in layouts.items():
        with torch.device("meta"):
            model = GPT(cfg.model)
        train_model = plan_for(p, info, SEED)(model, info, t)
        opt = make_optimizer(model, t, info.device)
        data_rank, data_ranks = data_coordinates(p, info.world_size, info.rank)
        generator = torch.Generator().manual_seed(SEED + data_rank)
        tokens = torch.randint(cfg.model.vocab_size, (t.micro_batch, t.seq_len + 1), generator=generator)
        tokens_per_step[name] = t.micro_batch * t.seq_len * data_ranks

        x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

        def step(train_model=train_model, opt=opt, x=x, y=y):
            train_model(x, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        step_fns[name] = step
    seconds = interleaved_times(step_fns, steps, rounds, dist.barrier)
    if info.rank == 0:
        print("RESULT " + json.dumps({"seconds": seconds, "tokens_per_step": tokens_per_step,
                                      "flops_per_token": model.flops_per_token(t.seq_len)}), flush=True)
    dist.destroy_process_group()


def run_layouts(steps: int, rounds: int, warmup: int) -> dict:
    import json
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
               "--layouts-worker", str(steps), str(rounds), str(warmup)]
    threads = str(max(1, torch.get_num_threads() // 2))
    out = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "OMP_NUM_THREADS": threads})
    if out.returncode:
        raise SystemExit(f"case c: torchrun exited {out.returncode}\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="a,b,c", help="comma-separated, of a, b, c (default: all)")
    parser.add_argument("--layouts-worker", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default: a 3, b 10)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per implementation")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: a 2, b 3)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--float8", action="store_true", help="case b: also loom with train.float8 (needs torchao)")
    args = parser.parse_args()
    if args.layouts_worker:
        layouts_worker(*args.layouts_worker)
        return
    cases = set(args.cases.split(","))
    if not cases or cases - {"a", "b", "c"}:
        raise SystemExit(f"--cases {args.cases}: use a comma-separated list of a, b and c")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as loom's trainer does on a CPU, for both models (one process)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")

    results, peaks = [], {}
    if "a" in cases or "c" in cases:
        cpu = torch.device("cpu")
        peaks["a"] = matmul_peak(cpu)
        print(f"case a device: {device_name(cpu)}; fp32 2048^2 matmul peak {peaks['a'] / 1e9:.1f} GFLOP/s")
        cfg = load_config("quickstart", ADAMW).train
    if "a" in cases:
        results.append(("a", run_case("quickstart", cpu, cfg.micro_batch, cfg.seq_len, amp=False, compile_=False,
                                      steps=args.steps or 3, rounds=args.rounds, warmup=args.warmup or 2)))
    if "b" in cases:
        if not torch.cuda.is_available():
            print("case b: skipped (no CUDA device)")
        else:
            gpu = torch.device("cuda")
            peaks["b"] = matmul_peak(gpu)
            print(f"case b device: {device_name(gpu)}; bf16 8192^2 matmul peak {peaks['b'] / 1e12:.1f} TFLOP/s")
            results.append(("b", run_case("gpt2-124m", gpu, 16, 1024, amp=True, compile_=True,
                                          steps=args.steps or 10, rounds=args.rounds, warmup=args.warmup or 3,
                                          float8=args.float8)))

    layouts = run_layouts(args.steps or 3, args.rounds, args.warmup or 2) if "c" in cases else None

    if results:
        print()
        print("| case | preset | batch x seq | impl | ms/step | tokens/s | MFU | loom/ref |")
        print("|---|---|---|---|---:|---:|---:|---:|")
    for case, r in results:
        tokens = r["batch"] * r["seq_len"]
        rate = {name: tokens / s for name, s in r["seconds"].items()}
        for name, s in r["seconds"].items():
            mfu = rate[name] * r["flops_per_token"] / peaks[case]
            ratio = f"{rate[name] / rate['reference']:.3f}" if name != "reference" else ""
            print(f"| {case} | {r['preset']} | {r['batch']} x {r['seq_len']} | {name} | {s * 1e3:.1f} "
                  f"| {rate[name]:,.0f} | {mfu:.1%} | {ratio} |")
    if layouts:
        print("\n| case | preset, 2 processes | layout | tokens/step | ms/step | tokens/s | MFU | vs DDP |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        rate = {name: layouts["tokens_per_step"][name] / s for name, s in layouts["seconds"].items()}
        for name, s in layouts["seconds"].items():
            mfu = rate[name] * layouts["flops_per_token"] / (2 * peaks["a"])  # two processes' peak
            print(f"| c | quickstart | {name} | {layouts['tokens_per_step'][name]:,} | {s * 1e3:.1f} | "
                  f"{rate[name]:,.0f} | {mfu:.1%} | {rate[name] / rate['DDP']:.3f} |")
    for case, r in results:
        losses = ", ".join(f"{name} {loss:.3f}" for name, loss in r["first_loss"].items())
        print(f"\ncase {case}: {r['params'] / 1e6:.2f}M parameters, {r['flops_per_token'] / 1e6:.1f} MFLOP/token; "
              f"first-step loss {losses} (uniform: ln V = {r['uniform_loss']:.3f})", end="")
    print(f"\n\ntotal time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
