"""Training data for planning: questions of the suites whose decomposition is known, each in the
three forms the strategies are evaluated in — answered directly ("Q: <question>\\nA: <answer>"),
answered by a chain of thought ("... Let's think step by step. <steps> The answer is X."), and
followed by the plan that answers it (loom's Python subset, in the canonical form `PlanDecoder`
writes) — plus the one-step questions those plans ask the model, answered (the sub-skills). The
same training questions go into every form, so the strategies compete on equal supervision.

A plan is the same whatever the length of its question (a loop takes the words or numbers one at
a time), so a model that learns to write it from short questions can answer longer ones: the
claim the length-generalisation evaluation tests. Questions come from each suite's training
split only (the suites' fixed hash keeps every test question out, whatever the seed), at
lengths up to `max_difficulty`, the training cap.

What the plans leave to the model: the last letter of a word (`ask`, in the `last_letter`
suite's words) and the actions of one of SCAN's 34 verbs ("jump around left"). Arithmetic,
joining strings and repeating a phrase the plans write as expressions, which the executor
computes (the split of program-aided language models, Gao et al. 2022): a 3M-parameter model
trained for minutes learnt neither multi-digit addition nor copying long strings as a step
(docs/LOG.md, 2026-12-03), and a plan is the place to say which part is mechanical. The step
questions come from `last_letter`'s training split, which holds a share of the 200 words only;
the chains of thought name the last letter of every word their questions use, so that suite's
own test split is not clean of this data (it is not what the planning experiment evaluates).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from loom.eval.suites import SUITES
from loom.eval.suites.scan import SCAN_TRAIN_MAX_ACTIONS, SCAN_VERBS, scan_actions
from loom.reason.expressions import numbers, quoted, words
from loom.reason.planner import CODE_PLAN

PLANS = {
    "last_letters": '''word_list = words(quoted(question)[0])
letters = ""
for word in word_list:
    letter = ask("Q: What is the last letter of \\"{word}\\"?\\nA:")
    letters = letters + letter
answer(letters)
''',
    "sum_list": '''total = 0
for x in numbers(question):
    total = total + x
answer(total)
''',
    "halve_or_triple": '''n = numbers(question)[0]
for i in range(numbers(question)[1]):
    if n % 2 == 0:
        n = n // 2
    else:
        n = 3 * n + 1
answer(n)
''',
    "doubling": '''n = numbers(question)[0]
bound = numbers(question)[1]
count = 0
while n <= bound:
    n = n * 2
    count += 1
answer(count)
''',
    # SCAN: a command is one or two phrases joined by "and" (in order) or "after" (reversed), each
    # a verb said once, twice or thrice; the plan cuts and repeats, the model says a verb's actions
    "scan": '''command = question.split(": ")
text = command[1]
parts = text.split(" after ")
actions = ""
for part in list(reversed(parts)):
    for phrase in part.split(" and "):
        pieces = phrase.split(" t")
        verb = pieces[0]
        times = 1 + phrase.endswith("twice") + 2 * phrase.endswith("thrice")
        step = ask("Q: What are the actions of \\"{verb}\\"?\\nA:")
        actions = actions + (" " + step) * times
answer(actions.strip())
''',
}
SUB_SKILLS = {"last_letters": ("last_letter",), "sum_list": (), "halve_or_triple": (), "doubling": (), "scan": ()}
# SCAN's length split sets its own cap: training commands mean at most 22 actions, test ones 24 to
# 48 (no command means 23), so its lengths are these whatever the other suites' cap
SCAN_TEST_LENGTHS = (24, 36, 48)
FORMS = ("plan", "direct", "cot")
STEPS_PER_DOCUMENT = 8
COT_PROMPT = "Q: {question}\nA: Let's think step by step."  # as loom.reason.strategies.cot_program asks


def _cot_last_letters(question: str) -> list[str]:
    return [f'The last letter of "{w}" is "{w[-1]}".' for w in words(quoted(question)[0])]


def _cot_sum_list(question: str) -> list[str]:
    total, steps = 0, []
    for x in numbers(question):
        steps.append(f"{total} + {x} = {total + x}.")
        total += x
    return steps


def _cot_halve_or_triple(question: str) -> list[str]:
    n, times = numbers(question)[:2]
    steps = []
    for _ in range(times):
        after = n // 2 if n % 2 == 0 else 3 * n + 1
        steps.append(f"{n} is {'even' if n % 2 == 0 else 'odd'}, so {after}.")
        n = after
    return steps


def _cot_doubling(question: str) -> list[str]:
    n, bound = numbers(question)[:2]
    steps, count = [], 0
    while n <= bound:
        count += 1
        steps.append(f"{n} doubled is {2 * n}, {count} so far.")
        n *= 2
    return steps + [f"{n} is over {bound}."]


def _cot_scan(question: str) -> list[str]:
    text = question.split(": ", 1)[1]
    phrases = [p for part in reversed(text.split(" after ")) for p in part.split(" and ")]
    return [f'"{p}" is {" ".join(scan_actions(p))}.' for p in phrases]


COT_STEPS: dict[str, Callable[[str], list[str]]] = {
    "last_letters": _cot_last_letters, "sum_list": _cot_sum_list, "halve_or_triple": _cot_halve_or_triple,
    "doubling": _cot_doubling, "scan": _cot_scan}


def training_lengths(suite: str, cap: int) -> list[int]:
    """The lengths of `suite` that planning data is drawn at, up to the training cap."""
    if suite == "scan":
        return [SCAN_TRAIN_MAX_ACTIONS]  # a difficulty of 22 draws commands of 1 to 22 actions
    return list(range(SUITES[suite].min_difficulty, cap + 1))


def evaluation_lengths(suite: str, lengths: list[int]) -> list[int]:
    """The lengths `suite` is evaluated at, given those asked of every suite."""
    return list(SCAN_TEST_LENGTHS) if suite == "scan" else lengths


def verb_steps() -> list[str]:
    """Every verb of SCAN's grammar with its actions, the step the scan plan asks. SCAN's length
    split trains on every verb (it splits on the length of the answer), and a verb alone is no
    test command (those mean 24 actions or more)."""
    return [f'Q: What are the actions of "{v.command()}"?\nA: {" ".join(v.actions())}\n' for v in SCAN_VERBS]


def chain_of_thought(suite: str, question: str, answer: str) -> str:
    """The worked solution of `question` that follows `COT_PROMPT`, one sentence a step, ending in
    "The answer is ANSWER." (what `final_answer` reads back)."""
    return " " + " ".join([*COT_STEPS[suite](question), f"The answer is {answer}."])


def plan_examples(suite: str, n: int, max_difficulty: int, seed: int = 0) -> list[dict]:
    """`n` training questions of `suite` spread over lengths from its smallest to
    `max_difficulty`, each with its plan and answer:
    {"question", "answer", "difficulty", "prompt", "plan"}."""
    tasks = SUITES[suite]
    levels = training_lengths(suite, max_difficulty)
    per_level = -(-n // len(levels))
    out = []
    for level in levels:
        for item in tasks.items("train", per_level, level, seed):
            out.append({"question": item.question, "answer": item.answer, "difficulty": level,
                        "prompt": CODE_PLAN.format(question=item.question), "plan": PLANS[suite]})
    return random.Random(f"plans/{suite}/{seed}").sample(out, min(n, len(out)))


def planning_documents(n_plans: int = 400, n_steps: int = 400, max_difficulty: int = 6, seed: int = 0,
                       forms: tuple[str, ...] = FORMS) -> Iterator[str]:
    """Documents for training a planner: `n_plans` training questions of every suite in `PLANS`,
    each in every one of `forms` ("plan": the prompt then the plan; "direct": "Q: ...\\nA: answer";
    "cot": the chain of thought), then `n_steps` training items of each sub-skill suite
    ("Q: ...\\nA: ...\\n") and `n_steps` of SCAN's verbs with their actions, eight to a document."""
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise ValueError(f"forms {list(forms)}: choose from {', '.join(FORMS)}")
    for suite in PLANS:
        for example in plan_examples(suite, n_plans, max_difficulty, seed):
            question, answer = example["question"], example["answer"]
            texts = {"plan": example["prompt"] + example["plan"], "direct": f"Q: {question}\nA: {answer}\n",
                     "cot": COT_PROMPT.format(question=question) + chain_of_thought(suite, question, answer) + "\n"}
            yield from (texts[form] for form in forms)
    pool = []
    for skill in sorted({s for skills in SUB_SKILLS.values() for s in skills}):
        tasks = SUITES[skill]
        # every size the suite has (a word of each length); up to 6 where the sizes are unbounded
        levels = range(tasks.min_difficulty, max(tasks.min_difficulty, tasks.max_difficulty or 6) + 1)
        for level in levels:
            pool += [f"Q: {item.question}\nA: {item.answer}\n"
                     for item in tasks.items("train", -(-n_steps // len(levels)), level, seed)]
    verbs = verb_steps()
    pool += [verbs[i % len(verbs)] for i in range(n_steps)]
    # A step suite has few distinct questions (one per word): alone, each would be one document
    # repeated, and a corpus build's exact deduplication keeps one copy of each. Shuffled into
    # documents of STEPS_PER_DOCUMENT, they stay as many as were asked for.
    random.Random(f"steps/{seed}").shuffle(pool)
    for start in range(0, len(pool), STEPS_PER_DOCUMENT):
        yield "".join(pool[start:start + STEPS_PER_DOCUMENT])
