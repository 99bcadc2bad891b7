"""What a short Python program prints: programs written statement by statement, the truth
their output in `loom.sandbox`."""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import random
import re
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from loom.errors import LoomError
from loom.eval.suites.base import Suite, match_question

_CODE_MAX_OUTPUT = 40
_INT_VARS = ("a", "b", "c", "n", "total", "count")
_STR_VARS = ("s", "t", "word")
_LIST_VARS = ("xs", "ys", "nums")
_KINDS = {**dict.fromkeys(_INT_VARS, "int"), **dict.fromkeys(_STR_VARS, "str"), **dict.fromkeys(_LIST_VARS, "list")}


class _ProgramWriter:
    """Writes one random program: `statements` statements (a loop or an if counts itself and its
    body), then a single print.

    Variables are created only at the top level, before anything reads them, and blocks only
    update them, so no name is read before it is assigned. Loops run over `range` with small
    constant bounds and strings and lists grow by small pieces, so every program ends quickly.
    """

    def __init__(self, rng: random.Random, statements: int):
        self.rng = rng
        self.nested_loops = statements >= 6
        self.kinds: dict[str, str] = {}
        self.recent: list[str] = []  # variables, the most recently written last
        self.lines: list[str] = []
        self._block(statements, depth=0, loop_vars=())
        self.lines.append(f"print({self._print_args()})")

    def program(self) -> str:
        return "\n".join(self.lines)

    def _emit(self, depth: int, line: str, wrote: str | None = None) -> None:
        self.lines.append("    " * depth + line)
        if wrote is not None:
            if wrote in self.recent:
                self.recent.remove(wrote)
            self.recent.append(wrote)

    def _block(self, budget: int, depth: int, loop_vars: tuple[str, ...]) -> None:
        while budget > 0:
            budget -= self._statement(budget, depth, loop_vars)

    def _statement(self, budget: int, depth: int, loop_vars: tuple[str, ...]) -> int:
        rng = self.rng
        if not self.kinds:
            self._new_variable(depth)
            return 1
        options = ["update"] * 3
        if depth == 0 and len(self.kinds) < 4:
            options += ["new"] * (3 if len(self.kinds) < 2 else 1)
        if budget >= 2 and (not loop_vars or (self.nested_loops and len(loop_vars) < 2 and budget >= 3)):
            options += ["for"] * 2
        if budget >= 2:
            options.append("if")
        choice = rng.choice(options)
        if choice == "new" and self._new_variable(depth):
            return 1
        if choice == "for":
            var = "ij"[len(loop_vars)]
            k = rng.randint(2, 5)
            bounds = str(k) if rng.random() < 0.7 else f"1, {k + 1}"
            self._emit(depth, f"for {var} in range({bounds}):")
            body = rng.randint(1, min(budget - 1, 4))
            self._block(body, depth + 1, (*loop_vars, var))
            return 1 + body
        if choice == "if":
            self._emit(depth, f"if {self._condition(loop_vars)}:")
            then = rng.randint(1, min(budget - 1, 2))
            self._block(then, depth + 1, loop_vars)
            otherwise = rng.randint(0, min(budget - 1 - then, 2))
            if otherwise:
                self._emit(depth, "else:")
                self._block(otherwise, depth + 1, loop_vars)
            return 1 + then + otherwise
        self._update(depth, loop_vars)
        return 1

    def _some(self, kind: str) -> str | None:
        names = [v for v, k in self.kinds.items() if k == kind]
        return self.rng.choice(names) if names else None

    def _literal(self) -> str:
        return "".join(self.rng.choice("abcdefghkmnoprstuxyz") for _ in range(self.rng.randint(1, 3)))

    def _new_variable(self, depth: int) -> bool:
        rng = self.rng
        kind = rng.choice(("int", "int", "str", "list"))
        free = [v for v in _KINDS if _KINDS[v] == kind and v not in self.kinds]
        if not free:
            return False
        name = rng.choice(free)
        i, s, xs = self._some("int"), self._some("str"), self._some("list")
        k = rng.randint(1, 9)
        if kind == "int":
            options = [str(rng.randint(0, 12))] * 2
            options += [f"{i} * {k}", f"{i} + {k}", f"{i} - {k}"] if i else []
            options += [f"len({xs})", f"sum({xs})"] if xs else []
            options += [f"len({s})"] if s else []
        elif kind == "str":
            options = [f'"{self._literal()}"'] * 2
            options += [f"{s}[::-1]", f'{s} + "{self._literal()}"', f"{s} * 2", f"{s}[1:]"] if s else []
            options += [f"str({i})"] if i else []
        else:
            items = ", ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(0, 4)))
            options = [f"[{items}]", f"[{items}]", f"list(range({rng.randint(1, 5)}))"]
        self.kinds[name] = kind
        self._emit(depth, f"{name} = {rng.choice(options)}", wrote=name)
        return True

    def _update(self, depth: int, loop_vars: tuple[str, ...]) -> None:
        rng = self.rng
        v = rng.choice(list(self.kinds))
        kind = self.kinds[v]
        k = rng.randint(1, 9)
        other_ints = [w for w, kw in self.kinds.items() if kw == "int" and w != v] + list(loop_vars)
        w = rng.choice(other_ints) if other_ints else None
        if kind == "int":
            options = [f"{v} += {k}", f"{v} -= {k}", f"{v} = {v} * {rng.randint(2, 3)}", f"{v} = {v} % {k + 1}"]
            options += [f"{v} = {v} // 2"]
            options += [f"{v} += {w}", f"{v} = {v} + {w} * 2"] if w else []
            options += [f"{v} += {loop_vars[-1]}"] * 2 if loop_vars else []
        elif kind == "str":
            options = [f'{v} += "{self._literal()}"', f'{v} = "{self._literal()}" + {v}', f"{v} = {v}[1:]"]
            options += [f"{v} = {v}[::-1]", f"{v} = {v}[:{rng.randint(1, 4)}]"]
            options += [f"{v} += str({w})"] if w else []
        else:
            options = [f"{v}.append({k})", f"{v} = {v}[1:]", f"{v} = {v} + [{k}]", f"{v}.append(len({v}))"]
            options += [f"{v}.append({w})"] * 2 if w else []
        self._emit(depth, rng.choice(options), wrote=v)

    def _condition(self, loop_vars: tuple[str, ...]) -> str:
        rng = self.rng
        k = rng.randint(1, 6)
        ints = [v for v, kind in self.kinds.items() if kind == "int"] + list(loop_vars)
        options = []
        if ints:
            x = rng.choice(ints)
            options += [f"{x} % 2 == 0", f"{x} > {k}", f"{x} < {k}"]
        if s := self._some("str"):
            options.append(f"len({s}) > {k % 4}")
        if xs := self._some("list"):
            options += [f"len({xs}) > {k % 4}", f"{k} in {xs}"]
        return rng.choice(options)

    def _print_args(self) -> str:
        last = self.recent[-1]
        options = [last, last]
        if len(self.recent) >= 2:
            options.append(f"{self.recent[-2]}, {last}")
        if self.kinds[last] in ("str", "list"):
            options.append(f"len({last})")
        if self.kinds[last] == "list":
            options.append(f"sum({last})")
        return self.rng.choice(options)


def _run_in_process(program: str) -> str:
    """The program's output with its final newline removed, run here with `exec`: only for
    programs this module wrote, which touch no files, import nothing and loop a few times."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(program, "<code_output item>", "exec"), {"__builtins__": builtins})
    return out.getvalue().removesuffix("\n")


def _fits(output: str) -> bool:
    return 0 < len(output) <= _CODE_MAX_OUTPUT and "\n" not in output and output == output.strip()


@lru_cache(maxsize=65536)
def _sandbox_output(program: str) -> str:
    try:
        from loom.sandbox import run_python
    except ImportError as e:
        raise LoomError(f"the code_output suite needs loom.sandbox, which failed to import: {e}") from e
    for _ in range(2):  # a run can time out under load, once; a second timeout is a real problem
        result = run_python(program)
        if result.status not in ("timeout", "killed"):
            break
    if not result.passed:
        raise LoomError(
            f"the sandbox ran a generated program with status {result.status!r} (the program already ran "
            "in-process, so the sandbox itself failed), "
            f"stderr: {result.stderr.strip()[-500:]!r}\nprogram:\n{program}"
        )
    return result.stdout.removesuffix("\n")


class CodeOutput(Suite):
    """The answer key comes from the sandbox; `check` runs the question's program here, with `exec`,
    so it is only for items this suite generated, never for programs from elsewhere."""

    name = "code_output"
    description = "what a short Python program of S statements prints"
    default_difficulty = 4
    max_difficulty = 16
    _question = re.compile(r"What does this Python program print\?\n```\n(.*)\n```", re.DOTALL)

    def answer_chars(self, difficulty: int | None = None) -> int:
        return _CODE_MAX_OUTPUT + 8

    def _draw(self, rng, split, difficulty):
        while True:
            program = _ProgramWriter(rng, difficulty).program()
            # Run here first so the sandbox only sees programs that will be kept; a program that
            # fails, prints nothing or too much is replaced by another.
            try:
                output = _run_in_process(program)
            except Exception:
                continue
            if _fits(output):
                return f"What does this Python program print?\n```\n{program}\n```", None

    def _truths(self, questions):
        programs = [match_question(self._question, q).group(1) for q in questions]
        # The sandbox spends its time waiting on a child process, so a few threads overlap them.
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(_sandbox_output, programs))

    def _solve(self, question):
        try:
            return _run_in_process(match_question(self._question, question).group(1))
        except Exception as e:  # the program's own error: the answer cannot be right
            raise ValueError(f"the program fails: {e!r}") from e


def program_statements(program: str) -> int:
    """Statements of a code_output program before its final print (what its difficulty counts)."""
    return sum(isinstance(node, ast.stmt) for node in ast.walk(ast.parse(program))) - 1
