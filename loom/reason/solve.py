"""Answering one question with a strategy, and a strategy's accuracy on a generated suite.

`solve` picks the program (a strategy's, the planner's, or a given one), runs it with the
executor in `workdir` (trace, state, pictures), and returns the answer with the counts.
`evaluate_strategies` asks a suite's test items with each strategy on the same backend and
scores them by the suite's exact match, so strategies compare on equal terms.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from loom.errors import LoomError
from loom.reason.backends import Backend, GenerationSettings
from loom.reason.executor import Budget, Executor
from loom.reason.planner import decompose, plan_program, write_plan
from loom.reason.program import Program
from loom.reason.strategies import PROGRAM_DIR, STRATEGIES, cot_program, direct_program
from loom.util import atomic_write_bytes


def solve(question: str, backend: Backend, strategy: str = "graph", program: Program | None = None,
          workdir: str | Path | None = None, rag_index: str | None = None, k: int = 3, samples: int = 5,
          budget: Budget | None = None, max_parallel: int = 4, resume: bool = False,
          settings: GenerationSettings | None = None, pictures: bool = True) -> dict:
    """Answers `question`; returns the run's result as a dict (answer, status, counts, workdir)
    plus "strategy", "program" and, when the model planned, "plan" (whose calls and tokens are
    included in the counts, as in the trace's `run_end`; budgets apply to the program's run after
    planning). Status "empty-answer" and "no-answer" come with an "error" saying which step left
    the answer empty."""
    if strategy not in STRATEGIES:
        raise LoomError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    notes = []
    plan = None
    if strategy == "direct":
        program = direct_program(rag_index, k)
    elif strategy == "cot":
        program = cot_program(rag_index, k)
    elif strategy == "sc":
        program = cot_program(rag_index, k, samples=samples)
    elif strategy == "code":
        plan, program = write_plan(question, backend)
        notes.append(("plan", plan.to_json()))
    elif program is None:
        plan = decompose(question, backend)
        program = plan_program(plan, rag_index, k)
        notes.append(("plan", plan.to_json()))
    elif rag_index:
        raise LoomError("--rag adds retrieval to the direct, cot and sc strategies and to planned graphs; "
                        "a program retrieves with its own retrieve nodes")
    if "question" not in program.inputs:
        raise LoomError(f"program {program.name!r} must take the input \"question\" (it takes "
                        f"{', '.join(program.inputs) or 'nothing'})")
    executor = Executor(backend, workdir, max_parallel=max_parallel, budget=budget, settings=settings)
    spent = (plan.attempts, plan.tokens) if plan is not None else (0, 0)  # the planning calls count too
    result = executor.run(program, {"question": question}, resume=resume, notes=notes, spent=spent)
    out = {**result.to_json(), "strategy": strategy, "program": program.name}
    if plan is not None:
        out["plan"] = plan.to_json()
    if workdir and pictures:
        from loom.reason.render import write_pictures

        mmd, page = write_pictures(program, workdir)
        out["pictures"] = [str(mmd), str(page)]
    return out


def suite_program(suite: str) -> Program | None:
    """The built-in program for a suite's questions, if loom ships one."""
    from loom.reason.strategies import builtin_program

    return builtin_program(suite) if (PROGRAM_DIR / f"{suite}.json").is_file() else None


def evaluate_strategies(suite: str, backend: Backend, strategies: list[str], difficulties: list[int] | None = None,
                        items: int = 20, seed: int = 0, program: Program | None = None,
                        workdir: str | Path | None = None, samples: int = 5, log=print) -> list[dict]:
    """One row per (strategy, difficulty): accuracy (`right` of `items`, drawn with `seed`),
    model calls and tokens per item, seconds, and for the graph strategy which program answered
    ("planner" or the program's name)."""
    from loom.eval.suites import SUITES, score

    if suite not in SUITES:
        raise LoomError(f"unknown suite {suite!r}; generated suites: {', '.join(SUITES)}")
    graph_program = program or suite_program(suite)
    rows = []
    for difficulty in difficulties or [SUITES[suite].default_difficulty]:
        questions = SUITES[suite].items("test", items, difficulty, seed)
        for strategy in strategies:
            started = time.time()
            right = calls = tokens = 0
            for i, item in enumerate(questions):
                where = Path(workdir) / strategy / f"d{difficulty}" / str(i) if workdir else None
                result = solve(item.question, backend, strategy, graph_program if strategy == "graph" else None,
                               where, samples=samples, pictures=False)
                ok = result["answer"] is not None and score(item, result["answer"])
                right += ok
                calls += result["model_calls"]
                tokens += result["tokens"]
            n = max(1, len(questions))
            rows.append({"suite": suite, "difficulty": difficulty, "strategy": strategy,
                         "program": (graph_program.name if graph_program else "planner") if strategy == "graph" else "",
                         "seed": seed, "right": right, "accuracy": right / n, "items": len(questions),
                         "calls_per_item": calls / n,
                         "tokens_per_item": tokens / n, "seconds": round(time.time() - started, 1)})
            log(f"[loom] {suite} d={difficulty} {strategy}: {right}/{len(questions)} right")
    return rows


def pool_rows(rows: list[dict], label=None) -> dict[tuple, dict]:
    """Rows of `evaluate_strategies` (from one seed or several) pooled per (suite, difficulty,
    label), in first-seen order; `label(row)` names the line a row belongs to (default: the
    strategy, with the program for graph). Each pooled row: right, items, calls, tokens, seconds."""
    label = label or _strategy_name
    pooled: dict[tuple, dict] = {}
    for r in rows:
        p = pooled.setdefault((r["suite"], r["difficulty"], label(r)),
                              {"right": 0, "items": 0, "calls": 0.0, "tokens": 0.0, "seconds": 0.0})
        p["right"] += r["right"]
        p["items"] += r["items"]
        p["calls"] += r["calls_per_item"] * r["items"]
        p["tokens"] += r["tokens_per_item"] * r["items"]
        p["seconds"] += r["seconds"]
    return pooled


def strategies_table(rows: list[dict]) -> str:
    """A markdown table: each (suite, difficulty, strategy) pooled over the seeds, its accuracy
    with a 95% Wilson interval."""
    from loom.eval.stats import accuracy_with_interval

    lines = ["| suite | difficulty | strategy | accuracy [95% interval] | right / asked | model calls / item | "
             "tokens / item | seconds |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for (suite, difficulty, name), p in pool_rows(rows).items():
        n = max(1, p["items"])
        lines.append(f"| {suite} | {difficulty} | {name} | {accuracy_with_interval(p['right'], p['items'])} | "
                     f"{p['right']} / {p['items']} | {p['calls'] / n:.1f} | {p['tokens'] / n:.0f} | "
                     f"{p['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def strategies_plot(rows: list[dict], path: str | Path, label=None, cap: int | dict[str, int] | None = None) -> Path:
    """Accuracy against difficulty (the question's length), a panel per suite and a line per
    strategy (or per `label(row)`), each point pooled over the seeds with its 95% Wilson
    interval as an error bar; `cap`, the longest length trained on (one for all, or by suite),
    dotted. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loom.eval.stats import wilson_interval

    pooled = pool_rows(rows, label)
    suites = list(dict.fromkeys(suite for suite, _, _ in pooled))
    fig, axes = plt.subplots(1, len(suites), figsize=(4 * len(suites), 3.2), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        names = list(dict.fromkeys(n for s, _, n in pooled if s == suite))
        lengths = [d for s, d, _ in pooled if s == suite]
        # lines that agree would hide one another: each is shifted a little and marked its own way
        dodge = 0.012 * max(1, max(lengths) - min(lengths))
        for i, name in enumerate(names):
            points = sorted(((d, p) for (s, d, n), p in pooled.items() if s == suite and n == name),
                            key=lambda point: point[0])
            xs = [d + (i - (len(names) - 1) / 2) * dodge for d, _ in points]
            ys = [p["right"] / max(1, p["items"]) for _, p in points]
            bounds = [wilson_interval(p["right"], p["items"]) for _, p in points]
            errors = [[y - low for y, (low, _) in zip(ys, bounds)], [high - y for y, (_, high) in zip(ys, bounds)]]
            ax.errorbar(xs, ys, yerr=errors, marker="osD^v<>p"[i % 8], capsize=3, label=name)
        suite_cap = cap.get(suite) if isinstance(cap, dict) else cap
        if suite_cap is not None:
            ax.axvline(suite_cap, color="grey", linestyle=":", linewidth=1)
        ax.set_title(suite)
        ax.set_xlabel("length" + (" (training cap dotted)" if suite_cap is not None else ""))
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=120, format="png")
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())
    return Path(path)


def _strategy_name(row: dict) -> str:
    return row["strategy"] + (f" ({row['program']})" if row.get("program") else "")
