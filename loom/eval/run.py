"""`loom eval`: run suites on a trained run, write `eval/<suite>.json` and a markdown table.

A suite is one of:
  - `bpb`: held-out bits per byte per domain on the run's validation shards (`loom.eval.bpb`);
  - a generated reasoning suite (`loom.eval.suites.SUITES`): exact match, zero-shot and few-shot,
    at each configured difficulty, greedy answers: the first line with text after "A:" (a model
    that starts its answer on the next line, as code models do after a colon, is still read);
  - `humaneval`: pass@k on HumanEval in the sandbox (`loom.eval.humaneval`);
  - a path ending in `.jsonl`: real users' prompts with their rated answers, as `loom feedback
    export` writes them (`loom.eval.feedback`); its results are named `feedback-<file stem>`.
Groups: `reasoning` (every generated suite) and `all` (everything).

Each suite's result is `RUN/eval/<suite>.json` (metrics, settings, checkpoint, seconds) beside
`RUN/eval/<suite>.jsonl` (every item: prompt's question, answer, prediction, verdict), written
atomically; `RUN/eval/results.md` is rebuilt from every result present, so suites run at
different times add up. `compare_runs` puts two runs' metrics side by side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from loom.chat import END_OF_TURN
from loom.errors import LoomError
from loom.eval.lm import LoomLM
from loom.util import atomic_write_text

GROUPS = ("all", "reasoning")


def suite_names() -> list[str]:
    from loom.eval.suites import SUITES

    return ["bpb", *SUITES, "humaneval"]


def resolve_suites(names: list[str]) -> list[str]:
    """Expands groups and checks names, keeping the canonical order."""
    from loom.eval.suites import SUITES

    known = suite_names()
    wanted: set[str] = set()
    files = []
    for name in names:
        if name.endswith(".jsonl"):
            if not Path(name).is_file():
                raise LoomError(f"eval suite file {name} does not exist; write one with `loom feedback export`")
            files.append(name)
        elif name == "all":
            wanted.update(known)
        elif name == "reasoning":
            wanted.update(SUITES)
        elif name in known:
            wanted.add(name)
        else:
            raise LoomError(f"unknown eval suite {name!r}; choose from {', '.join([*GROUPS, *known])}")
    return [n for n in known if n in wanted] + files


def _progress(iterable, desc: str, total: int | None = None) -> Iterator:
    return iter(tqdm(iterable, desc=desc, total=total, unit="item", leave=False, dynamic_ncols=True))


# ---------------------------------------------------------------------------------------------
# The suites
# ---------------------------------------------------------------------------------------------


def run_bpb(lm: LoomLM, cfg) -> tuple[dict, list[dict]]:
    from loom.data import shard_dir
    from loom.eval.bpb import bits_per_byte

    rows = bits_per_byte(lm, shard_dir(cfg), "val", cfg.eval.bpb_max_bytes or None)
    if not rows:
        raise LoomError(f"{shard_dir(cfg)} has no validation documents; raise data.val_fraction and rebuild")
    metrics = {f"{domain}/bits_per_byte": row["bits_per_byte"] for domain, row in rows.items()}
    return metrics, [{"domain": d, **row} for d, row in rows.items()]


def run_generated(lm: LoomLM, cfg, name: str) -> tuple[dict, list[dict]]:
    from loom.eval.suites import SUITES, format_prompt, score

    suite = SUITES[name]
    e = cfg.eval
    metrics: dict[str, float] = {}
    records: list[dict] = []
    for difficulty in e.difficulty.get(name) or [suite.default_difficulty]:
        items = suite.items("test", e.items, difficulty, e.seed)
        shots = suite.items("train", e.shots, difficulty, e.seed) if e.shots else []
        max_tokens = _answer_budget(lm, items)
        chat = e.format == "chat"
        for mode, examples in (("zero-shot", []), (f"{e.shots}-shot", shots)):
            if mode != "zero-shot" and not examples:
                continue
            mode = f"chat-{mode}" if chat else mode
            right = 0
            for item in _progress(items, f"{name} d={difficulty} {mode}"):
                if chat:
                    (completion,) = lm.generate_ids(_chat_prompt(lm, item, examples, max_tokens), max_tokens,
                                                    stop=("\n",), skip_leading_whitespace=True,
                                                    stop_ids=[lm.tok.token_id(END_OF_TURN)])
                else:
                    prompt = _fitting_prompt(lm, item, examples, max_tokens, format_prompt)
                    (completion,) = lm.generate(prompt, max_tokens, stop=("\n",), skip_leading_whitespace=True)
                completion = completion.lstrip()
                ok = score(item, completion)
                right += ok
                records.append({"id": item.id, "difficulty": difficulty, "mode": mode, "question": item.question,
                                "answer": item.answer, "prediction": completion.strip(), "correct": ok})
            metrics[f"d{difficulty}/{mode}/exact_match"] = right / max(1, len(items))
    return metrics, records


def _answer_budget(lm: LoomLM, items) -> int:
    """Tokens allowed for an answer: the longest right answer's length, doubled, plus a few."""
    longest = max(len(lm.encode(" " + item.answer)) for item in items)
    return 2 * longest + 4


def _fitting_prompt(lm: LoomLM, item, shots, max_tokens: int, format_prompt: Callable) -> str:
    """The prompt with as many of the shots as fit the model's context beside the answer."""
    shots = list(shots)
    while True:
        prompt = format_prompt(item, shots)
        if not shots or len(lm.encode(prompt)) + max_tokens + 1 <= lm.max_len:
            return prompt
        shots.pop(0)


def _chat_prompt(lm: LoomLM, item, shots, max_tokens: int) -> list[int]:
    """The question as a user message in the chat template, after as many shots (earlier
    user/assistant turns) as fit the context beside the answer."""
    from loom.chat import Message, render

    shots = list(shots)
    while True:
        turns = [m for s in shots for m in (Message("user", s.question), Message("assistant", s.answer))]
        ids = render(lm.tok, [*turns, Message("user", item.question)], add_generation_prompt=True).ids
        if not shots or len(ids) + max_tokens <= lm.max_len:
            return ids
        shots.pop(0)


def run_humaneval(lm: LoomLM, cfg) -> tuple[dict, list[dict]]:
    from loom.eval.humaneval import STOP_SEQUENCES, evaluate_humaneval

    e = cfg.eval
    greedy = e.humaneval_samples == 1

    def generate(prompt: str, n: int) -> list[str]:
        return lm.generate(prompt, e.humaneval_max_new_tokens, stop=STOP_SEQUENCES, n=n,
                           temperature=0.0 if greedy else e.humaneval_temperature, top_p=0.95, seed=e.seed)

    result = evaluate_humaneval(generate, e.humaneval_samples, e.humaneval_k, e.humaneval_limit or None,
                                progress=lambda it: _progress(it, "humaneval"))
    metrics = dict(result["metrics"])
    metrics["solved_problems"] = result["solved"]
    return metrics, result["records"]


# ---------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------


def evaluate_run(run_dir: str | Path, suites: list[str], overrides: list[str] = (), device: str = "cpu",
                 log: Callable[[str], None] = print) -> dict[str, dict]:
    """Runs each suite on the run's newest checkpoint; returns {suite: result} and writes them."""
    from loom.config import load_config

    run_dir = Path(run_dir)
    names = resolve_suites(suites)
    lm = LoomLM.from_run(run_dir, device)
    cfg = load_config(run_dir / "config.toml", list(overrides))
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    results = {}
    for name in names:
        started = time.time()
        if name == "bpb":
            metrics, records = run_bpb(lm, cfg)
        elif name == "humaneval":
            metrics, records = run_humaneval(lm, cfg)
        elif name.endswith(".jsonl"):
            from loom.eval.feedback import run_feedback_suite

            metrics, records = run_feedback_suite(lm, name)
            name = f"feedback-{Path(name).stem}"
        else:
            metrics, records = run_generated(lm, cfg, name)
        result = {"suite": name, "run": str(run_dir), "metrics": metrics, "settings": _settings(cfg, name),
                  "seconds": round(time.time() - started, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        atomic_write_text(out / f"{name}.json", json.dumps(result, indent=2) + "\n")
        results[name] = result
        log(f"[loom] eval {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
            + f" ({result['seconds']:.0f}s)")
    atomic_write_text(out / "results.md", results_table(run_dir))
    return results


def _settings(cfg, name: str) -> dict:
    e = cfg.eval
    if name == "bpb":
        return {"split": "val", "max_bytes_per_domain": e.bpb_max_bytes}
    if name == "humaneval":
        return {"samples": e.humaneval_samples, "k": e.humaneval_k, "temperature": e.humaneval_temperature,
                "max_new_tokens": e.humaneval_max_new_tokens, "limit": e.humaneval_limit}
    return {"items": e.items, "shots": e.shots, "seed": e.seed, "difficulty": e.difficulty.get(name),
            "format": e.format}


def _fmt(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def read_results(run_dir: str | Path) -> dict[str, dict]:
    out = Path(run_dir) / "eval"
    if not out.is_dir():
        raise LoomError(f"{run_dir} has no eval results; run `loom eval --run {run_dir} --suite all`")
    results = {}
    for path in sorted(out.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise LoomError(f"{path} is not valid JSON ({e}); rerun that suite") from None
        results[result.get("suite", path.stem)] = result
    return results


def results_table(run_dir: str | Path) -> str:
    results = read_results(run_dir)
    lines = [f"# Evaluation of `{run_dir}`", "", "| suite | metric | value | seconds |", "|---|---|---|---|"]
    for name in sorted(results, key=_order):
        r = results[name]
        for i, (metric, value) in enumerate(r["metrics"].items()):
            lines.append(f"| {name if i == 0 else ''} | {metric} | {_fmt(value)} | {r['seconds'] if i == 0 else ''} |")
    return "\n".join(lines) + "\n"


def _order(name: str) -> int:
    names = suite_names()
    return names.index(name) if name in names else len(names)


def compare_runs(run_a: str | Path, run_b: str | Path) -> str:
    """A markdown table of both runs' metrics side by side, with B - A."""
    a, b = read_results(run_a), read_results(run_b)
    lines = [f"| suite | metric | A: {run_a} | B: {run_b} | B - A |", "|---|---|---|---|---|"]
    for name in sorted(set(a) | set(b), key=_order):
        ma, mb = a.get(name, {}).get("metrics", {}), b.get(name, {}).get("metrics", {})
        for metric in list(dict.fromkeys([*ma, *mb])):
            va, vb = ma.get(metric), mb.get(metric)
            delta = f"{vb - va:+.4f}" if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else ""
            lines.append(f"| {name} | {metric} | {'' if va is None else _fmt(va)} | "
                         f"{'' if vb is None else _fmt(vb)} | {delta} |")
    return "\n".join(lines) + "\n"


def emit_training_split(suites: list[str], out: str | Path, items: int, difficulty: int | None = None,
                        seed: int = 0) -> int:
    """`loom eval emit`: the train split of generated suites as JSONL documents ({"id", "text"})
    to train on, written atomically to `out`; returns how many."""
    from loom.eval.suites import SUITES, training_text

    unknown = [n for n in suites if n not in SUITES]
    if unknown:
        raise LoomError(f"unknown generated suite(s) {', '.join(unknown)}; loom eval emit takes: {', '.join(SUITES)}")
    lines = []
    for name in suites:
        level = difficulty if difficulty is not None else SUITES[name].default_difficulty
        for i, text in enumerate(training_text(name, items, level, seed)):
            lines.append(json.dumps({"id": f"{name}/train/{level}/{i}", "text": text}) + "\n")
    atomic_write_text(Path(out), "".join(lines))
    return len(lines)
