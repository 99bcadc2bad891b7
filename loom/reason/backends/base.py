"""The interface every backend implements: prompts in, one `Completion` each out, under
`GenerationSettings`; and `BackendError`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from loom.errors import LoomError


class BackendError(LoomError):
    """A model backend could not be built or could not answer; the message names the backend,
    what failed and how to fix it."""


@dataclass(frozen=True)
class Completion:
    """One prompt's answer. `finish_reason` is "stop" (a stop string, end of text, or the model
    ended), "length" (`max_tokens` reached) or "error" (a backend that reports a failure per
    prompt instead of raising; only rules do here). `estimated_tokens` is true when the counts
    are whitespace-separated words rather than a tokenizer's tokens."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    estimated_tokens: bool = False


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode: greedy when `temperature` is 0, else sampled with nucleus `top_p` from
    `seed`; the answer is cut before the first of the `stop` strings and has at most
    `max_tokens` tokens."""

    max_tokens: int = 64
    stop: tuple[str, ...] = ("\n",)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a lone string is one stop string, not its characters
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        if self.max_tokens < 1:
            raise BackendError(f"generation settings: max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise BackendError(f"generation settings: temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BackendError(f"generation settings: top_p must be in (0, 1], got {self.top_p}")


class Backend(ABC):
    """A language model: `complete` answers a batch of prompts, one `Completion` each, in order.
    Implementations may loop over the prompts or truly batch them, and must be safe to call from
    several threads at once (local models serialize on a lock)."""

    name: str

    @abstractmethod
    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> list[Completion]:
        """One completion per prompt, in the order of `prompts`."""

    def complete_constrained(self, prompt: str, make_decoder,
                             settings: GenerationSettings) -> tuple[str, bool, Completion]:
        """A continuation of `prompt` written under a token-level constraint: `make_decoder(tokenizer)`
        gives the decoder (`start`, `mask`, `advance`, `plan`; `loom.reason.constrained.PlanDecoder`).
        Returns (text, whether it ended as the constraint allows, the completion's counts).
        Backends without the model's logits cannot."""
        raise BackendError(f"{self.name} cannot decode under a constraint: that needs the model's logits "
                           "(use a loom: backend)")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def word_count(text: str) -> int:
    """The token count a backend without a tokenizer reports: whitespace-separated words."""
    return len(text.split())
