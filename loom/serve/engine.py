"""Continuous batching: the requests a server holds are decoded together, one token each per step.

One thread owns the model and a `KVCache` of `max_batch` rows, one row per running request, and
repeats:

1. **admit**: while a row is free and a request waits, its prompt runs through the model in one
   pass (prefill, on a one-row cache copied into the free row) and its first token is sampled;
2. **step**: one forward pass over all running rows, each fed its last token at its own position
   (the cache keeps a length per row), then each row's next token is sampled with its request's
   own temperature, top-k, top-p and seed;
3. **retire**: a request that finished (a stop token, `max_tokens`, the context full, or
   cancelled by its client) leaves at once, and the last running row moves into its place, so
   the running rows are always rows 0..n-1 and a step is one slice of the cache.

A new request therefore joins at the next step and a finished one frees its row for the next in
line. Requests wait in a bounded queue: `submit` raises `QueueFull` once `max_waiting` are waiting,
which the server answers with 429. Each request hears of its tokens through its `deliver`
callback, called on the engine's thread (the server hands them to its event loop).

Why by hand: vLLM and TGI batch this way, but they run on GPUs and read Hugging Face checkpoints,
not loom's runs; this engine is what `loom serve` needs on a CPU and stays small (prefill is one
request at a time, and there is no paging of the cache). Past one machine, export the model and
serve it with one of them.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from loom.model import GPT, KVCache
from loom.model.generate import sample_next


class QueueFull(Exception):
    """More requests are waiting than the engine's `max_waiting`."""


@dataclass
class Request:
    """One generation: a prompt's ids and how to continue it. `deliver(token, finish)` is called
    with each new token id (finish None) and once at the end with token None and the finish
    reason: "stop" (a stop id was sampled; it is not delivered), "length" (`max_tokens` or the
    context), "cancelled", or "error: ..."."""

    prompt: list[int]
    max_tokens: int
    deliver: Callable[[int | None, str | None], None]
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()
    id: int = field(default_factory=itertools.count().__next__)
    cancelled: bool = False
    finish: str | None = None
    generated: int = 0
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """Stops the generation at the engine's next step (safe from any thread)."""
        self.cancelled = True


class Engine:
    def __init__(self, model: GPT, max_batch: int = 32, max_waiting: int = 64):
        if max_batch < 1 or max_waiting < 0:
            raise ValueError(f"max_batch must be at least 1 and max_waiting at least 0, not {max_batch}, {max_waiting}")
        self.model = model.eval()
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.context = model.cfg.max_seq_len
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.cache = KVCache(model.cfg, max_batch, self.context, self.device, self.dtype)
        self.running: list[Request] = []  # request i holds cache row i
        self.last_tokens: list[int] = []
        self.generators: list[torch.Generator | None] = []
        self.waiting: collections.deque[Request] = collections.deque()
        self.wake = threading.Condition()
        self.steps = 0  # forward passes over the running rows, for /health and the tests
        self.peak_batch = 0
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="loom-engine", daemon=True)
        self.thread.start()

    # --- the public surface -------------------------------------------------------------------

    def submit(self, request: Request) -> Request:
        if not request.prompt:
            raise ValueError("the prompt must hold at least one token")
        if len(request.prompt) >= self.context:
            raise ValueError(f"the prompt's {len(request.prompt)} tokens leave no room in the model's "
                             f"context of {self.context}")
        with self.wake:
            if self.closed:
                raise RuntimeError("the engine is closed")
            free_rows = max(0, self.max_batch - len(self.running))
            if len(self.waiting) >= self.max_waiting + free_rows:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting")
            self.waiting.append(request)
            self.wake.notify()
        return request

    def stream(self, prompt: list[int], max_tokens: int, **settings) -> Iterator[int]:
        """The tokens of one request as a plain iterator (for scripts and tests); closing it
        cancels the request, and a failed generation raises `RuntimeError`."""
        import queue

        box: queue.Queue = queue.Queue()
        request = self.submit(Request(list(prompt), max_tokens, lambda t, f: box.put((t, f)), **settings))
        try:
            while True:
                token, finish = box.get()
                if token is None:
                    if finish.startswith("error"):
                        raise RuntimeError(finish)
                    return
                yield token
        finally:
            request.cancel()

    def load(self) -> dict:
        with self.wake:
            return {"running": len(self.running), "waiting": len(self.waiting), "max_batch": self.max_batch,
                    "max_waiting": self.max_waiting, "steps": self.steps, "peak_batch": self.peak_batch}

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=30)

    # --- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self.wake:
                while not self.closed and not self.waiting and not self.running:
                    self.wake.wait()
                if self.closed:
                    break
                admitted = []
                while self.waiting and len(self.running) + len(admitted) < self.max_batch:
                    admitted.append(self.waiting.popleft())
            with torch.inference_mode():
                for request in admitted:
                    try:
                        self._admit(request)
                    except Exception as e:  # a prompt that fails fails its own request only
                        request.deliver(None, f"error: {type(e).__name__}: {e}")
            try:
                with torch.inference_mode():
                    self._retire()
                    if self.running:
                        self._step()
                        self._retire()
            except Exception as e:  # a failed pass fails its requests, never the server
                for request in self.running:
                    request.deliver(None, f"error: {type(e).__name__}: {e}")
                self.running, self.last_tokens, self.generators = [], [], []
                self.cache.lengths.zero_()
        for request in self.running + list(self.waiting):
            request.deliver(None, "cancelled")

    def _admit(self, request: Request) -> None:
        if request.cancelled:
            request.deliver(None, "cancelled")
            return
        generator = None
        if request.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(request.seed)
        prefill = KVCache(self.model.cfg, 1, self.context, self.device, self.dtype)
        logits = self.model(torch.tensor([request.prompt], device=self.device), cache=prefill)[:, -1]
        row = len(self.running)
        self.cache.copy_row(row, prefill)
        self.running.append(request)
        self.generators.append(generator)
        self.last_tokens.append(self._sample(logits, request, generator))
        self._emit(row)

    def _step(self) -> None:
        n = len(self.running)
        self.peak_batch = max(self.peak_batch, n)
        tokens = torch.tensor(self.last_tokens, device=self.device)[:, None]
        logits = self.model(tokens, cache=self.cache)[:, -1]  # rows 0..n-1, each at its own position
        self.steps += 1
        # Rows with the same settings and no seed of their own are sampled in one call; a seeded
        # row draws from its own generator, so its tokens do not depend on who runs beside it.
        groups: dict[tuple, list[int]] = {}
        for row, request in enumerate(self.running):
            if self.generators[row] is None:
                groups.setdefault((request.temperature, request.top_k, request.top_p), []).append(row)
            else:
                self.last_tokens[row] = self._sample(logits[row : row + 1], request, self.generators[row])
        for (temperature, top_k, top_p), rows in groups.items():
            picked = sample_next(logits[rows], temperature, top_k, top_p)
            for row, token in zip(rows, picked.tolist()):
                self.last_tokens[row] = token
        for row in range(n):
            self._emit(row)

    def _sample(self, logits: torch.Tensor, request: Request, generator) -> int:
        return int(sample_next(logits, request.temperature, request.top_k, request.top_p, generator))

    def _emit(self, row: int) -> None:
        """Hands row `row`'s newest token to its request, or marks the request finished."""
        request, token = self.running[row], self.last_tokens[row]
        if request.cancelled:
            return
        if token in request.stop_ids:
            request.finish = "stop"
            return
        request.generated += 1
        request.deliver(token, None)
        if request.generated >= request.max_tokens or int(self.cache.lengths[row]) >= self.context:
            request.finish = "length"

    def _retire(self) -> None:
        row = 0
        while row < len(self.running):
            request = self.running[row]
            finish = "cancelled" if request.cancelled else request.finish
            if finish is None:
                row += 1
                continue
            request.deliver(None, finish)
            last = len(self.running) - 1
            if row != last:  # the last running row fills the gap: running rows stay 0..n-1
                self.cache.copy_row(row, self.cache, last)
                self.running[row], self.last_tokens[row], self.generators[row] = (
                    self.running[last], self.last_tokens[last], self.generators[last])
            self.running.pop()
            self.last_tokens.pop()
            self.generators.pop()
            self.cache.lengths[last] = 0
