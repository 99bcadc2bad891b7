"""Answering one question with a strategy, and a strategy's accuracy on a generated suite.

`solve` picks the program (a strategy's, the planner's, or a given one), runs it with the
executor in `workdir` (trace, state, pictures), and returns the answer with the counts.
`evaluate_strategies` asks a suite's test items with each strategy on the same backend and
scores them by the suite's exact match, so strategies compare on equal terms.
"""

from __future__ import annotations

import time
from pathlib import Path

from loom.errors import LoomError
from loom.reason.backends import Backend, GenerationSettings
from loom.reason.executor import Budget, Executor
from loom.reason.planner import decompose, plan_program, write_plan
from loom.reason.program import Program
from loom.reason.strategies import PROGRAM_DIR, STRATEGIES, cot_program, direct_program


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
    """One row per (strategy, difficulty): accuracy, model calls and tokens per item, seconds,
    and for the graph strategy which program answered ("planner" or the program's name)."""
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
                         "accuracy": right / n, "items": len(questions), "calls_per_item": calls / n,
                         "tokens_per_item": tokens / n, "seconds": round(time.time() - started, 1)})
            log(f"[loom] {suite} d={difficulty} {strategy}: {right}/{len(questions)} right")
    return rows


def strategies_table(rows: list[dict]) -> str:
    lines = ["| suite | difficulty | strategy | accuracy | model calls / item | tokens / item | seconds |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        name = r["strategy"] + (f" ({r['program']})" if r["program"] else "")
        lines.append(f"| {r['suite']} | {r['difficulty']} | {name} | {r['accuracy']:.1%} | {r['calls_per_item']:.1f} | "
                     f"{r['tokens_per_item']:.0f} | {r['seconds']} |")
    return "\n".join(lines) + "\n"
