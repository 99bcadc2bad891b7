"""Ways to answer a question with a model, all run as reasoning programs so each is traced,
budgeted and resumable the same way:

  direct     one call: "Q: ...\nA:", the first line of the answer;
  cot        chain of thought (Wei et al. 2022): "Let's think step by step." (the zero-shot
             trigger of Kojima et al. 2022), then the text after its last "answer is";
  sc         self-consistency (Wang et al. 2023): `samples` chains of thought sampled at
             temperature 0.7, the most common final answer wins;
  graph      least-to-most (Zhou et al. 2022): the model decomposes the question into
             sub-questions (`loom.reason.planner`), answered in order, each seeing the answers
             before it; or a program given by the user or built in for a suite.

`--rag INDEX` puts a retrieval node first: its passages, with their ids, precede the question
in every prompt that names `{passages}` (all of the strategies above do when retrieval is on).
"""

from __future__ import annotations

from pathlib import Path

from loom.errors import LoomError
from loom.reason.plan_code import load_program as load_plan_or_program
from loom.reason.program import Program, load_program

STRATEGIES = ("direct", "cot", "sc", "graph", "code")
PROGRAM_DIR = Path(__file__).parent / "programs"


def _context(rag: bool) -> str:
    return "Context:\n{passages}\n\n" if rag else ""


def _retrieve_node(index: str, k: int) -> dict:
    return {"id": "retrieve", "kind": "tool", "tool": "retrieve", "query": "{question}", "index": index, "k": k,
            "output": "passages"}


def direct_program(rag_index: str | None = None, k: int = 3) -> Program:
    nodes = [_retrieve_node(rag_index, k)] if rag_index else []
    nodes += [{"id": "ask", "kind": "model", "prompt": _context(bool(rag_index)) + "Q: {question}\nA:",
               "output": "reply"},
              {"id": "answer", "kind": "answer", "value": "{reply}"}]
    return load_program({"name": "direct", "inputs": ["question"], "nodes": nodes})


def cot_program(rag_index: str | None = None, k: int = 3, samples: int = 1) -> Program:
    nodes = [_retrieve_node(rag_index, k)] if rag_index else []
    prompt = _context(bool(rag_index)) + "Q: {question}\nA: Let's think step by step."
    if samples == 1:
        nodes += [{"id": "think", "kind": "model", "prompt": prompt, "output": "thoughts", "parse": "text",
                   "max_tokens": 256},
                  {"id": "extract", "kind": "tool", "tool": "expr", "expr": "final_answer(thoughts)",
                   "output": "reply"}]
        name = "cot"
    else:
        for i in range(samples):
            nodes.append({"id": f"think{i}", "kind": "model", "prompt": prompt, "output": f"thoughts{i}",
                          "parse": "text", "max_tokens": 256, "temperature": 0.7, "seed": i})
        votes = ", ".join(f"final_answer(thoughts{i})" for i in range(samples))
        nodes.append({"id": "vote", "kind": "tool", "tool": "expr", "expr": f"majority([{votes}])", "output": "reply"})
        name = f"self-consistency-{samples}"
    nodes.append({"id": "answer", "kind": "answer", "value": "{reply}"})
    return load_program({"name": name, "inputs": ["question"], "nodes": nodes})


def builtin_program(name: str) -> Program:
    """A program shipped with loom (loom/reason/programs/NAME.json)."""
    path = PROGRAM_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROGRAM_DIR.glob("*.json")))
        raise LoomError(f"no built-in program {name!r}; built in: {known}")
    return load_program(path)


def resolve_program(spec: str) -> Program:
    """A program from a file path or a built-in name."""
    path = Path(spec)
    if path.suffix in (".json", ".py") or path.is_file():
        return load_plan_or_program(path)
    return builtin_program(spec)
