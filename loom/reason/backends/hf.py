"""A local Hugging Face model directory as a backend, through `transformers` (an optional
dependency, imported only here and only when used; nothing is ever downloaded)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loom.reason.backends.base import Backend, BackendError, Completion, GenerationSettings
from loom.util import cut_at_stop


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
