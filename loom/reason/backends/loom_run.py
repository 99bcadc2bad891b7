"""A loom run directory as a backend: its newest complete checkpoint, through `LoomLM`."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from loom.errors import LoomError
from loom.reason.backends.base import Backend, BackendError, Completion, GenerationSettings


class LoomBackend(Backend):
    """A trained loom run, decoded by `LoomLM.generate` (KV cache, greedy or sampled, cut at the
    stop strings). Prompts are decoded one after another: `LoomLM` batches the samples of one
    prompt, not different prompts. Calls from several threads take turns on a lock.

    Token counts: `prompt_tokens` is the prompt's tokens plus the `<|bos|>` every sequence
    starts with (before any truncation of a prompt longer than the context); `completion_tokens`
    is the tokens of the returned text, re-encoded after the cut at the stop string. The answer
    is "length" when it has `max_tokens` tokens or more, else "stop" (a prompt so long that the
    context clamps the answer shorter reports "stop")."""

    def __init__(self, run_dir: str | os.PathLike, device: str = "cpu"):
        from loom.eval.lm import LoomLM

        self.name = f"loom:{run_dir}"
        try:
            lm = LoomLM.from_run(run_dir, device)
        except LoomError as e:
            raise BackendError(f"{self.name}: {e}") from e
        self._init(lm)

    @classmethod
    def from_lm(cls, lm: Any, name: str = "loom:memory") -> LoomBackend:
        """A backend over an already loaded `LoomLM` (tests, notebooks)."""
        self = cls.__new__(cls)
        self.name = name
        self._init(lm)
        return self

    def _init(self, lm: Any) -> None:
        self.lm = lm
        self._lock = threading.Lock()

    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> list[Completion]:
        out = []
        with self._lock:
            for prompt in prompts:
                text = self.lm.generate(prompt, settings.max_tokens, settings.stop, n=1,
                                        temperature=settings.temperature, top_p=settings.top_p,
                                        seed=settings.seed)[0]
                n_new = len(self.lm.encode(text))
                finish = "length" if n_new >= settings.max_tokens else "stop"
                out.append(Completion(text, len(self.lm.encode(prompt)) + 1, n_new, finish))
        return out

    def complete_constrained(self, prompt: str, make_decoder,
                             settings: GenerationSettings) -> tuple[str, bool, Completion]:
        with self._lock:
            if getattr(self, "_decoder_for", None) is not make_decoder:  # building one reads the vocabulary
                self._decoder, self._decoder_for = make_decoder(self.lm.tok), make_decoder
            decoder = self._decoder
            state = decoder.start()
            ids = [self.lm.tok.bos_id, *self.lm.encode(prompt)]
            new = self.lm.generate_masked(ids, settings.max_tokens, lambda: decoder.mask(state),
                                          lambda token: decoder.advance(state, token), settings.temperature,
                                          settings.seed)
        text = decoder.plan(state) if state.done else state.text
        return text, state.done, Completion(text, len(ids), len(new), "stop" if state.done else "length")
