"""HumanEval: the bundled problems, the unbiased pass@k estimator, and completions judged by
their tests in the sandbox."""

from __future__ import annotations

import math

import pytest

from loom.eval.humaneval import evaluate_humaneval, load_problems, pass_at_k


def test_problems_are_the_164_bundled_ones():
    problems = load_problems()
    assert len(problems) == 164 and len({p.task_id for p in problems}) == 164
    assert problems[0].task_id == "HumanEval/0" and problems[0].entry_point in problems[0].prompt


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (10, 0, 10), (10, 9, 2),
                                     (200, 17, 100), (5, 5, 5)])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k):
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)  # Chen et al. 2021, eq. 1
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    if k == 1:
        assert pass_at_k(n, c, k) == pytest.approx(c / n)


def test_pass_at_k_needs_k_samples():
    with pytest.raises(ValueError, match="at least 5 samples"):
        pass_at_k(3, 1, 5)


def test_right_and_wrong_completions_are_told_apart_by_the_tests():
    problems = load_problems()[:6]
    by_prompt = {p.prompt: p for p in problems}

    def generate(prompt: str, n: int) -> list[str]:
        p = by_prompt[prompt]
        # sample 0 is the reference solution; sample 1 returns nothing; sample 2 never ends
        return [p.canonical_solution, "    return None\n", "    while True:\n        pass\n"][:n]

    result = evaluate_humaneval(generate, samples=3, ks=(1, 2, 3), limit=6, timeout=1.0)
    assert result["problems"] == 6 and result["solved"] == 6
    statuses = {(r["task_id"], r["sample"]): r["status"] for r in result["records"]}
    assert all(statuses[(p.task_id, 0)] == "ok" for p in problems)
    assert all(statuses[(p.task_id, 1)] == "error" for p in problems)
    assert all(statuses[(p.task_id, 2)] == "timeout" for p in problems)
    assert result["metrics"]["pass@1"] == pytest.approx(1 / 3)
    assert result["metrics"]["pass@2"] == pytest.approx(pass_at_k(3, 1, 2))
    assert result["metrics"]["pass@3"] == 1.0
