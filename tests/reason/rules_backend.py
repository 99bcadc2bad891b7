"""`RuleBackend`: regex rules standing in for a model in the tests of the reasoning executor,
strategies and CLI: no model, deterministic, instantaneous unless told to wait."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence

from loom.reason.backends.base import Backend, BackendError, Completion, GenerationSettings, word_count
from loom.util import cut_at_stop

Response = str | Completion | Callable[[re.Match], "str | Completion"]


class RuleBackend(Backend):
    """Answers by rules, for tests of the executor: no model, deterministic, instantaneous unless
    told to take its time.

    `rules` is a list of (regex, response) pairs tried in order. Each regex is searched in the
    whole prompt; when it occurs several times the LAST occurrence counts, because a prompt puts
    the question it asks last (after instructions or worked examples), while its last line is
    often just "A:". The first rule that matches answers: its response is a string, or a callable
    taking the `re.Match` and returning a string. When no rule matches, `default` answers (a
    string, or a callable taking the prompt); without a default, `complete` raises BackendError
    naming the prompt, so a test cannot pass by accident.

    Like a model, the answer is cut before the first stop string and to `max_tokens`
    whitespace-separated words (finish_reason "length"). A response (or a callable's return) that
    is itself a `Completion` is returned as is, to simulate truncation or errors; a callable may
    also raise, to simulate a failing backend. Token counts are whitespace-separated words.

    Bookkeeping, thread-safe: `calls` (calls of `complete`), `prompts` (every prompt, in the
    order seen), `timings` ((start, end) `time.monotonic()` of each call) and `peak_concurrency`
    (most calls in progress at once). `delay` seconds are slept once per call of `complete`,
    outside the lock, so calls from several threads overlap as real requests would.
    """

    def __init__(self, rules: Sequence[tuple[str | re.Pattern, Response]] = (),
                 default: str | Callable[[str], str] | None = None, delay: float = 0.0, name: str = "rules"):
        self.name = name
        self.rules: list[tuple[re.Pattern, Response]] = []
        for pattern, response in rules:
            self.add_rule(pattern, response)
        self.default = default
        self.delay = delay
        self.calls = 0
        self.prompts: list[str] = []
        self.timings: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def add_rule(self, pattern: str | re.Pattern, response: Response) -> None:
        """Appends a rule (tried after those already there)."""
        try:
            compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        except re.error as e:
            raise BackendError(f"rules: pattern {pattern!r} is not a valid regular expression: {e}") from None
        self.rules.append((compiled, response))

    @property
    def peak_concurrency(self) -> int:
        """The largest number of `complete` calls that were in progress at the same time."""
        with self._lock:
            events = sorted([(s, 1) for s, _ in self.timings] + [(e, -1) for _, e in self.timings],
                            key=lambda x: (x[0], x[1]))  # an end before a start at the same instant
        peak = now = 0
        for _, step in events:
            now += step
            peak = max(peak, now)
        return peak

    def answer(self, prompt: str, settings: GenerationSettings) -> Completion:
        """The completion of one prompt (no bookkeeping, no delay)."""
        response: str | Completion | None = None
        for pattern, rule in self.rules:
            matches = list(pattern.finditer(prompt))
            if matches:
                response = rule(matches[-1]) if callable(rule) else rule
                break
        else:
            if self.default is None:
                raise BackendError(f"{self.name}: no rule matches the prompt {prompt[-200:]!r}; "
                                   "add a rule for it or give the RuleBackend a default")
            response = self.default(prompt) if callable(self.default) else self.default
        if isinstance(response, Completion):
            return response
        if not isinstance(response, str):
            raise BackendError(f"{self.name}: a rule returned {type(response).__name__}, not a string or Completion")
        text = cut_at_stop(response, settings.stop)
        finish = "stop"
        spans = list(re.finditer(r"\S+", text))
        if len(spans) > settings.max_tokens:
            text, finish = text[: spans[settings.max_tokens - 1].end()], "length"
        return Completion(text, word_count(prompt), word_count(text), finish, estimated_tokens=True)

    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> list[Completion]:
        start = time.monotonic()
        with self._lock:
            self.calls += 1
            self.prompts.extend(prompts)
        try:
            if self.delay > 0:
                time.sleep(self.delay)
            return [self.answer(p, settings) for p in prompts]
        finally:
            end = time.monotonic()
            with self._lock:
                self.timings.append((start, end))
