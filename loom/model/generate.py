"""Autoregressive generation: temperature, top-k and top-p sampling over a key/value cache.

With the cache, the prompt is run once (prefill) and each new token costs one position's
forward pass. When the context reaches the model's `max_seq_len`, the cache is rebuilt from
the most recent half of the context (rotary positions are relative, so re-numbering from zero
is harmless) and generation goes on. Without the cache (`use_cache=False`), every step runs the
whole context, cropped to `max_seq_len`: slower, and the reference the cache is tested against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from loom.model.gpt import GPT, KVCache


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Picks one token per row of logits (B, V): greedy when temperature is 0."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    # Top-k keeps the k largest, sorted (k is small: cheaper than sorting the whole vocabulary);
    # top-p then needs them in order, so without top-k it sorts.
    indices = None
    if 0 < top_k < logits.size(-1):
        logits, indices = torch.topk(logits, top_k, dim=-1)
    elif top_p < 1.0:
        logits, indices = torch.sort(logits, descending=True, dim=-1)
    if top_p < 1.0:
        probs = logits.softmax(dim=-1)
        # Drop a token once the tokens before it already cover top_p; the first always stays.
        logits = logits.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, float("-inf"))
    choice = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
    return (choice if indices is None else indices.gather(-1, choice)).squeeze(-1)


@torch.no_grad()
def generate(
    model: GPT,
    prompt: Sequence[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yields up to `max_new_tokens` token ids continuing `prompt`, one at a time, stopping
    after any id in `stop_ids` (which is yielded)."""
    if len(prompt) == 0:
        raise ValueError("the prompt must hold at least one token (e.g. <|bos|>)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    max_len = model.cfg.max_seq_len
    context = list(prompt)
    cache = None
    try:
        for _ in range(max_new_tokens):
            if use_cache:
                if cache is None or cache.length >= max_len:
                    cache = KVCache(model.cfg, 1, max_len, device, next(model.parameters()).dtype)
                    window = context[-(max_len // 2 if len(context) >= max_len else max_len):]
                    logits = model(torch.tensor([window], device=device), cache=cache)
                else:
                    logits = model(torch.tensor([[context[-1]]], device=device), cache=cache)
            else:
                logits = model(torch.tensor([context[-max_len:]], device=device))
            token = int(sample_next(logits[:, -1, :], temperature, top_k, top_p, generator))
            context.append(token)
            yield token
            if token in stop_ids:
                return
    finally:
        model.train(was_training)


class StaticDecoder:
    """Decodes a batch of prompts together, one token per row per step, over a static cache: the
    single-token step has the same shapes every time, so it compiles once (`torch.compile`; on
    CUDA in mode "reduce-overhead", which replays it as a CUDA graph: the launch overhead that
    dominates a small batch's decode goes, as in gpt-fast). Each prompt is prefilled in one pass.

    Greedy decoding gives the tokens `generate` gives, row for row (tested). The context does not
    slide: a prompt and its new tokens must fit in the cache (at most `max_seq_len`), which is
    checked before any work. A step runs every row until all have stopped; a row that stopped
    goes on decoding, its tokens dropped, so the shapes stay fixed.
    """

    def __init__(self, model: GPT, batch_size: int, max_len: int | None = None, compile: bool = True):
        param = next(model.parameters())
        self.model, self.device, self.batch_size = model, param.device, batch_size
        max_len = max_len or model.cfg.max_seq_len
        self.cache = KVCache(model.cfg, batch_size, max_len, param.device, param.dtype, static=True)
        self._prompt_cache = KVCache(model.cfg, 1, max_len, param.device, param.dtype)
        self.step = self._step
        if compile:
            # a CUDA graph may write only to tensors whose addresses never change
            for tensor in (self.cache.k, self.cache.v, self.cache.lengths):
                torch._dynamo.mark_static_address(tensor)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.step = torch.compile(self._step, mode=mode, fullgraph=True, dynamic=False)

    def _step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 1) -> the next token's logits (B, V), each row one position further."""
        return self.model(tokens, cache=self.cache)[:, -1]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, stop_ids: Sequence[int] = (),
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Up to `max_new_tokens` new ids per prompt, each row ending after an id in `stop_ids`
        (which it keeps)."""
        if not 0 < len(prompts) <= self.batch_size:
            raise ValueError(f"give 1 to {self.batch_size} prompts (the decoder's batch size), not {len(prompts)}")
        if min(len(p) for p in prompts) == 0:
            raise ValueError("every prompt must hold at least one token (e.g. <|bos|>)")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.cache.max_len:
            raise ValueError(f"a prompt of {longest} tokens and {max_new_tokens} new ones exceed the cache's "
                             f"{self.cache.max_len} positions; shorten the prompt or ask for fewer tokens")
        was_training = self.model.training
        self.model.eval()
        try:
            firsts = []
            for row, prompt in enumerate(prompts):  # prefill: a prompt in one pass, then into its row
                self._prompt_cache.lengths.zero_()
                firsts.append(self.model(torch.tensor([list(prompt)], device=self.device),
                                         cache=self._prompt_cache)[:, -1])
                self.cache.copy_row(row, self._prompt_cache)
            logits = torch.cat(firsts)
            out: list[list[int]] = [[] for _ in prompts]
            done = [False] * len(prompts)
            stops = set(stop_ids)
            for i in range(max_new_tokens):
                tokens = sample_next(logits, temperature, top_k, top_p, generator)
                for row, token in enumerate(tokens.tolist()):
                    if not done[row]:
                        out[row].append(token)
                        done[row] = token in stops
                if all(done) or i == max_new_tokens - 1:
                    break
                # a fresh tensor each step: the compiled step's input, not a view of its output
                logits = self.step(tokens[:, None].clone()).float()
            return out
        finally:
            self.model.train(was_training)
