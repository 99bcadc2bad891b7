"""Decode speed: loom's one-row `generate`, loom's `StaticDecoder` (static cache, compiled
single-token step) and transformers' `generate` with a static cache, on the same weights, in
one run.

The weights are a loom model of a preset's shape (`--preset quickstart`, or `gpt2-124m` on a
GPU) with random weights, or a trained run's (`--run`); transformers gets them as a
`LlamaForCausalLM` built from the names and config fields `loom export hf` writes
(`loom.export.hf.hf_names`, `llama_shape`), so both libraries run the same matrices. Every
row decodes greedily exactly `--new` tokens (no stop token) after a prompt of `--prompt` random
ids; prompts of one batch have the same length, so transformers needs no padding. Paths:

- `loom generate`: today's path, a Python loop over a growing cache, one row at a time (a batch
  of 8 is 8 calls one after another, as a caller without a batched decoder would make them);
- `loom static`: `StaticDecoder`, each prompt prefilled in one pass, the batch decoded together
  by a step compiled once (`torch.compile`; mode "reduce-overhead", CUDA graphs, on CUDA), its
  cache sized to prompt + new tokens;
- `hf static`: `model.generate(..., cache_implementation="static")`, transformers' own
  static-cache path at its defaults (which compile the step on their own where they choose to);
- `hf dynamic`: `model.generate` at its defaults, for scale.

Each path is timed `--rounds` times, the rounds interleaved (a noisy machine then slows every
path alike), after one warm-up call per path and batch that is not timed (compilation);
printed: the median tokens/s (rows x new tokens over the call's wall time, prefill included),
the ratio to `hf static`, the warm-up's seconds, and whether the path's greedy tokens equal
`loom generate`'s (random weights leave near-ties, so a rare float-order difference between
libraries can flip one; loom's two paths are tested equal in tests/model/test_static_decode.py).

    python bench/decode_throughput.py [--preset quickstart] [--run RUN] [--batch 1,8]
                                      [--prompt 32] [--new 128] [--rounds 3] [--device cpu]
                                      [--dtype float32] [--threads N]

Read the ratios: the machine is shared and absolute figures move with its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quickstart", help="the shape of a random-weights model")
    ap.add_argument("--run", type=Path, help="a trained dense run to take the weights from instead")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    dtype = DTYPES[args.dtype]

    loom_model = load_loom(args).to(args.device, dtype).eval()
    cfg = loom_model.cfg
    if args.prompt + args.new > cfg.max_seq_len:
        sys.exit(f"--prompt {args.prompt} + --new {args.new} exceed the model's max_seq_len {cfg.max_seq_len}")
    hf_model = as_transformers(loom_model).to(args.device, dtype).eval()
    print(f"model: {loom_model.num_params():,} parameters ({cfg.n_layer} layers, d_model {cfg.d_model}, vocab "
          f"{cfg.vocab_size}), {args.dtype} on {args.device}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; prompt {args.prompt}, {args.new} new tokens per row, greedy, {args.rounds} rounds")

    print("\n| batch | path | tokens/s | vs hf static | warm-up s | tokens = loom generate |")
    print("|---:|---|---:|---:|---:|---|")
    for batch in batches:
        time_batch(loom_model, hf_model, batch, args)


def time_batch(loom_model, hf_model, batch: int, args) -> None:
    """Every path on one batch of prompts: a warm-up call each, then interleaved timed rounds."""
    from loom.model import StaticDecoder

    gen = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, loom_model.cfg.vocab_size, (batch, args.prompt), generator=gen).tolist()
    decoder = StaticDecoder(loom_model, batch, max_len=args.prompt + args.new, compile=True)
    paths = {
        "loom generate": lambda: loom_one_at_a_time(loom_model, prompts, args.new),
        "loom static": lambda: decoder.generate(prompts, args.new),
        "hf static": lambda: hf_generate(hf_model, prompts, args.new, args.device, "static"),
        "hf dynamic": lambda: hf_generate(hf_model, prompts, args.new, args.device, None),
    }
    warmup, tokens, times = {}, {}, {name: [] for name in paths}
    for name, run in paths.items():
        warmup[name], tokens[name] = timed(run, args.device)
    for _ in range(args.rounds):
        for name, run in paths.items():
            seconds, out = timed(run, args.device)
            times[name].append(seconds)
            tokens[name] = out
    rate = {name: batch * args.new / statistics.median(t) for name, t in times.items()}
    reference = tokens["loom generate"]
    for name in paths:
        same = "yes" if tokens[name] == reference else _agreement(tokens[name], reference)
        print(f"| {batch} | {name} | {rate[name]:,.0f} | {rate[name] / rate['hf static']:.2f}x | "
              f"{warmup[name]:.1f} | {same} |", flush=True)


def load_loom(args):
    from loom.config import load_config
    from loom.model import GPT

    if args.run:
        from loom.checkpoint import load_trained_model

        model, _, cfg = load_trained_model(args.run)
        if cfg.model.moe.enabled:
            sys.exit(f"{args.run} is a Mixture-of-Experts run; transformers has no exact counterpart, use a dense run")
        return model
    torch.manual_seed(0)
    return GPT(load_config(args.preset, []).model)


def as_transformers(loom_model):
    """The same weights as a transformers `LlamaForCausalLM`, as `loom export hf` would write them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from loom.export.hf import hf_names, llama_refusal, llama_shape

    cfg = loom_model.cfg
    if refusal := llama_refusal(cfg):
        sys.exit(f"the preset's model: {refusal}")
    hf = LlamaForCausalLM(LlamaConfig(**llama_shape(cfg), bos_token_id=None, eos_token_id=None, pad_token_id=None))
    params = dict(loom_model.named_parameters(remove_duplicate=False))
    state = {theirs: params[ours].detach() for ours, theirs in hf_names(cfg.n_layer, cfg.tie_embeddings).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        sys.exit(f"the weights do not map onto LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    if cfg.tie_embeddings:
        hf.tie_weights()
    return hf


def loom_one_at_a_time(model, prompts, new):
    from loom.model import generate

    return [list(generate(model, p, new, temperature=0)) for p in prompts]


@torch.no_grad()
def hf_generate(model, prompts, new, device, cache_implementation):
    ids = torch.tensor(prompts, device=device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, cache_implementation=cache_implementation, pad_token_id=0)
    return out[:, ids.shape[1]:].tolist()


def timed(run, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def _agreement(rows, reference) -> str:
    same = sum(a == b for row, ref in zip(rows, reference) for a, b in zip(row, ref))
    return f"{same}/{sum(len(r) for r in reference)} tokens"


if __name__ == "__main__":
    main()
