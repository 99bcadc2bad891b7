"""Any OpenAI-compatible HTTP endpoint as a backend (llama.cpp server, vLLM, Ollama, ...).

Prompts are sent concurrently; network errors, timeouts, HTTP 429 / 5xx and garbled answers are
retried with exponential backoff and recorded in `retries_log`; every socket operation runs
under a deadline, so a call never hangs. The client is the standard library's `http.client`
(the package docstring says why)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from loom.reason.backends.base import Backend, BackendError, Completion, GenerationSettings, word_count
from loom.util import cut_at_stop

log = logging.getLogger(__name__)

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
        return Completion(cut, -1, word_count(cut), finish, estimated_tokens=True)  # prompt words filled in by caller

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
                        c = Completion(c.text, word_count(prompt), c.completion_tokens, c.finish_reason, True)
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
