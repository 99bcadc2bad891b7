"""Small Python expressions over a program's variables: conditions, glue between steps, a calculator.

Branch conditions, loop `until`s and `expr` tools are one Python expression each, for example
`len(letters) == len(word_list)` or `words(quoted(question)[0])`. They run in this process, so
they are checked before they run: only literals, variables, arithmetic, comparisons, boolean
logic, conditional expressions, subscripts, comprehensions, the functions in `FUNCTIONS` and the
string / list methods in `METHODS` are allowed; no attribute other than those methods, no
names starting with "_", no imports, no lambdas. `**`, `range` and repetition with `*` are
bounded so a short expression cannot ask for a huge number or list. Anything beyond that belongs in a
`python` tool, which runs in the sandbox.

`calculate` evaluates arithmetic only (numbers, + - * / // % **, parentheses), for the `calc` tool.
Written by hand: `ast` gives the parse, and no maintained library offers this small a whitelist.
"""

from __future__ import annotations

import ast
import re

from loom.errors import LoomError


class ExpressionError(LoomError):
    """An expression is not allowed or failed to evaluate."""


MAX_POWER = 10_000  # largest exponent `**` accepts
MAX_REPEAT = 1_000_000  # longest sequence `*` may build


def words(text: str) -> list[str]:
    """The runs of letters, digits and apostrophes in `text`."""
    return re.findall(r"[\w']+", str(text))


def quoted(text: str) -> list[str]:
    """The strings between double quotes in `text`."""
    return re.findall(r'"([^"]*)"', str(text))


def numbers(text: str) -> list[int | float]:
    """The numbers in `text`, in order."""
    return [float(n) if "." in n else int(n) for n in re.findall(r"-?\d+(?:\.\d+)?", str(text))]


def join(items, sep: str = "") -> str:
    return str(sep).join(str(i) for i in items)


def final_answer(text: str) -> str:
    """The answer a chain of thought ends with: what follows the last "answer is" (up to the end
    of its sentence), else the last non-empty line."""
    text = str(text)
    found = re.findall(r"answer is:?\s*(.+?)(?:\.\s|\.?$|\n)", text, flags=re.IGNORECASE | re.MULTILINE)
    if found:
        return found[-1].strip().strip('"').strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def majority(items) -> str:
    """The most common item (the first of those tied), ignoring empty ones."""
    counts: dict = {}
    for item in items:
        if str(item).strip():
            counts[str(item).strip()] = counts.get(str(item).strip(), 0) + 1
    return max(counts, key=counts.get) if counts else ""


def bounded_range(*args) -> range:
    r = range(*args)
    if len(r) > MAX_REPEAT:
        raise ExpressionError(f"range of {len(r):,} numbers is over {MAX_REPEAT:,}")
    return r


FUNCTIONS = {f.__name__: f for f in (
    len, str, int, float, bool, list, tuple, set, dict, sorted, reversed, sum, min, max, enumerate, zip,
    abs, round, any, all, words, quoted, numbers, join, final_answer, majority)}
FUNCTIONS["range"] = bounded_range
METHODS = frozenset({
    "lower", "upper", "strip", "lstrip", "rstrip", "split", "join", "startswith", "endswith", "replace", "count",
    "find", "index", "isdigit", "isalpha", "isalnum", "title", "capitalize", "get", "keys", "values", "items"})
_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call, ast.Name, ast.Load,
    ast.Store, ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.Subscript, ast.Slice, ast.ListComp,
    ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.keyword, ast.Attribute, ast.JoinedStr,
    ast.FormattedValue, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Starred)


def _parse(expr: str) -> ast.Expression:
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"expression {expr!r} is not valid Python: {e.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ExpressionError(f"expression {expr!r}: {type(node).__name__} is not allowed here; "
                                  "use a python tool (run in the sandbox) for anything beyond an expression")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionError(f"expression {expr!r}: names starting with '_' are not allowed")
        if isinstance(node, ast.Attribute) and node.attr not in METHODS:
            raise ExpressionError(f"expression {expr!r}: .{node.attr} is not allowed; "
                                  f"methods: {', '.join(sorted(METHODS))}")
    return tree


def _bound_values(tree: ast.Expression) -> ast.Expression:
    """Routes `**` and `*` through checked functions."""

    class Bound(ast.NodeTransformer):
        def visit_BinOp(self, node: ast.BinOp):
            self.generic_visit(node)
            name = {ast.Pow: "_pow", ast.Mult: "_mul"}.get(type(node.op))
            if name is None:
                return node
            return ast.copy_location(ast.Call(ast.Name(name, ast.Load()), [node.left, node.right], []), node)

    return ast.fix_missing_locations(Bound().visit(tree))


def _pow(a, b):
    if isinstance(b, (int, float)) and abs(b) > MAX_POWER:
        raise ExpressionError(f"exponent {b} is larger than {MAX_POWER}")
    return a**b


def _mul(a, b):
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
            raise ExpressionError(f"repeating a sequence of {len(seq)} items {n} times is over {MAX_REPEAT:,}")
    return a * b


def expression_names(expr: str) -> set[str]:
    """The variables an expression reads (its free names that are not functions)."""
    tree = _parse(expr)
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            and n.id not in FUNCTIONS and n.id not in bound}


def evaluate(expr: str, variables: dict):
    """The value of `expr` with `variables` in scope."""
    code = compile(_bound_values(_parse(expr)), "<expression>", "eval")
    scope = {"__builtins__": {}, **FUNCTIONS, "_pow": _pow, "_mul": _mul, **variables}
    try:
        return eval(code, scope)  # noqa: S307  (checked above: a whitelist of node types and names)
    except ExpressionError:
        raise
    except Exception as e:
        raise ExpressionError(f"expression {expr!r} failed: {type(e).__name__}: {e}") from None


_ARITHMETIC = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div,
               ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd)


def calculate(text: str) -> int | float:
    """The value of an arithmetic expression: an int when it is whole ("6 / 3" gives 2)."""
    cleaned = text.strip().rstrip("=?.").replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except SyntaxError:
        raise ExpressionError(f"calculator: {text!r} is not arithmetic") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ARITHMETIC) or (isinstance(node, ast.Constant)
                                                  and not isinstance(node.value, (int, float))):
            raise ExpressionError(f"calculator: {text!r} holds more than numbers and + - * / // % **")
    value = evaluate(cleaned, {})
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return round(value, 10) if isinstance(value, float) else value
