"""A loom run as an lm-evaluation-harness model, so any lm-eval task runs on a loom checkpoint.

Owns the adapter only: `LoomHarnessLM`, registered with lm-eval under the name "loom", and
`run_harness`, which runs `lm_eval.simple_evaluate` with it. All scoring and generation is
delegated to `loom.eval.lm.LoomLM`, so a log-likelihood or a generation means the same thing here
as in `loom eval`: sequences start with `<|bos|>`, a continuation's tokens are the tail of the
whole string's encoding, long texts are scored in sliding windows of half the context, and
greedy decoding stops at `<|eos|>` or a stop string. Tasks, prompts, metrics and datasets are
lm-eval's business; this module does not know any of them.

From Python (lm-eval is an optional dependency: `pip install 'loom[eval]'`):

    import lm_eval
    from lm_eval.tasks import TaskManager
    import loom.eval.harness  # registers the model "loom"

    results = lm_eval.simple_evaluate(
        model="loom", model_args="run=runs/quickstart,device=cpu,batch_size=16",
        tasks=["my_task"], task_manager=TaskManager(include_path="path/to/task/yamls"))
    print(results["results"]["my_task"])

or simply `run_harness("runs/quickstart", ["my_task"], include_path="path/to/task/yamls")`.
Model arguments: `run` (a run directory, required), `device`, `batch_size`, `max_gen_toks` (the
generation budget when a task sets none) and `seed` (of sampled generations, per prompt).

`loglikelihood_rolling` differs in one detail from lm-eval's Hugging Face model: texts longer
than the context are scored in windows advancing by half a context (every token sees at least
half a window of context) rather than in disjoint windows, as loom's bits per byte is.
"""

from __future__ import annotations

import difflib
import json
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loom.errors import LoomError

try:
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ModuleNotFoundError as e:
    if e.name is not None and e.name.split(".")[0] == "lm_eval":
        raise LoomError("lm-evaluation-harness is not installed: pip install 'loom[eval]'") from None
    raise LoomError(f"lm-evaluation-harness could not be imported ({e}): pip install 'loom[eval]'") from None

from tqdm import tqdm

from loom.eval.lm import LoomLM

log = logging.getLogger(__name__)

# Generation settings this adapter understands (lm-eval's names and the aliases its other models
# accept for the token budget); others (top_k, ...) are ignored with a warning.
BUDGET_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
GEN_KEYS = {"until", "do_sample", "temperature", "top_p", *BUDGET_KEYS}
PROGRESS_MIN = 64  # requests: fewer than this show no progress bar


@register_model("loom")
class LoomHarnessLM(LM):
    """lm-eval's `LM` over a loom run: every request goes to one `LoomLM`."""

    def __init__(self, run: str | Path | None = None, device: str = "cpu", batch_size: int | str = 16,
                 max_gen_toks: int | str = 256, seed: int | str = 0, max_batch_size: Any = None,
                 lm: LoomLM | None = None) -> None:
        """`run`: a loom run directory (its newest complete checkpoint is loaded); or `lm`, a
        LoomLM already loaded. `max_batch_size` is accepted for lm-eval's sake and ignored.
        Values may come as strings (`model_args="run=...,batch_size=8"`)."""
        super().__init__()
        batch = _as_int("batch_size", batch_size, default=16)
        self.max_gen_toks = _as_int("max_gen_toks", max_gen_toks)
        self.seed = _as_int("seed", seed)
        if lm is None:
            if not run:
                raise LoomError("the loom lm-eval model needs a run directory: model_args='run=runs/NAME'")
            lm = LoomLM.from_run(run, device=str(device), batch_size=batch)
        else:
            lm.batch_size = batch
        self.lm = lm
        self.run = str(run) if run else None
        self._device = lm.device
        self._warned: set[str] = set()

    @classmethod
    def from_loom(cls, lm: LoomLM, **kwargs: Any) -> LoomHarnessLM:
        """Wraps a LoomLM already in memory (no run directory read); a `batch_size` given here
        becomes that LoomLM's."""
        return cls(lm=lm, batch_size=kwargs.pop("batch_size", lm.batch_size), **kwargs)

    # --- what lm-eval and its loggers read -------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.lm.tok.eos_id

    @property
    def eot_token(self) -> str:
        return self.lm.tok.decode([self.lm.tok.eos_id], skip_special_tokens=False)

    @property
    def max_length(self) -> int:
        return self.lm.max_len

    @property
    def batch_size(self) -> int:
        return self.lm.batch_size

    @property
    def tokenizer_name(self) -> str:
        return f"loom-bpe-{self.lm.tok.sha256()[:16]}"

    def get_model_info(self) -> dict[str, Any]:
        return {"loom_run": self.run, "max_length": self.max_length,
                "n_params": sum(p.numel() for p in self.lm.model.parameters())}

    # --- the three request types -------------------------------------------------------------------

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context) in nats, greedy?) for each `(context, continuation)`.
        An empty context is scored after `<|bos|>` alone."""
        out: list[tuple[float, bool]] = []
        for chunk in self._chunks(requests, "loglikelihood", disable_tqdm):
            results = self.lm.loglikelihood([_text_args(r, 2) for r in chunk])
            for r, res in zip(chunk, results):
                self.cache_hook.add_partial("loglikelihood", r.args, res)
            out.extend(results)
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """log p(text) in nats for each `(text,)`, every token scored after `<|bos|>`."""
        out: list[float] = []
        for chunk in self._chunks(requests, "loglikelihood_rolling", disable_tqdm):
            results = self.lm.rolling_loglikelihood([_text_args(r, 1)[0] for r in chunk])
            for r, res in zip(chunk, results):
                self.cache_hook.add_partial("loglikelihood_rolling", r.args, res)
            out.extend(results)
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """The continuation of each `(context, gen_kwargs)`, cut before the first stop string of
        `until` (the EOS token always stops it). Greedy unless `do_sample` is true (or absent with
        a temperature > 0) and the temperature, 1 when not given, is above 0. Identical requests
        (lm-eval repeats a request to draw several samples) are decoded together: one greedy
        answer, or n distinct samples."""
        groups: dict[tuple[str, str], list[int]] = {}  # (context, settings) -> request indices
        for i, r in enumerate(requests):
            context, gen_kwargs = _text_args(r, 2)
            groups.setdefault((context, json.dumps(gen_kwargs, sort_keys=True, default=str)), []).append(i)
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="loom generate_until",
                   disable=disable_tqdm or len(requests) < PROGRESS_MIN)
        for indices in groups.values():
            context, gen_kwargs = requests[indices[0]].args[:2]
            texts = self._generate(context, gen_kwargs or {}, len(indices))
            for i, text in zip(indices, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
            bar.update(len(indices))
        bar.close()
        return out  # type: ignore[return-value]

    def _generate(self, context: str, gen_kwargs: dict, n: int) -> list[str]:
        """n continuations of one prompt under one request's settings (read, never modified:
        lm-eval hands the same dict to every request of a task)."""
        until = gen_kwargs.get("until")
        until = [until] if isinstance(until, str) else list(until or [])
        if not all(isinstance(s, str) for s in until):
            raise LoomError(f"generation setting until must be a string or a list of strings, not {until!r}")
        until = [s for s in [*until, self.eot_token] if s]  # an empty stop string would stop at once
        budget = next((gen_kwargs[k] for k in BUDGET_KEYS if gen_kwargs.get(k) is not None), self.max_gen_toks)
        temperature = float(gen_kwargs.get("temperature", 1.0 if gen_kwargs.get("do_sample") else 0.0))
        sample = bool(gen_kwargs.get("do_sample", temperature > 0)) and temperature > 0
        top_p = float(gen_kwargs.get("top_p") or 1.0)
        for key in sorted(set(gen_kwargs) - GEN_KEYS - self._warned):
            log.warning("loom: generation setting %r is not supported and is ignored", key)
            self._warned.add(key)
        if not sample:  # every repeat of a greedy request is the same text
            return self.lm.generate(context, int(budget), stop=until, n=1) * n
        seed = self.seed + zlib.crc32(context.encode())  # per prompt: independent of request order
        return self.lm.generate(context, int(budget), stop=until, n=n, temperature=temperature, top_p=top_p,
                                seed=seed)

    def _chunks(self, requests: list, what: str, disable_tqdm: bool):
        """The requests in slices of a few batches, with a progress bar over them when many."""
        size = max(1, self.lm.batch_size * 8)
        with tqdm(total=len(requests), desc=f"loom {what}",
                  disable=disable_tqdm or len(requests) < PROGRESS_MIN) as bar:
            for start in range(0, len(requests), size):
                chunk = requests[start : start + size]
                yield chunk
                bar.update(len(chunk))


def _as_int(name: str, value: Any, default: int | None = None) -> int:
    if default is not None and (value is None or str(value).startswith("auto")):
        return default  # lm-eval's "auto" batch size: loom batches by length, a fixed size is fine
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LoomError(f"loom lm-eval model: {name} must be an integer, not {value!r}") from None


def _text_args(request: Any, n: int) -> tuple:
    """The first n arguments of a request; loom models read text only."""
    args = request.args
    if len(args) > n and args[n]:
        raise LoomError(f"loom models read text only; this task sends {sorted(args[n])} inputs too")
    return args[:n]


def resolve_tasks(task_manager: Any, tasks: Sequence[str]) -> list[str]:
    """Checks task names against the task manager (a name, a glob pattern or a YAML path each)."""
    known = task_manager.all_tasks
    resolved: list[str] = []
    for name in tasks:
        if name in known or Path(name).is_file():
            resolved.append(name)
        elif any(c in name for c in "*?[") and (matches := task_manager.match_tasks([name])):
            resolved.extend(m for m in matches if m not in resolved)
        else:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise LoomError(f"unknown lm-eval task {name!r}{hint} "
                            "(pass the folder of your task YAML files as include_path)")
    return resolved


def run_harness(run_dir: str | Path, tasks: list[str], include_path: str | Path | None = None,
                limit: int | float | None = None, num_fewshot: int | None = None, device: str = "cpu",
                batch_size: int = 16, *, include_defaults: bool = True, **evaluate_kwargs: Any) -> dict:
    """Runs lm-eval tasks on a loom run and returns lm-eval's results dict (`results[task]` holds
    `"acc,none"` and the like; see `lm_eval.simple_evaluate`). `include_path`: a folder of extra
    task YAML files; `include_defaults=False` skips indexing lm-eval's own tasks (seconds);
    `evaluate_kwargs` go to `simple_evaluate` as they are (e.g. `bootstrap_iters`, `gen_kwargs`,
    `log_samples`)."""
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise LoomError("no lm-eval task given")
    paths = str(include_path) if include_path is not None else None
    task_manager = TaskManager(include_path=paths, include_defaults=include_defaults)
    names = resolve_tasks(task_manager, tasks)
    results = lm_eval.simple_evaluate(
        model="loom", model_args={"run": str(run_dir)}, batch_size=batch_size, device=device,
        tasks=names, num_fewshot=num_fewshot, limit=limit, task_manager=task_manager, **evaluate_kwargs,
    )
    return results  # type: ignore[return-value]
