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
