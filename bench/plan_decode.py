"""What constrained decoding of plans costs: a model writing plans under `PlanDecoder` against the
same model writing the same number of tokens with nothing masked, in one run.

The model has the quickstart's shape and vocabulary size (4 layers, d_model 256, a byte-level
BPE of `--vocab` tokens trained on the standard library here), with random weights: the cost of
the mask does not depend on what the weights say, and a random model writes plans of every
shape. For each seed, loom writes one plan (sampled, temperature 1, `--max-tokens` at most)
through `LoomBackend.complete_constrained`; the reference then generates exactly as many tokens
from the same prompt through the same `LoomLM.generate_masked` with an all-true mask, so the
two differ only in the grammar's work. Printed: tokens/s of each, their ratio, and the
grammar's own time per token (mask and advance, grammar rebuilds at line breaks included).

    python bench/plan_decode.py [--plans 10] [--vocab 8192] [--max-tokens 400]

Read the ratio: the machine is shared and absolute figures move with its load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plans", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--max-tokens", type=int, default=400)
    args = ap.parse_args()

    from loom.config import ModelConfig
    from loom.eval.lm import LoomLM
    from loom.model import GPT
    from loom.reason.backends import GenerationSettings
    from loom.reason.backends.loom_run import LoomBackend
    from loom.reason.constrained import PlanDecoder
    from loom.reason.planner import CODE_PLAN
    from loom.tokenizer import train_tokenizer

    stdlib = Path(sys.modules["os"].__file__).parent
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.rglob("*.py"))[:400]]
    tok = train_tokenizer(texts, args.vocab)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, n_layer=4, n_head=8, n_kv_head=4, d_model=256,
                            max_seq_len=1024, tie_embeddings=True))
    lm = LoomLM(model, tok)
    backend = LoomBackend.from_lm(lm)
    grammar_seconds = [0.0]

    class TimedDecoder(PlanDecoder):
        def mask(self, state):
            t = time.perf_counter()
            try:
                return super().mask(state)
            finally:
                grammar_seconds[0] += time.perf_counter() - t

        def advance(self, state, token):
            t = time.perf_counter()
            try:
                super().advance(state, token)
            finally:
                grammar_seconds[0] += time.perf_counter() - t

    prompt = CODE_PLAN.format(question='Take the last letter of each word in "apple banana cherry" and join them.')
    ids = [tok.bos_id, *tok.encode(prompt)]
    loom_tokens = loom_seconds = ref_seconds = 0.0
    ended = 0
    everything = np.ones(tok.vocab_size, dtype=bool)
    everything[tok.eos_id] = False  # the reference writes as many tokens as the plan had, no fewer
    for seed in range(args.plans):
        t = time.perf_counter()
        _, done, c = backend.complete_constrained(prompt, TimedDecoder,
                                                  GenerationSettings(max_tokens=args.max_tokens, temperature=1.0,
                                                                     seed=seed))
        loom_seconds += time.perf_counter() - t
        loom_tokens += c.completion_tokens
        ended += done
        t = time.perf_counter()
        lm.generate_masked(ids, c.completion_tokens, lambda: everything, lambda token: None, 1.0, seed)
        ref_seconds += time.perf_counter() - t

    rate, ref_rate = loom_tokens / loom_seconds, loom_tokens / ref_seconds
    print(f"{args.plans} plans, {int(loom_tokens)} tokens ({ended} reached answer(...)), vocabulary {tok.vocab_size}, "
          f"model 4x256, CPU threads {torch.get_num_threads()}\n")
    print("| | tokens/s | ms / token |")
    print("|---|---:|---:|")
    print(f"| loom, constrained (PlanDecoder) | {rate:.1f} | {1000 / rate:.2f} |")
    print(f"| reference, same tokens unconstrained | {ref_rate:.1f} | {1000 / ref_rate:.2f} |")
    print(f"| grammar's share (mask + advance) | | {1000 * grammar_seconds[0] / loom_tokens:.2f} |")
    print(f"\nloom / reference: {rate / ref_rate:.2f}x")


if __name__ == "__main__":
    main()
