"""Training data for planning: questions of the suites whose decomposition is known, each followed
by the plan that answers it (loom's Python subset, in the canonical form `PlanDecoder` writes),
and the one-step questions those plans ask, answered (the sub-skills).

A plan is the same whatever the length of its question (a loop takes the words or numbers one at
a time), so a model that learns to write it from short questions can answer longer ones: the
claim the length-generalisation evaluation tests. Questions come from each suite's training
split only (the suites' fixed hash keeps every test question out, whatever the seed), at
lengths up to `max_difficulty`, the training cap.

The plans ask their steps in the suites' own words ("Q: <question>\\nA:"), so the sub-skill
items are the `last_letter`, `concat` and `step` suites' training items.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from loom.eval.suites import SUITES
from loom.reason.planner import CODE_PLAN

PLANS = {
    "last_letters": '''word_list = words(quoted(question)[0])
letters = ""
for word in word_list:
    letter = ask("Q: What is the last letter of \\"{word}\\"?\\nA:")
    if letters == "":
        letters = letter
    else:
        letters = ask("Q: Join \\"{letters}\\" and \\"{letter}\\".\\nA:")
answer(letters)
''',
    "sum_list": '''total = 0
for x in numbers(question):
    total = ask("Q: What is {total} plus {x}?\\nA:")
answer(total)
''',
    "halve_or_triple": '''n = numbers(question)[0]
for i in range(numbers(question)[1]):
    if ask("Q: Is {n} even?\\nA:"):
        n = ask("Q: What is half of {n}?\\nA:")
    else:
        n = ask("Q: What is 3 times {n} plus 1?\\nA:")
answer(n)
''',
    "doubling": '''n = numbers(question)[0]
bound = numbers(question)[1]
count = 0
while n <= bound:
    n = int(ask("Q: What is {n} doubled?\\nA:"))
    count += 1
answer(count)
''',
}
SUB_SKILLS = {"last_letters": ("last_letter", "concat"), "sum_list": ("step",), "halve_or_triple": ("step",),
              "doubling": ("step",)}


def plan_examples(suite: str, n: int, max_difficulty: int, seed: int = 0) -> list[dict]:
    """`n` training questions of `suite` spread over lengths from its smallest to
    `max_difficulty`, each with its plan: {"question", "difficulty", "prompt", "plan"}."""
    tasks = SUITES[suite]
    levels = list(range(tasks.min_difficulty, max_difficulty + 1))
    per_level = -(-n // len(levels))
    out = []
    for level in levels:
        for item in tasks.items("train", per_level, level, seed):
            out.append({"question": item.question, "difficulty": level,
                        "prompt": CODE_PLAN.format(question=item.question), "plan": PLANS[suite]})
    return random.Random(f"plans/{suite}/{seed}").sample(out, min(n, len(out)))


def planning_documents(n_plans: int = 400, n_steps: int = 400, max_difficulty: int = 6,
                       seed: int = 0) -> Iterator[str]:
    """Documents for training a planner: plan examples of every suite in `PLANS` (the prompt,
    then the plan) and the training items of their sub-skill suites ("Q: ...\\nA: ...\\n")."""
    for suite in PLANS:
        for example in plan_examples(suite, n_plans, max_difficulty, seed):
            yield example["prompt"] + example["plan"]
    for skill in sorted({s for skills in SUB_SKILLS.values() for s in skills}):
        tasks = SUITES[skill]
        # the steps of long questions meet bigger numbers and longer strings: every size up to 6
        levels = range(tasks.min_difficulty, max(tasks.min_difficulty, min(6, tasks.max_difficulty or 6)) + 1)
        for level in levels:
            for item in tasks.items("train", -(-n_steps // len(levels)), level, seed):
                yield f"Q: {item.question}\nA: {item.answer}\n"
