"""Language models behind one small interface, for the reasoning executor: prompts in, completions out.

A `Backend` has a `name` and one method, `complete(prompts, settings)`, which takes a batch of
prompts and returns one `Completion` per prompt, in order. Three kinds:

  - `LoomBackend`: a loom run directory (its newest complete checkpoint), through `LoomLM`;
  - `HFBackend`: a local Hugging Face model directory through `transformers` (an optional
    dependency, imported only here and only when used; nothing is ever downloaded);
  - `OpenAIBackend`: any OpenAI-compatible HTTP endpoint (llama.cpp server, vLLM, Ollama, ...),
    prompts sent concurrently, network errors, timeouts, HTTP 429 / 5xx and garbled answers
    retried with exponential backoff and recorded in `retries_log`, every socket operation under
    a deadline so that a call never hangs.

`make_backend("loom:RUN_DIR" | "hf:MODEL_DIR" | "openai:BASE_URL#model=NAME")` builds one from a
string, as the CLI and program files name them. One module per backend; the tests' stand-in
(`RuleBackend`, regex rules instead of a model) lives beside the tests.

The HTTP client is the standard library's `http.client`: the protocol is two JSON endpoints
(`/completions` and `/chat/completions`), and what matters (a deadline on connect and on every
read, retries we can record, no proxy surprises for a server on localhost) is easier to get
exactly right by hand than through a heavy client dependency. Proxies are therefore not used.

This package does not know how prompts are written (no prompting strategy, no few-shot examples,
no chat templates beyond the one-message chat request) nor anything of graphs, variables or
answers: that is `loom.reason.program` and the executor's job.
"""

from __future__ import annotations

from typing import Any

from loom.reason.backends.base import Backend, BackendError, Completion, GenerationSettings
from loom.reason.backends.hf import HFBackend
from loom.reason.backends.loom_run import LoomBackend
from loom.reason.backends.openai_http import OpenAIBackend

BACKEND_FORMS = ("loom:RUN_DIR", "hf:MODEL_DIR", "openai:BASE_URL[#model=NAME[&chat=true]]")


def make_backend(spec: str, **kwargs: Any) -> Backend:
    """A backend from its string form; `kwargs` go to the constructor (device=, timeout=, ...).

    "loom:RUN_DIR" a loom run; "hf:MODEL_DIR" a local transformers model; "openai:BASE_URL" an
    OpenAI-compatible server, with optional "#model=NAME" and "&chat=true" after the URL."""
    scheme, sep, rest = spec.partition(":")
    forms = ", ".join(BACKEND_FORMS)
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


__all__ = ["Backend", "BackendError", "Completion", "GenerationSettings", "HFBackend", "LoomBackend", "OpenAIBackend",
           "make_backend"]
