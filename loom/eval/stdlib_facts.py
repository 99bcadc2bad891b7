"""A knowledge task built offline from the standard library's own documentation: which module
defines a function, and what its first parameter is called, asked of a model closed-book or with
the documentation retrieved beside the question (issue 16, item 5: retrieval instead of size).

The facts are read with `ast` from the source of the running Python's standard library (nothing
is imported, so no module runs): every public top-level function with a docstring in a public
top-level module, whose name no other such module defines. Each fact has a documentation
passage in the shape pydoc prints (signature, module, the docstring's first line), which is what
a model is trained on and what BM25 retrieves; the questions about it are split into train and
test by the suites' fixed hash, so a test question was never asked in training, though its
passage was read. Unlike the generated suites, the facts depend on the Python version (3.11's
standard library differs from 3.13's): a result names the version it was measured on.
"""

from __future__ import annotations

import ast
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from loom.eval.suites.base import Item, on_test_side

SUITE = "stdlib_facts"
FORMS = ("module", "first_parameter")


@dataclass(frozen=True)
class Fact:
    module: str
    name: str
    parameters: tuple[str, ...]
    summary: str  # the docstring's first line

    @property
    def passage(self) -> str:
        return (f"{self.module}.{self.name}({', '.join(self.parameters)}): a function of the module {self.module}. "
                f"{self.summary}")


def stdlib_dir() -> Path:
    return Path(os.__file__).parent


def _module_facts(path: Path) -> list[Fact]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []  # test data of the standard library, and files for other Pythons
    facts = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        summary = " ".join(doc.strip().split("\n\n", 1)[0].split()) if doc else ""
        if not summary:
            continue
        args = node.args
        parameters = tuple(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
        facts.append(Fact(path.stem, node.name, parameters, summary[:200]))
    return facts


def stdlib_facts(n: int | None = None, seed: int = 0, root: Path | None = None) -> list[Fact]:
    """Facts of the standard library at `root` (the running Python's by default), sorted; `n` of
    them drawn with `seed` when given. Only names that one module alone defines."""
    root = root or stdlib_dir()
    found: list[Fact] = []
    for path in sorted(root.glob("*.py")):
        if not path.stem.startswith("_") and path.stem not in ("this", "antigravity"):
            found += _module_facts(path)
    count: dict[str, int] = {}
    for fact in found:
        count[fact.name] = count.get(fact.name, 0) + 1
    unique = sorted((f for f in found if count[f.name] == 1), key=lambda f: (f.module, f.name))
    if not unique:
        raise ValueError(f"no documented public functions under {root}: is it a Python standard library?")
    if n is None or n >= len(unique):
        return unique
    return sorted(random.Random(f"{SUITE}/{seed}").sample(unique, n), key=lambda f: (f.module, f.name))


def questions(fact: Fact) -> list[tuple[str, str]]:
    """The (question, answer) pairs a fact answers, one per form that applies to it."""
    pairs = [(f'Which module of the standard library defines the function "{fact.name}"?', fact.module)]
    if fact.parameters:
        pairs.append((f'What is the first parameter of "{fact.module}.{fact.name}"?', fact.parameters[0]))
    return pairs


def fact_items(facts: list[Fact], split: str) -> list[Item]:
    """The questions about `facts` on one side of the fixed train/test hash, as suite items."""
    out = []
    for fact in facts:
        for question, answer in questions(fact):
            if on_test_side(question) == (split == "test"):
                out.append(Item(SUITE, f"{SUITE}/{split}/{len(out)}", question, answer, 1))
    return out


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))
