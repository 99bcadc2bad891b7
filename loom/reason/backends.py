"""Language models behind one small interface, for the reasoning executor: prompts in, completions out.

A `Backend` has a `name` and one method, `complete(prompts, settings)`, which takes a batch of
prompts and returns one `Completion` per prompt, in order. Four kinds:

  - `LoomBackend`: a loom run directory (its newest complete checkpoint), through `LoomLM`;
  - `HFBackend`: a local Hugging Face model directory through `transformers` (an optional
    dependency, imported only here and only when used; nothing is ever downloaded);
  - `OpenAIBackend`: any OpenAI-compatible HTTP endpoint (llama.cpp server, vLLM, Ollama, ...),
    prompts sent concurrently, network errors, timeouts, HTTP 429 / 5xx and garbled answers
    retried with exponential backoff and recorded in `retries_log`, every socket operation under
    a deadline so that a call never hangs;
  - `RuleBackend`: regex rules standing in for a model in tests of the executor.

`make_backend("loom:RUN_DIR" | "hf:MODEL_DIR" | "openai:BASE_URL#model=NAME" | "rules")` builds
one from a string, as the CLI and program files name them.

The HTTP client is the standard library's `http.client`: the protocol is two JSON endpoints
(`/completions` and `/chat/completions`), and what matters (a deadline on connect and on every
read, retries we can record, no proxy surprises for a server on localhost) is easier to get
exactly right by hand than through a heavy client dependency. Proxies are therefore not used.

This module does not know how prompts are written (no prompting strategy, no few-shot examples,
no chat templates beyond the one-message chat request) nor anything of graphs, variables or
answers: that is `loom.reason.program` and the executor's job.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import re
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.errors import LoomError
from loom.util import cut_at_stop

log = logging.getLogger(__name__)

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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _words(text: str) -> int:
    return len(text.split())


# --- rules: a stand-in for a model in tests --------------------------------------------------------

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
        return Completion(text, _words(prompt), _words(text), finish, estimated_tokens=True)

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


# --- a loom checkpoint -------------------------------------------------------------------------------


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


# --- a local Hugging Face model ----------------------------------------------------------------------


def _import_transformers(name: str):
    try:
        import transformers
    except ImportError as e:
        raise BackendError(f"{name}: the Hugging Face backend needs the transformers package "
                           f"({e}); install it with `pip install transformers`") from None
    return transformers


class HFBackend(Backend):
    """A causal language model in a local directory (`save_pretrained` output: config, weights,
    tokenizer), loaded with `AutoTokenizer` and `AutoModelForCausalLM` with
    `local_files_only=True`, so nothing is ever downloaded.

    Prompts are decoded in batches of `batch_size`, left-padded (the new tokens of every row then
    start at the same position). Greedy when temperature is 0, else sampled from `seed` (the
    global torch RNG is forked, so callers' random state is left alone). The prompt is tokenized
    as the model's tokenizer does by default (special tokens such as a BOS included). A stopping
    criterion ends a row once its decoded new text contains a stop string, and the text is cut
    before it; the model's end-of-sequence token ends a row too. Token counts: the prompt's
    non-padding tokens; the tokens the model generated for the answer (those of a stop string
    included, the end-of-sequence token not)."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", batch_size: int = 8):
        self.name = f"hf:{model_dir}"
        transformers = _import_transformers(self.name)
        import torch

        self._torch = torch
        if not Path(model_dir).is_dir():
            raise BackendError(f"{self.name}: {model_dir} is not a directory; give the path of a model saved with "
                               "`save_pretrained` (config.json, weights and tokenizer files)")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise BackendError(f"{self.name}: could not load a causal language model and its tokenizer from "
                               f"{model_dir} ({e}); it needs config.json, the weights and the tokenizer files "
                               "as `save_pretrained` writes them") from None
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise BackendError(f"{self.name}: the tokenizer has neither a pad nor an end-of-sequence token, "
                                   "so prompts cannot be batched; set tokenizer.pad_token and save it again")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._stop_criterion = self._make_stop_criterion(transformers)
        self._lock = threading.Lock()

    def _make_stop_criterion(self, transformers):
        tokenizer = self.tokenizer
        torch = self._torch

        class StopOnStrings(transformers.StoppingCriteria):
            """Done, per row, once the new tokens decode to text containing a stop string."""

            def __init__(self, prompt_len: int, stop: Sequence[str]):
                self.prompt_len, self.stop = prompt_len, stop

            def __call__(self, input_ids, scores, **kwargs):
                texts = tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
                return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)

        return StopOnStrings

    def _generate(self, prompts: list[str], settings: GenerationSettings) -> list[Completion]:
        torch = self._torch
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        width = enc["input_ids"].shape[1]
        kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.stop:
            kwargs["stopping_criteria"] = [self._stop_criterion(width, settings.stop)]
        devices = [self.device] if str(self.device).startswith("cuda") else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(settings.seed)
            out = self.model.generate(**enc, **kwargs)  # (B, width + new)
        eos = self.model.generation_config.eos_token_id
        # A row that is done (end of sequence, or a stop string) is filled with padding after it.
        enders = (set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.pad_token_id}) - {None}
        results = []
        for row, prompt_mask in enumerate(enc["attention_mask"]):
            new = out[row, width:].tolist()
            ended = next((i for i, t in enumerate(new) if t in enders), None)
            if ended is not None:
                new = new[:ended]
            full = self.tokenizer.decode(new, skip_special_tokens=True)
            text = cut_at_stop(full, settings.stop)
            finish = "length" if ended is None and text == full and len(new) >= settings.max_tokens else "stop"
            results.append(Completion(text, int(prompt_mask.sum()), len(new), finish))
        return results

    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> list[Completion]:
        out: list[Completion] = []
        with self._lock:
            for b in range(0, len(prompts), self.batch_size):
                out += self._generate(list(prompts[b : b + self.batch_size]), settings)
        return out


# --- an OpenAI-compatible HTTP endpoint --------------------------------------------------------------

MAX_RESPONSE_BYTES = 32 << 20
MAX_BACKOFF = 30.0


class _Retryable(Exception):
    """A failure worth another attempt (network, timeout, 429, 5xx, garbage)."""


class OpenAIBackend(Backend):
    """Any server speaking the OpenAI completions API: POST `{base_url}/completions` with
    {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed"}, or, with
    `chat=True`, `{base_url}/chat/completions` with the prompt as one user message. `base_url`
    is the API root, usually ending in /v1 (llama.cpp server: http://127.0.0.1:8080/v1; Ollama:
    http://127.0.0.1:11434/v1; vLLM: http://127.0.0.1:8000/v1). An empty `model` is left out of
    the request (llama.cpp serves its one model); vLLM and Ollama need it.

    The key is sent as `Authorization: Bearer <key>`: `api_key`, else the environment's
    OPENAI_API_KEY, else no header.

    Prompts of one call go out concurrently, at most `max_concurrency` at a time, and come back
    in order. Each attempt has `timeout` seconds in all (connect, send, every read: the socket
    timeout is the time left), so a stalled server costs at most `timeout` per attempt. Connection
    errors, timeouts, HTTP 429 and 5xx, and a 2xx answer that is not JSON with `choices` are
    retried `retries` times, after `backoff * 2**attempt` seconds plus up to 10% jitter from a
    Random seeded with `seed` (at most 30 s); each retry is appended to `retries_log` (a dict:
    url, prompt index, attempt, error, delay) and logged as a warning. Another 4xx is not retried.
    When a prompt fails, the batch raises BackendError (prompts not yet sent are cancelled).

    The text is the server's, cut again at the stop strings (some servers ignore them); token
    counts are the server's `usage`, or whitespace-separated words when it sends none
    (`estimated_tokens`). Retry-After headers are not honoured."""

    def __init__(self, base_url: str, model: str = "", api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.5, chat: bool = False, max_concurrency: int = 4,
                 seed: int = 0):
        self.base_url = base_url.rstrip("/")
        parts = urllib.parse.urlsplit(self.base_url)
        self.name = f"openai:{self.base_url}" + (f" model={model}" if model else "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"{self.name}: the base URL must look like http://HOST:PORT/v1 "
                               f"(scheme http or https and a host), got {base_url!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or max_concurrency < 1:
            raise BackendError(f"{self.name}: need timeout > 0, retries >= 0, backoff >= 0 and max_concurrency >= 1 "
                               f"(got {timeout}, {retries}, {backoff}, {max_concurrency})")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.chat = chat
        self.max_concurrency = max_concurrency
        self.url = self.base_url + ("/chat/completions" if chat else "/completions")
        self._parts = urllib.parse.urlsplit(self.url)
        self.retries_log: list[dict] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    # -- one HTTP exchange --

    def _post(self, payload: bytes) -> tuple[int, bytes]:
        """(status, body) of one POST, all of it within `self.timeout` seconds."""
        deadline = time.monotonic() + self.timeout

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete answer within {self.timeout:g} s")
            return remaining

        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(self._parts.hostname, self._parts.port, timeout=self.timeout)
        try:
            conn.connect()
            sock = conn.sock  # kept: http.client hands it to the response and may drop its own reference
            sock.settimeout(left())
            path = self._parts.path or "/"
            if self._parts.query:
                path += "?" + self._parts.query
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            conn.request("POST", path, body=payload, headers=headers)
            sock.settimeout(left())
            resp = conn.getresponse()
            body = bytearray()
            while True:
                sock.settimeout(left())
                chunk = resp.read1(1 << 16)
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise _Retryable(f"answer larger than {MAX_RESPONSE_BYTES >> 20} MiB")
            return resp.status, bytes(body)
        except TimeoutError:  # the socket's own message ("timed out") does not say after how long
            raise TimeoutError(f"no complete answer within {self.timeout:g} s") from None
        finally:
            conn.close()

    def _parse(self, body: bytes, settings: GenerationSettings) -> Completion:
        def garbage() -> _Retryable:
            return _Retryable(f"returned garbage: {body[:200].decode('utf-8', 'replace')!r}")

        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise garbage() from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise garbage()
        choice = data["choices"][0]
        if not isinstance(choice, dict):
            raise garbage()
        if self.chat:
            message = choice.get("message")
            if not isinstance(message, dict):
                raise garbage()
            text = message.get("content") or ""  # null content: a reply without text
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise garbage()
        cut = cut_at_stop(text, settings.stop)
        finish = "length" if choice.get("finish_reason") == "length" and cut == text else "stop"
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
            return Completion(cut, prompt_tokens, completion_tokens, finish)
        return Completion(cut, -1, _words(cut), finish, estimated_tokens=True)  # prompt words filled in by caller

    def _request(self, index: int, prompt: str, settings: GenerationSettings) -> Completion:
        body: dict[str, Any] = {"model": self.model} if self.model else {}
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        body.update(max_tokens=settings.max_tokens, temperature=settings.temperature, top_p=settings.top_p,
                    seed=settings.seed)
        if settings.stop:
            body["stop"] = list(settings.stop)
        payload = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            try:
                status, answer = self._post(payload)
                if 200 <= status < 300:
                    c = self._parse(answer, settings)
                    if c.prompt_tokens < 0:
                        c = Completion(c.text, _words(prompt), c.completion_tokens, c.finish_reason, True)
                    return c
                detail = answer[:200].decode("utf-8", "replace")
                if status == 429 or status >= 500:
                    raise _Retryable(f"HTTP {status}: {detail}")
                raise BackendError(self._client_error(status, detail))
            except _Retryable as e:
                last = str(e)
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, DNS, TLS
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if attempt < self.retries:
                with self._lock:
                    delay = min(MAX_BACKOFF, self.backoff * 2**attempt * (1 + 0.1 * self._rng.random()))
                    self.retries_log.append({"url": self.url, "prompt": index, "attempt": attempt + 1,
                                             "error": last, "delay": round(delay, 4)})
                log.warning("%s: attempt %d failed (%s); retrying in %.2f s", self.name, attempt + 1, last, delay)
                time.sleep(delay)
        hint = ("is the server running and the URL right?" if "refused" in last.lower() or "Errno" in last
                else "check the server's health and logs, or raise timeout= / retries=")
        raise BackendError(f"{self.name}: POST {self.url} failed after {self.retries + 1} attempts; "
                           f"last error: {last}; {hint}")

    def _client_error(self, status: int, detail: str) -> str:
        what = f"{self.name}: POST {self.url} was refused with HTTP {status} ({detail!r}), not retried; "
        if status in (401, 403):
            return what + "check the API key (api_key=, or the OPENAI_API_KEY environment variable)"
        if status == 404:
            return what + ("check the base URL (it usually ends in /v1), the model name (openai:URL#model=NAME), "
                           "and whether the server offers " + ("/chat/completions" if self.chat else "/completions"))
        return what + "the server rejected the request; check the model name and the generation settings"

    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> list[Completion]:
        if not prompts:
            return []
        if len(prompts) == 1:
            return [self._request(0, prompts[0], settings)]
        pool = ThreadPoolExecutor(min(self.max_concurrency, len(prompts)), thread_name_prefix="loom-openai")
        try:
            futures = [pool.submit(self._request, i, p, settings) for i, p in enumerate(prompts)]
            return [f.result() for f in futures]
        finally:  # on a failure, prompts not yet sent are dropped; those in flight end within their deadline
            pool.shutdown(wait=True, cancel_futures=True)


# --- from a string ------------------------------------------------------------------------------------

BACKEND_FORMS = ("loom:RUN_DIR", "hf:MODEL_DIR", "openai:BASE_URL[#model=NAME[&chat=true]]", "rules")


def make_backend(spec: str, **kwargs: Any) -> Backend:
    """A backend from its string form; `kwargs` go to the constructor (device=, timeout=, ...).

    "loom:RUN_DIR" a loom run; "hf:MODEL_DIR" a local transformers model; "openai:BASE_URL" an
    OpenAI-compatible server, with optional "#model=NAME" and "&chat=true" after the URL;
    "rules" an empty RuleBackend (tests add rules)."""
    scheme, sep, rest = spec.partition(":")
    forms = ", ".join(BACKEND_FORMS)
    if spec.strip() == "rules":
        return RuleBackend(**kwargs)
    if not sep or scheme not in ("loom", "hf", "openai"):
        raise BackendError(f"unknown model backend {spec!r}; use one of: {forms}")
    if not rest:
        raise BackendError(f"model backend {spec!r} names no {'URL' if scheme == 'openai' else 'directory'}; "
                           f"use one of: {forms}")
    if scheme == "loom":
        return LoomBackend(rest, **kwargs)
    if scheme == "hf":
        return HFBackend(rest, **kwargs)
    url, _, fragment = rest.partition("#")
    options: dict[str, Any] = {}
    for item in filter(None, fragment.split("&")):
        key, eq, value = item.partition("=")
        if key == "model" and eq:
            options["model"] = value
        elif key == "chat" and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            options["chat"] = value.lower() in ("true", "1", "yes")
        else:
            raise BackendError(f"model backend {spec!r}: cannot read {item!r} after '#'; "
                               "the options are model=NAME and chat=true|false, joined by '&'")
    return OpenAIBackend(url, **{**options, **kwargs})


__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "GenerationSettings",
    "HFBackend",
    "LoomBackend",
    "OpenAIBackend",
    "RuleBackend",
    "cut_at_stop",
    "make_backend",
]
