"""A trained loom model as the evaluator sees it: score text, score continuations, generate.

Every evaluation in `loom.eval` (bits per byte, the generated suites, HumanEval, the
lm-evaluation-harness adapter) goes through `LoomLM`, so a number means the same thing wherever
it is printed. Three operations:

  - `token_nll(ids)`: the negative log-likelihood (nats) of each token given the tokens before it.
    Sequences longer than the model's context are scored in windows of `max_seq_len` tokens
    advancing by half a window, each token scored once, with at least half a window of context
    after the first window (the sliding-window evaluation of Press et al. 2021, "Train Short,
    Test Long", section 5; a stride of half the context is the usual compromise between cost and
    context);
  - `loglikelihood(context, continuation)`: log p(continuation | context) and whether greedy
    decoding would have produced it, with the continuation's tokens taken as the tail of the
    whole string's encoding, so BPE merges across the boundary are those of the real text (the
    convention of lm-evaluation-harness's Hugging Face model);
  - `generate(prompt, ...)`: greedy or sampled continuations until a stop string, `n` samples of
    one prompt decoded together in one batch over a key/value cache.

Every scored or generated sequence starts with the tokenizer's `<|bos|>`, as training documents
do. This module does not know where texts come from or how answers are graded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from loom.model import GPT, KVCache
from loom.model.generate import sample_next
from loom.tokenizer import Tokenizer
from loom.util import cut_at_stop


class LoomLM:
    def __init__(self, model: GPT, tokenizer: Tokenizer, batch_size: int = 16):
        self.model = model.eval()
        self.tok = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.max_len = model.cfg.max_seq_len

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", batch_size: int = 16) -> LoomLM:
        from loom.checkpoint import load_trained_model

        model, tok, _ = load_trained_model(run_dir, device)
        return cls(model, tok, batch_size)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    # --- scoring -------------------------------------------------------------------------------

    def _padded_batches(self, seqs: list[list[int]]):
        """Yields (indices into `seqs`, the model's logits (B, T-1, V) for those sequences) in
        batches of similar length, right-padded (causal attention never looks right)."""
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for b in range(0, len(order), self.batch_size):
            chunk = order[b : b + self.batch_size]
            width = max(len(seqs[i]) for i in chunk)
            ids = torch.full((len(chunk), width), self.tok.eos_id, dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
            yield chunk, self.model(ids[:, :-1].to(self.device)), ids

    @torch.no_grad()
    def _forward_nll(self, windows: list[list[int]]) -> list[np.ndarray]:
        """Per-position NLL of tokens 1.. of each window (a list of ids of at most max_len)."""
        out: list[np.ndarray | None] = [None] * len(windows)
        for chunk, logits, ids in self._padded_batches(windows):
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(logits.device), reduction="none")  # (B, T-1)
            nll = nll.double().cpu().numpy()
            for row, i in enumerate(chunk):
                out[i] = nll[row, : len(windows[i]) - 1]
        return out  # type: ignore[return-value]

    def token_nll_batch(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """For each sequence, the NLL (nats) of tokens 1..n-1, each given the tokens before it
        (all of them, or at least half a window once the sequence outgrows the context)."""
        windows, owners = [], []  # (sequence index, first scored position in the window)
        for s, ids in enumerate(sequences):
            for start, first_scored in sliding_windows(len(ids), self.max_len):
                windows.append(list(ids[start : start + self.max_len]))
                owners.append((s, first_scored))
        per_window = self._forward_nll(windows)
        pieces: list[list[np.ndarray]] = [[] for _ in sequences]
        for (s, first_scored), nll in zip(owners, per_window):
            pieces[s].append(nll[first_scored - 1 :])  # nll[j] scores window position j + 1
        return [np.concatenate(p) if p else np.zeros(0) for p in pieces]

    def token_nll(self, ids: Sequence[int]) -> np.ndarray:
        return self.token_nll_batch([ids])[0]

    def _pair_ids(self, context: str, continuation: str) -> tuple[list[int], int]:
        """(ids of <|bos|> + context + continuation, number of continuation tokens at the end)."""
        # A space ending the context belongs to the continuation's first word in BPE.
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        n_context = len(self.encode(context))
        n_cont = max(1, len(whole) - n_context) if whole else 0
        return [self.tok.bos_id, *whole], n_cont

    @torch.no_grad()
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """For each (context, continuation): (log p(continuation | context) in nats, whether the
        continuation is the greedy one token by token). Too long: the oldest context is cut."""
        items = []
        for context, continuation in pairs:
            ids, n_cont = self._pair_ids(context, continuation)
            items.append((ids[-(self.max_len + 1) :], n_cont))  # max_len inputs predict max_len tokens
        results: list[tuple[float, bool] | None] = [None] * len(items)
        for chunk, logits, _ in self._padded_batches([seq for seq, _ in items]):
            logprobs = torch.log_softmax(logits, dim=-1).cpu()  # (B, T-1, V)
            for row, i in enumerate(chunk):
                seq, n_cont = items[i]
                n_cont = min(n_cont, len(seq) - 1)
                positions = torch.arange(len(seq) - 1 - n_cont, len(seq) - 1)  # predicting the continuation
                targets = torch.tensor(seq[len(seq) - n_cont :])
                lp = logprobs[row, positions]  # (n_cont, V)
                total = float(lp.gather(1, targets[:, None]).sum().double())
                greedy = bool((lp.argmax(dim=-1) == targets).all())
                results[i] = (total, greedy)
        return results  # type: ignore[return-value]

    def rolling_loglikelihood(self, texts: Sequence[str]) -> list[float]:
        """log p(text) in nats, every token of the text scored after <|bos|>."""
        seqs = [[self.tok.bos_id, *self.encode(t)] for t in texts]
        return [-float(nll.sum()) for nll in self.token_nll_batch(seqs)]

    # --- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int, stop: Sequence[str] = ("\n",), n: int = 1,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 skip_leading_whitespace: bool = False) -> list[str]:
        """`n` continuations of `prompt` (greedy when temperature is 0), each cut before the first
        stop string; decoding ends when every row has stopped or after `max_new_tokens`. With
        `skip_leading_whitespace`, stop strings count only once the text has begun, so an answer
        put on the line after "A:" is read instead of cut to nothing."""
        return self.generate_ids([self.tok.bos_id, *self.encode(prompt)], max_new_tokens, stop, n, temperature,
                                 top_p, seed, skip_leading_whitespace)

    @torch.no_grad()
    def generate_ids(self, ids: list[int], max_new_tokens: int, stop: Sequence[str] = ("\n",), n: int = 1,
                     temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                     skip_leading_whitespace: bool = False, stop_ids: Sequence[int] = ()) -> list[str]:
        """`generate` from a prompt already in ids (<|bos|> first), e.g. a rendered conversation;
        a row also ends at any of `stop_ids` (as at <|eos|>)."""
        ids = list(ids)
        # A long prompt keeps at least half the context; the answer gets the rest.
        max_new_tokens = max(1, min(max_new_tokens, self.max_len - min(len(ids), self.max_len // 2)))
        if len(ids) + max_new_tokens > self.max_len:  # the prompt's oldest tokens make room
            ids = [self.tok.bos_id, *ids[len(ids) - (self.max_len - max_new_tokens - 1) :]]
        cache = KVCache(self.model.cfg, n, len(ids) + max_new_tokens, self.device,
                        next(self.model.parameters()).dtype)
        rng = torch.Generator(device=self.device).manual_seed(seed)
        logits = self.model(torch.tensor([ids] * n, device=self.device), cache=cache)[:, -1]
        new: list[list[int]] = [[] for _ in range(n)]
        texts = [""] * n
        done = [False] * n
        for _ in range(max_new_tokens):
            token = sample_next(logits, temperature, 0, top_p, rng)  # (n,)
            for row in range(n):
                if done[row]:
                    continue
                t = int(token[row])
                if t == self.tok.eos_id or t in stop_ids:
                    done[row] = True
                    continue
                new[row].append(t)
                texts[row] = self.tok.decode(new[row])
                if cut_at_stop(texts[row], stop, skip_leading_whitespace) != texts[row]:
                    done[row] = True
            if all(done) or cache.length >= cache.max_len:
                break
            logits = self.model(token[:, None], cache=cache)[:, -1]
        return [cut_at_stop(t, stop, skip_leading_whitespace) for t in texts]


    def generate_masked(self, ids: list[int], max_new_tokens: int, allowed, advance, temperature: float = 0.0,
                        seed: int = 0) -> list[int]:
        """Generation under a constraint: before each token `allowed()` gives a boolean numpy
        mask over the vocabulary and `advance(token)` is told the token chosen. Ends at
        <|eos|> (which the mask must allow for the text to end) or after `max_new_tokens`
        (as many as the context leaves). Returns the new ids, <|eos|> last when it came."""
        ids = list(ids)[-(self.max_len - 1):]
        max_new_tokens = max(0, min(max_new_tokens, self.max_len - len(ids)))
        cache = KVCache(self.model.cfg, 1, len(ids) + max_new_tokens, self.device,
                        next(self.model.parameters()).dtype)
        rng = torch.Generator(device=self.device).manual_seed(seed)
        new: list[int] = []
        if not max_new_tokens:
            return new
        logits = self.model(torch.tensor([ids], device=self.device), cache=cache)[0, -1].float()
        for _ in range(max_new_tokens):
            mask = torch.from_numpy(np.asarray(allowed(), dtype=bool)).to(self.device)
            logits = logits[: mask.numel()].masked_fill(~mask[: logits.numel()], float("-inf"))
            if temperature <= 0:
                token = int(torch.argmax(logits))
            else:
                token = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=rng))
            advance(token)
            new.append(token)
            if token == self.tok.eos_id or cache.length >= cache.max_len:
                break
            logits = self.model(torch.tensor([[token]], device=self.device), cache=cache)[0, -1].float()
        return new


def sliding_windows(n: int, max_len: int) -> list[tuple[int, int]]:
    """(start, first scored position within the window) of the windows that score tokens 1..n-1
    of a sequence of n tokens: the first window from 0, then windows of max_len tokens advancing
    by half a window, each scoring only the tokens after the previous window's end."""
    if n < 2:
        return []
    windows = [(0, 1)]
    scored_until = min(n, max_len)  # tokens before this index are scored
    stride = max(1, max_len // 2)
    while scored_until < n:
        end = min(n, scored_until + stride)
        start = max(0, end - max_len)
        windows.append((start, scored_until - start))
        scored_until = end
    return windows


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)
