"""Least-to-most planning (Zhou et al. 2022): the model breaks a question into simpler
sub-questions, and loom turns them into a program that answers them in order, each prompt
holding the sub-questions and answers before it, the last sub-question being the question.

The decomposition prompt shows two worked decompositions (written for loom) and asks for a
numbered list. Parsing is forgiving: "1.", "1)", "Step 1:" and "-" items are all taken, empty
and repeated items dropped, at most `max_steps` kept, and the question itself appended when the
list does not end with it. A reply with no item at all is asked again (sampled, another seed) up
to `retries` times; after that the question is answered directly, and the plan says so
(`fallback`), so a trace never hides that no decomposition happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from loom.reason.backends import Backend, GenerationSettings
from loom.reason.program import Program, load_program

DECOMPOSE = """Break each question into simpler questions that lead to its answer, one per line, numbered. \
The last one is the question itself.

Q: How many letters do the words "cat" and "horse" have together?
1. How many letters does "cat" have?
2. How many letters does "horse" have?
3. How many letters do the words "cat" and "horse" have together?

Q: Ann has 3 apples and buys 2 bags of 4 apples. How many apples does she have now?
1. How many apples are in 2 bags of 4 apples?
2. Ann has 3 apples and buys 2 bags of 4 apples. How many apples does she have now?

Q: {question}
1."""
ITEM = re.compile(r"^\s*(?:(?:step\s*)?\d+\s*[.):]|[-*•])\s*(.+?)\s*$", re.IGNORECASE)


@dataclass
class Plan:
    question: str
    sub_questions: list[str]
    fallback: bool
    attempts: int
    replies: list[str] = field(default_factory=list)
    tokens: int = 0  # prompt + completion tokens of the planning calls (one call per attempt)

    def to_json(self) -> dict:
        return {"question": self.question, "sub_questions": self.sub_questions, "fallback": self.fallback,
                "attempts": self.attempts, "replies": self.replies, "tokens": self.tokens}


def parse_decomposition(reply: str, question: str, max_steps: int = 8) -> list[str]:
    """The sub-questions in a numbered reply (which continues after "1."), repaired."""
    lines = ("1. " + reply.lstrip()).splitlines()
    items: list[str] = []
    for line in lines:
        if not line.strip():
            if items:
                break  # a blank line ends the list
            continue
        if line.strip().lower().startswith("q:"):
            break  # the model went on to invent a new example
        m = ITEM.match(line)
        if m and m.group(1) not in items:
            items.append(m.group(1))
    items = [i for i in items if i.strip(" .?")]
    if not items:
        return []
    if _norm(items[-1]) != _norm(question):
        items = [i for i in items if _norm(i) != _norm(question)][: max_steps - 1] + [question]
    return items[-max_steps:]


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" ?.")


def decompose(question: str, backend: Backend, retries: int = 2, max_steps: int = 8) -> Plan:
    replies = []
    tokens = 0
    for attempt in range(retries + 1):
        settings = GenerationSettings(max_tokens=160, stop=("\n\n", "\nQ:"), temperature=0.0 if attempt == 0 else 0.7,
                                      seed=attempt)
        (c,) = backend.complete([DECOMPOSE.format(question=question)], settings)
        replies.append(c.text)
        tokens += c.prompt_tokens + c.completion_tokens
        items = parse_decomposition(c.text, question, max_steps)
        if items:
            return Plan(question, items, False, attempt + 1, replies, tokens)
    return Plan(question, [question], True, retries + 1, replies, tokens)


def _literal(text: str) -> str:
    """Text placed in a prompt template as it is (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def plan_program(plan: Plan, rag_index: str | None = None, k: int = 3) -> Program:
    """The sub-questions as a chain of model calls; the last one's answer is the answer. With
    `rag_index`, passages retrieved for the question precede every prompt."""
    nodes = []
    context = ""
    if rag_index:
        nodes.append({"id": "retrieve", "kind": "tool", "tool": "retrieve", "query": "{question}",
                      "index": rag_index, "k": k, "output": "passages"})
        context = "Context:\n{passages}\n\n"
    for i, sub in enumerate(plan.sub_questions, start=1):
        context += f"Q: {_literal(sub)}\nA:"
        nodes.append({"id": f"q{i}", "kind": "model", "prompt": context, "output": f"a{i}",
                      "note": sub})
        context += f" {{a{i}}}\n\n"
    nodes.append({"id": "answer", "kind": "answer", "value": f"{{a{len(plan.sub_questions)}}}"})
    name = "direct (no decomposition)" if plan.fallback else "least-to-most"
    return load_program({"name": name, "inputs": ["question"], "nodes": nodes,
                         "description": "planned by the model" if not plan.fallback else "planner fell back"})


# ---------------------------------------------------------------------------------------------
# Plans written as code, under constrained decoding
# ---------------------------------------------------------------------------------------------

# What a model trained on loom's planning data (`loom.reason.plan_data`) sees before it writes a
# plan; the plan follows, in the Python subset of `loom.reason.plan_code`.
CODE_PLAN = "# Question: {question}\n# A plan that answers it:\n"


@dataclass
class CodePlan:
    question: str
    text: str
    ended: bool  # the plan reached answer(...) within its token budget
    fallback: bool  # it did not, or did not compile: the question was answered directly
    tokens: int = 0
    error: str = ""
    attempts: int = 1  # model calls the planning took (one constrained decode)

    def to_json(self) -> dict:
        return {"question": self.question, "text": self.text, "ended": self.ended, "fallback": self.fallback,
                "tokens": self.tokens, "error": self.error}


def write_plan(question: str, backend: Backend, max_tokens: int = 400, temperature: float = 0.0,
               seed: int = 0) -> tuple[CodePlan, Program]:
    """The model writes a plan for `question` under constrained decoding (so it compiles and
    validates whatever the model's logits); a plan cut short by `max_tokens` falls back to
    answering directly, and says so."""
    from loom.reason.constrained import PlanDecoder
    from loom.reason.plan_code import PlanError, compile_plan
    from loom.reason.strategies import direct_program

    settings = GenerationSettings(max_tokens=max_tokens, stop=(), temperature=temperature, seed=seed)
    text, ended, c = backend.complete_constrained(CODE_PLAN.format(question=question), PlanDecoder, settings)
    plan = CodePlan(question, text, ended, fallback=not ended, tokens=c.prompt_tokens + c.completion_tokens)
    if ended:
        try:
            return plan, load_program(compile_plan(text, name="planned by the model (code)"))
        except PlanError as e:  # the constraint should make this impossible; if not, say it, do not hide it
            plan.fallback, plan.error = True, str(e)
    else:
        plan.error = f"the plan did not reach answer(...) within {max_tokens} tokens"
    return plan, direct_program()
