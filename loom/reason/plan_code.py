"""Plans as code: a reasoning program written in a small subset of Python and compiled into the
program graph of `loom.reason.program`, so that one validator, one executor, one trace format
and one picture serve both. A model trained on code writes this form naturally; the same plan
as JSON takes three times the text.

    word_list = words(quoted(question)[0])
    letters = ""
    for word in word_list:
        letter = ask(f'Q: What is the last letter of "{word}"?\\nA:')
        if letters == "":
            letters = letter
        else:
            letters = ask(f'Q: Join "{letters}" and "{letter}".\\nA:')
    answer(letters)

The subset; anything else is refused with its line and the reason:

  x = EXPR, x += EXPR   an expression over the variables (the whitelist of
                        `loom.reason.expressions`) becomes an `expr` tool node; each call below,
                        wherever it stands in the expression, becomes a node of its own
  ask(PROMPT, ...)      the model (a `model` node). PROMPT is an f-string, a string whose
                        {name} fields are variables or keyword arguments (`ask("Is {n} even?",
                        n=total)`), or any expression (`ask(question)`); the keywords
                        max_tokens, stop, parse, temperature and seed set the call. As an
                        `if` test, `ask(...)` is a yes/no question put to the model (a branch
                        that asks).
  calc(TEXT)            arithmetic on the text (the `calc` tool); TEXT as ask's PROMPT
  search(QUERY, k=3, index="name")   BM25 passages (the `retrieve` tool)
  answer(EXPR)          the program's answer: the last statement, or the last of both arms of a
                        final `if`
  if / elif / else      a branch; a variable the arms change has one value after it, and one
                        assigned in a single arm cannot be read after the `if`
  for x in EXPR:, for i, x in enumerate(EXPR):
                        a loop over a list. A variable assigned before the loop and changed in
                        it is carried from one iteration to the next; `xs.append(v)` at the top
                        of the body, on a list made empty (`xs = []`) before the loop, collects
                        one value per iteration; anything else assigned in the body stays in it
  while COND:           a loop that runs while COND holds (checked before each iteration), at
                        most `max_iterations` times
  pass, a docstring

The graph has one producer per variable, so names are versioned on the way (`letters`,
`letters_2`, ...: single assignment); the copies that introduces are folded into the nodes that
compute the values, and assignments nothing reads are dropped, so the graph is the one a person
would write as JSON. A node's id is its kind and line (`ask_5`). Written by hand: `ast` gives
the parse; no library translates Python into loom's graph.
"""

from __future__ import annotations

import ast
import copy
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from loom.reason import program as json_program
from loom.reason.expressions import FUNCTIONS, ExpressionError, expression_names
from loom.reason.program import Program, ProgramError, template_names

CALLS = ("ask", "calc", "search")
ASK_SETTINGS = ("max_tokens", "stop", "parse", "temperature", "seed")
RESERVED = {*CALLS, "answer", *FUNCTIONS}


class PlanError(ProgramError):
    """A plan is outside the Python subset; the message names the line."""


@dataclass(frozen=True)
class Unavailable:
    """What a name holds where it cannot be read, and why."""

    reason: str


@dataclass
class _Loop:
    """The loop whose body is being compiled: the lists its body may append to."""

    appendable: dict[str, str]  # Python list name -> the collect output it becomes
    collect: dict[str, str] = field(default_factory=dict)  # collect output -> body variable


def compile_plan(source: str, inputs: tuple[str, ...] | list[str] = ("question",), name: str = "plan",
                 where: str = "plan", max_iterations: int = 100, index: str | None = None) -> dict:
    """The JSON program (a dict for `load_program`) a plan in the Python subset compiles to.
    `max_iterations` bounds every `while`; `index` is the retrieval index `search` uses when a
    call names none."""
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as e:
        raise PlanError(f"{where}, line {e.lineno}: not valid Python: {e.msg}") from None
    body = list(tree.body)
    description = ""
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        description = body.pop(0).value.value.strip()
    compiler = _Compiler(where, list(inputs), max_iterations, index, _assigned_names(tree))
    env: dict[str, str | Unavailable] = {name: name for name in inputs}
    nodes: list[dict] = []
    _, answered = compiler.block(body, nodes, env, None)
    if not answered:
        raise PlanError(f"{where}: the plan never calls answer(...); end it with answer(<the result>)")
    _simplify(nodes, compiler.copies)
    _restore_names(nodes, compiler.base)
    return {"name": name, "description": description, "inputs": list(inputs), "nodes": nodes}


def load_program(source) -> Program:
    """A validated program from a plan in the Python subset (a `.py` file), or from anything
    `loom.reason.program.load_program` reads (a JSON file or string, a dict)."""
    if isinstance(source, (str, Path)) and str(source).endswith(".py") and "\n" not in str(source):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ProgramError(f"cannot read the plan {path}: {e}") from None
        return json_program.load_program(compile_plan(text, name=path.stem, where=str(path)))
    return json_program.load_program(source)


class _Compiler:
    def __init__(self, where: str, inputs: list[str], max_iterations: int, index: str | None, names: set[str]):
        self.where, self.max_iterations, self.index = where, max_iterations, index
        self.taken = set(inputs) | names  # what a generated name must not be
        self.versions: set[str] = set(inputs)  # variable names given out so far
        self.ids: set[str] = set()
        self.copies: set[str] = set()  # ids of the copy nodes versioning adds
        self.empty_lists: set[str] = set()  # graph variables set to [] (lists a loop may append to)
        self.base: dict[str, str] = {}  # a versioned graph variable -> the Python variable it versions

    # -- names ---------------------------------------------------------------------------------

    def error(self, node: ast.AST, message: str) -> PlanError:
        return PlanError(f"{self.where}, line {getattr(node, 'lineno', '?')}: {message}")

    def version(self, var: str) -> str:
        """A new graph variable for Python variable `var`: `var` itself the first time."""
        if var not in self.versions:
            self.versions.add(var)
            return var
        name = self._fresh(var)
        self.base[name] = var
        return name

    def temp(self, stem: str, line: int) -> str:
        return self._fresh(f"{stem}_{line}", first=True)

    def _fresh(self, stem: str, first: bool = False) -> str:
        n = 1 if first else 2
        while (candidate := stem if n == 1 else f"{stem}_{n}") in self.taken or candidate in self.versions:
            n += 1
        self.versions.add(candidate)
        return candidate

    def node_id(self, kind: str, line: int) -> str:
        stem, n = f"{kind}_{line}", 1
        while (candidate := stem if n == 1 else f"{stem}_{n}") in self.ids:
            n += 1
        self.ids.add(candidate)
        return candidate

    def read(self, env: dict, var: str, at: ast.AST) -> str:
        value = env.get(var)
        if value is None:
            known = ", ".join(sorted(k for k, v in env.items() if isinstance(v, str))) or "none"
            raise self.error(at, f"{var!r} is not defined here (defined: {known})")
        if isinstance(value, Unavailable):
            raise self.error(at, value.reason)
        return value

    def target(self, node: ast.expr, what: str) -> str:
        if not isinstance(node, ast.Name):
            raise self.error(node, f"{what} must be one plain name, not {ast.unparse(node)!r}")
        if node.id in RESERVED or node.id.startswith("_"):
            raise self.error(node, f"{node.id!r} cannot be a variable here: it is a function of the plan "
                             "language or starts with '_'; choose another name")
        return node.id

    # -- statements ----------------------------------------------------------------------------

    def block(self, stmts: list[ast.stmt], nodes: list[dict], env: dict, loop: _Loop | None) -> tuple[dict, bool]:
        """Compiles `stmts` onto `nodes`; returns the names after them and whether they answered."""
        answered = False
        for stmt in stmts:
            if answered:
                raise self.error(stmt, "nothing may follow answer(...): the answer ends the plan")
            if isinstance(stmt, ast.Pass):
                continue
            if isinstance(stmt, ast.Assign):
                if len(stmt.targets) != 1:
                    raise self.error(stmt, "assign one name at a time (a = b = ... is outside the plan language)")
                self.assign(self.target(stmt.targets[0], "an assignment's target"), stmt.value, stmt, nodes, env)
            elif isinstance(stmt, ast.AugAssign):
                var = self.target(stmt.target, "an assignment's target")
                value = ast.BinOp(ast.Name(var, ast.Load()), stmt.op, stmt.value)
                self.assign(var, ast.copy_location(value, stmt), stmt, nodes, env)
            elif isinstance(stmt, ast.Expr):
                answered = self.statement_call(stmt, nodes, env, loop)
            elif isinstance(stmt, ast.If):
                env, answered = self.branch(stmt, nodes, env, loop)
            elif isinstance(stmt, (ast.For, ast.While)):
                if stmt.orelse:
                    raise self.error(stmt, "a loop's else: is outside the plan language")
                env = self.loop(stmt, nodes, env)
            elif isinstance(stmt, (ast.Break, ast.Continue)):
                raise self.error(stmt, f"{type(stmt).__name__.lower()} is outside the plan language: a for loop "
                                 "runs every item; to stop early, write a while loop whose condition says when")
            else:
                raise self.error(stmt, f"{_describe(stmt)} is outside the plan language (allowed: assignments, "
                                 "ask/calc/search calls, if/elif/else, for, while, answer(...))")
        return env, answered

    def assign(self, var: str, value: ast.expr, stmt: ast.stmt, nodes: list[dict], env: dict) -> None:
        call = _plan_call(value)
        if call is not None:
            output = self.call(value, nodes, env, output_var=var)
        else:
            expr = self.expression(value, nodes, env)
            output = self.version(var)
            nodes.append(self.tool_expr(expr, output, stmt.lineno))
        env[var] = output

    def statement_call(self, stmt: ast.Expr, nodes: list[dict], env: dict, loop: _Loop | None) -> bool:
        value = stmt.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return False  # a docstring or a comment written as a string
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "answer":
            if loop is not None:
                raise self.error(stmt, "answer(...) inside a loop: collect or carry the result, answer after the loop")
            if len(value.args) != 1 or value.keywords:
                raise self.error(stmt, "answer takes one value: answer(<the result>)")
            nodes.append({"id": self.node_id("answer", stmt.lineno), "kind": "answer",
                          "value": self.template_of(value.args[0], {}, nodes, env)})
            return True
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "append"
                and isinstance(value.func.value, ast.Name)):
            self.append(value, nodes, env, loop)
            return False
        if _plan_call(value) is not None:
            raise self.error(stmt, f"the result of {value.func.id}(...) is not used: assign it to a name")
        raise self.error(stmt, f"the statement {ast.unparse(stmt)!r} does nothing a plan keeps; assign its value "
                         "to a name, or call answer(...)")

    def append(self, call: ast.Call, nodes: list[dict], env: dict, loop: _Loop | None) -> None:
        name = call.func.value.id
        if loop is None or name not in loop.appendable:
            raise self.error(call, f"{name}.append(...) collects only at the top of a loop's body, into a list made "
                             f"empty ({name} = []) just before the loop")
        if len(call.args) != 1 or call.keywords:
            raise self.error(call, f"{name}.append takes one value")
        source = self.value_name(call.args[0], nodes, env, call.lineno)
        output = loop.appendable.pop(name)  # one append per list per iteration
        loop.collect[output] = source

    def branch(self, stmt: ast.If, nodes: list[dict], env: dict, loop: _Loop | None) -> tuple[dict, bool]:
        branch: dict = {"id": self.node_id("if", stmt.lineno), "kind": "branch"}
        test = stmt.test
        if _plan_call(test) == "ask":
            branch["ask"] = self.template_of(test.args[0], self.fields(test), nodes, env)
        else:
            branch["condition"] = self.expression(test, nodes, env)
        arms = {}
        for arm, body in (("then", stmt.body), ("else", stmt.orelse)):
            arm_nodes: list[dict] = []
            arm_loop = _Loop(dict(loop.appendable)) if loop is not None else None
            arm_env, answered = self.block(body, arm_nodes, dict(env), arm_loop)
            if arm_loop is not None and arm_loop.collect:
                raise self.error(stmt, "append inside an if collects nothing on the iterations the arm does not "
                                 "run: append at the top of the loop's body")
            arms[arm] = (arm_nodes, arm_env, answered)
        (then_nodes, then_env, then_answered), (else_nodes, else_env, else_answered) = arms["then"], arms["else"]
        if then_answered != else_answered:
            raise self.error(stmt, "only one arm of this if calls answer(...): answer in both arms, or after the if")
        after = dict(env)
        if not then_answered:
            for var in sorted(set(then_env) | set(else_env)):
                a, b = then_env.get(var), else_env.get(var)
                if a == b:
                    after[var] = a
                elif isinstance(a, str) and isinstance(b, str):
                    merged = self.version(var)
                    then_nodes.append(self.copy(a, merged, stmt.lineno))
                    else_nodes.append(self.copy(b, merged, stmt.lineno))
                    after[var] = merged
                else:
                    after[var] = Unavailable(f"{var!r} is assigned in only one arm of the if at line {stmt.lineno}, "
                                             "so it has no value after it on the other path; assign it before the if")
        for arm, arm_nodes in (("then", then_nodes), ("else", else_nodes)):
            if arm_nodes:
                branch[arm] = _direct(arm_nodes)
        if not then_nodes and not else_nodes:
            return after, False  # an if that does nothing
        nodes.append(branch)
        nodes.extend(then_nodes)
        nodes.extend(else_nodes)
        return after, then_answered

    def loop(self, stmt: ast.For | ast.While, nodes: list[dict], env: dict) -> dict:
        line = stmt.lineno
        spec: dict = {"id": self.node_id("for" if isinstance(stmt, ast.For) else "while", line), "kind": "loop"}
        body_env = dict(env)
        local: set[str] = set()  # Python names of the loop's own variables (item and index)
        if isinstance(stmt, ast.For):
            iterable, target = stmt.iter, stmt.target
            index_var = None
            if (isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name)
                    and iterable.func.id == "enumerate" and isinstance(target, ast.Tuple)):
                if len(iterable.args) != 1 or iterable.keywords or len(target.elts) != 2:
                    raise self.error(stmt, "write an enumerating loop as: for i, x in enumerate(items):")
                iterable = iterable.args[0]
                index_var = self.target(target.elts[0], "the loop's index")
                target = target.elts[1]
            item_var = self.target(target, "the loop variable")
            if isinstance(iterable, ast.Name):
                spec["for_each"] = self.read(env, iterable.id, iterable)
            else:
                items = self.temp("items", line)
                nodes.append(self.tool_expr(f"list({self.expression(iterable, nodes, env)})", items, line))
                spec["for_each"] = items
            spec["as"] = body_env[item_var] = self.version(item_var)
            local.add(item_var)
            if index_var is not None:
                spec["index"] = body_env[index_var] = self.version(index_var)
                local.add(index_var)
        else:
            spec["max_iterations"] = self.max_iterations
        if "index" not in spec and "index" in self.taken:  # the default name would hide the plan's own
            spec["index"] = self.temp("index", line)

        assigned = _assigned_in(stmt.body) - local
        carried = sorted(v for v in assigned if isinstance(env.get(v), str))
        carry = {var: self.version(var) for var in carried}
        for var, name in carry.items():
            body_env[var] = name
        if isinstance(stmt, ast.While):
            if _plan_call_inside(stmt.test):
                raise self.error(stmt, "a while condition is an expression, without ask/calc/search: compute the "
                                 "question's answer in the body, into a variable the condition reads")
            spec["while"] = self.expression(stmt.test, nodes, body_env)
            if not expression_names(spec["while"]) & set(carry.values()):
                raise self.error(stmt, "the loop changes nothing its condition reads, so it would run "
                                 f"{self.max_iterations} times (its bound) or not at all")

        appended = _appended_in(stmt.body)
        appendable = {}
        for name in sorted(appended):
            if name in assigned or _reads_name(stmt.body, name, skip_append=True):
                raise self.error(stmt, f"the loop appends to {name} and also uses it otherwise; keep a count or "
                                 "a running value in another variable")
            source = env.get(name)
            if not isinstance(source, str) or source not in self.empty_lists:
                raise self.error(stmt, f"the loop appends to {name}, which is not a list made empty ({name} = []) "
                                 "before the loop")
            appendable[name] = self.version(name)
        loop = _Loop(dict(appendable))
        body_nodes: list[dict] = []
        end_env, _ = self.block(stmt.body, body_nodes, body_env, loop)
        for var, name in carry.items():
            final = end_env.get(var)
            if isinstance(final, Unavailable):
                raise self.error(stmt, final.reason)
            if final != name:
                body_nodes.append(self.copy(final, name, line))
        for output, source in loop.collect.items():
            if not any(n.get("output") == source for n in body_nodes):  # the item itself: a node to gather
                loop.collect[output] = self.temp("value", line)
                body_nodes.append(self.copy(source, loop.collect[output], line))
        if not body_nodes:
            raise self.error(stmt, "the loop's body computes nothing")
        if carry:
            spec["carry"] = list(carry.values())
            spec["init_from"] = {name: env[var] for var, name in carry.items()}
        if loop.collect:
            spec["collect"] = loop.collect
        spec["body"] = body_nodes
        nodes.append(spec)

        after = dict(env)
        for var in assigned | local:
            if var not in carry:
                after[var] = Unavailable(f"{var!r} belongs to the loop at line {line} and has no value after it; "
                                         "assign it before the loop to carry it through")
        after.update(carry)
        after.update(appendable)
        return after

    # -- calls and expressions -----------------------------------------------------------------

    def call(self, call: ast.Call, nodes: list[dict], env: dict, output_var: str | None = None) -> str:
        """One node for an ask / calc / search call; returns the variable it writes."""
        kind = call.func.id
        line = call.lineno
        if len(call.args) != 1:
            raise self.error(call, f"{kind} takes one string (the {'query' if kind == 'search' else 'prompt'}) and "
                             "keyword arguments")
        settings = {}
        keywords = {k.arg: k.value for k in call.keywords}
        if None in keywords:
            raise self.error(call, f"{kind}(**...) is outside the plan language; name each argument")
        own = {"ask": ASK_SETTINGS, "search": ("k", "index"), "calc": ()}[kind]
        for key in own:
            if key in keywords:
                try:
                    settings[key] = ast.literal_eval(keywords.pop(key))
                except ValueError:
                    raise self.error(call, f"{kind}'s {key}= must be a constant") from None
        template = self.template_of(call.args[0], keywords, nodes, env)
        output = self.version(output_var) if output_var else self.temp(kind, line)
        if kind == "ask":
            node = {"id": self.node_id("ask", line), "kind": "model", "prompt": template, "output": output, **settings}
        elif kind == "calc":
            node = {"id": self.node_id("calc", line), "kind": "tool", "tool": "calc", "text": template,
                    "output": output}
        else:
            index = settings.pop("index", self.index)
            if index is None:
                raise self.error(call, 'search needs a retrieval index: search("...", index="name")')
            node = {"id": self.node_id("search", line), "kind": "tool", "tool": "retrieve", "query": template,
                    "index": index, "output": output, **settings}
        nodes.append(node)
        return output

    def fields(self, call: ast.Call) -> dict:
        """A yes/no `ask`'s keyword fields (its settings do not apply to a branch's question)."""
        if len(call.args) != 1:
            raise self.error(call, "ask takes one string (the question) and keyword arguments")
        return {k.arg: k.value for k in call.keywords if k.arg not in ASK_SETTINGS}

    def template_of(self, value: ast.expr, fields: dict, nodes: list[dict], env: dict) -> str:
        """A "{name}" template over graph variables for a prompt: an f-string, a string with
        {name} fields (variables, or the keyword arguments in `fields`), or any other expression
        (its value's text)."""
        line = value.lineno
        if isinstance(value, ast.JoinedStr):
            if fields:
                raise self.error(value, "an f-string prompt takes no keyword fields; put the values in the f-string")
            parts = []
            for part in value.values:
                if isinstance(part, ast.Constant):
                    parts.append(str(part.value).replace("{", "{{").replace("}", "}}"))
                else:
                    if part.conversion != -1 or part.format_spec is not None:
                        raise self.error(value, "conversions and format specs ({x!r}, {x:.2f}) are outside the "
                                         "plan language in prompts; write {x}")
                    parts.append("{" + self.value_name(part.value, nodes, env, line) + "}")
            return "".join(parts)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            used: set[str] = set()

            def graph_name(base: str) -> str:
                used.add(base)
                if base in fields:
                    return self.value_name(fields[base], nodes, env, line)
                if base in env:
                    return self.read(env, base, value)
                raise self.error(value, f"the prompt's {{{base}}} is neither a variable nor a keyword argument")

            try:
                template = _map_fields(value.value, graph_name)
            except ValueError as e:
                raise self.error(value, f"bad {{field}} in {value.value!r} ({e}); "
                                 "write a literal brace as {{ or }}") from None
            unused = set(fields) - used
            if unused:
                raise self.error(value, f"keyword argument(s) {', '.join(sorted(unused))} name no {{field}} "
                                 "of the prompt")
            return template
        if fields:
            raise self.error(value, "keyword fields go with a string prompt: ask(\"... {x} ...\", x=...)")
        return "{" + self.value_name(value, nodes, env, line) + "}"  # the value's text is the prompt

    def value_name(self, value: ast.expr, nodes: list[dict], env: dict, line: int) -> str:
        """The graph variable holding `value`: a variable's current name, or a new node's output."""
        if isinstance(value, ast.Name) and value.id not in FUNCTIONS:
            return self.read(env, value.id, value)
        if _plan_call(value) is not None:
            return self.call(value, nodes, env)
        output = self.temp("value", line)
        nodes.append(self.tool_expr(self.expression(value, nodes, env), output, line))
        return output

    def expression(self, value: ast.expr, nodes: list[dict], env: dict) -> str:
        """`value` as an expression over graph variables; the plan calls in it become nodes first."""
        compiler = self
        bound = {n.id for n in ast.walk(value) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}

        class Lower(ast.NodeTransformer):
            def visit_Call(self, node: ast.Call):
                if _plan_call(node) is not None:
                    return ast.copy_location(ast.Name(compiler.call(node, nodes, env), ast.Load()), node)
                if isinstance(node.func, ast.Name) and node.func.id == "answer":
                    raise compiler.error(node, "answer(...) is a statement of its own, not part of an expression")
                node.args = [self.visit(a) for a in node.args]
                node.keywords = [self.visit(k) for k in node.keywords]
                if not isinstance(node.func, ast.Name):
                    node.func = self.visit(node.func)
                return node

            def visit_Name(self, node: ast.Name):
                if isinstance(node.ctx, ast.Load) and node.id not in bound and not (
                        node.id in FUNCTIONS and node.id not in env):
                    return ast.copy_location(ast.Name(compiler.read(env, node.id, node), ast.Load()), node)
                return node

        lowered = Lower().visit(copy.deepcopy(value))
        text = ast.unparse(lowered)
        try:
            expression_names(text)
        except ExpressionError as e:
            raise self.error(value, str(e)) from None
        return text

    def tool_expr(self, expr: str, output: str, line: int) -> dict:
        if expr == "[]":
            self.empty_lists.add(output)
        return {"id": self.node_id("set", line), "kind": "tool", "tool": "expr", "expr": expr, "output": output}

    def copy(self, source: str, output: str, line: int) -> dict:
        node = {"id": self.node_id("merge", line), "kind": "tool", "tool": "expr", "expr": source, "output": output}
        self.copies.add(node["id"])
        return node


# ---------------------------------------------------------------------------------------------
# Helpers over the Python tree
# ---------------------------------------------------------------------------------------------


def _plan_call(value: ast.AST) -> str | None:
    """"ask", "calc" or "search" when `value` is a call of one of them."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in CALLS:
        return value.func.id
    return None


def _plan_call_inside(value: ast.AST) -> bool:
    return any(_plan_call(n) for n in ast.walk(value))


def _assigned_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _assigned_in(stmts: list[ast.stmt]) -> set[str]:
    """The Python names a block assigns (loop variables of nested loops included)."""
    out: set[str] = set()
    for stmt in stmts:
        for n in ast.walk(stmt):
            if isinstance(n, (ast.Assign, ast.AugAssign, ast.For)):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                out |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
    return out


def _appended_in(stmts: list[ast.stmt]) -> set[str]:
    """The lists a loop body's own statements append to (a nested loop's appends are its own)."""
    return {s.value.func.value.id for s in stmts
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Attribute)
            and s.value.func.attr == "append" and isinstance(s.value.func.value, ast.Name)}


def _reads_name(stmts: list[ast.stmt], name: str, skip_append: bool) -> bool:
    receivers = {id(n.func.value) for stmt in stmts for n in ast.walk(stmt)
                 if skip_append and isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "append"}
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) and id(n) not in receivers
               for stmt in stmts for n in ast.walk(stmt))


def _describe(stmt: ast.stmt) -> str:
    names = {ast.Import: "import", ast.ImportFrom: "import", ast.FunctionDef: "def", ast.AsyncFunctionDef: "async def",
             ast.ClassDef: "class", ast.Return: "return", ast.Try: "try", ast.With: "with", ast.Raise: "raise",
             ast.Delete: "del", ast.Global: "global", ast.Nonlocal: "nonlocal", ast.Assert: "assert",
             ast.AnnAssign: "an annotated assignment"}
    return names.get(type(stmt), type(stmt).__name__)


def _direct(nodes: list[dict]) -> list[str]:
    """The ids of the nodes of an arm that are not inside a nested branch's arm."""
    nested = {member for n in nodes if n["kind"] == "branch" for arm in ("then", "else") for member in n.get(arm, [])}
    return [n["id"] for n in nodes if n["id"] not in nested]


# ---------------------------------------------------------------------------------------------
# Folding the versioning away
# ---------------------------------------------------------------------------------------------


def _simplify(nodes: list[dict], copies: set[str]) -> None:
    """Folds each copy into the node that computes its value, starts carried variables from
    constants in `init`, and drops what nothing reads; until nothing changes."""
    while _fold_copy(nodes, copies) or _fold_init(nodes) or _drop_dead(nodes):
        pass


def _containers(nodes: list[dict], loop: dict | None = None):
    """(node list, its loop or None) for the program and every loop body in it."""
    yield nodes, loop
    for n in nodes:
        if n["kind"] == "loop":
            yield from _containers(n["body"], n)


def _own_reads(n: dict) -> set[str]:
    kind = n["kind"]
    if kind == "model":
        return template_names(n["prompt"])
    if kind == "answer":
        return template_names(n["value"])
    if kind == "branch":
        return expression_names(n["condition"]) if "condition" in n else template_names(n["ask"])
    if kind == "tool":
        return {"expr": lambda: expression_names(n["expr"]), "calc": lambda: template_names(n["text"]),
                "retrieve": lambda: template_names(n["query"]), "python": lambda: set(n.get("inputs", []))}[n["tool"]]()
    names = {n["for_each"]} if "for_each" in n else set()
    names |= set(n.get("init_from", {}).values()) | set(n.get("collect", {}).values())
    for key in ("while", "until"):
        if key in n:
            names |= expression_names(n[key])
    return names


def _reads(nodes: list[dict]) -> Counter:
    """How many nodes read each variable, in `nodes` and the loop bodies within."""
    return Counter(name for container, _ in _containers(nodes) for n in container for name in _own_reads(n))


def _arms(container: list[dict]) -> dict[str, tuple[str, str]]:
    return {member: (n["id"], arm) for n in container if n["kind"] == "branch"
            for arm in ("then", "else") for member in n.get(arm, [])}


def _remove(container: list[dict], node: dict) -> None:
    container.remove(node)
    for n in container:
        if n["kind"] == "branch":
            for arm in ("then", "else"):
                if node["id"] in n.get(arm, []):
                    n[arm].remove(node["id"])
                    if not n[arm]:
                        del n[arm]


def _fold_copy(nodes: list[dict], copies: set[str]) -> bool:
    reads = _reads(nodes)
    for container, _ in _containers(nodes):
        arms = _arms(container)
        for k in container:
            if k["id"] not in copies:
                continue
            source = k["expr"]
            writers = [n for n in container if n.get("output") == source and n["kind"] in ("model", "tool")]
            everywhere = [n for c, _ in _containers(nodes) for n in c if n.get("output") == source]
            if reads[source] != 1 or not writers or len(writers) != len(everywhere):
                continue
            places = {arms.get(w["id"]) for w in writers}
            if len(writers) == 1:
                fits = arms.get(writers[0]["id"]) == arms.get(k["id"])
            else:  # the arms of one branch, each writing once, the branch beside the copy
                branches = {p[0] for p in places if p}
                fits = (None not in places and len(places) == len(writers) and len(branches) == 1
                        and arms.get(next(iter(branches))) == arms.get(k["id"]))
            if fits:
                for w in writers:
                    w["output"] = k["output"]
                _remove(container, k)
                return True
    return False


def _fold_init(nodes: list[dict]) -> bool:
    reads = _reads(nodes)
    writers = {n["output"]: n for c, _ in _containers(nodes) for n in c if "output" in n}
    for container, _ in _containers(nodes):
        for n in container:
            for var, source in list(n.get("init_from", {}).items()):
                w = writers.get(source)
                if w is None or w["kind"] != "tool" or w["tool"] != "expr" or reads[source] != 1:
                    continue
                try:
                    value = ast.literal_eval(w["expr"])
                except (ValueError, SyntaxError):
                    continue
                n.setdefault("init", {})[var] = value
                del n["init_from"][var]
                if not n["init_from"]:
                    del n["init_from"]
                return True
    return False


def _drop_dead(nodes: list[dict]) -> bool:
    reads = _reads(nodes)
    for container, loop in _containers(nodes):
        carried = set(loop.get("carry", [])) if loop else set()
        for n in container:
            if n["kind"] in ("model", "tool"):
                dead = reads[n["output"]] == 0 and n["output"] not in carried
            elif n["kind"] == "loop":
                outside = reads - _reads([n])
                unread = [out for out in n.get("collect", {}) if not outside[out]]
                dead = not any(outside[v] for v in [*n.get("carry", []), *n.get("collect", {})])
                if unread and not dead:  # the loop stays for its other outputs; these lists go
                    for out in unread:
                        del n["collect"][out]
                    if not n["collect"]:
                        del n["collect"]
                    return True
            elif n["kind"] == "branch":
                dead = not n.get("then") and not n.get("else")
            else:
                continue
            if dead:
                _remove(container, n)
                return True
    return False


def _restore_names(nodes: list[dict], base: dict[str, str]) -> None:
    """Gives a versioned variable (`letters_2`) its Python name back where folding left that
    name unused, so traces read like the plan."""
    used = {name for c, _ in _containers(nodes) for n in c
            for name in _own_reads(n) | {n.get("output"), n.get("as"), n.get("index"), *n.get("carry", []),
                                         *n.get("collect", {})}}
    mapping = {}
    for version in sorted(base, key=lambda v: (base[v], len(v), v)):
        if version in used and base[version] not in used and base[version] not in mapping.values():
            mapping[version] = base[version]
    if mapping:
        for container, _ in _containers(nodes):
            for n in container:
                _rename_node(n, mapping)


def _map_fields(template: str, rename) -> str:
    """`template` with each {field}'s variable (the name before any `.` or `[`) replaced by
    `rename(name)`, literal text and braces kept."""
    out = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            base = _field_base(name)
            out.append("{" + rename(base) + name[len(base):] + (f"!{conversion}" if conversion else "")
                       + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def _field_base(field: str) -> str:
    return field.split(".")[0].split("[")[0]


def _rename_expression(expr: str, mapping: dict[str, str]) -> str:
    tree = ast.parse(expr, mode="eval")
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id in mapping and n.id not in bound:
            n.id = mapping[n.id]
    return ast.unparse(tree)


def _rename_node(n: dict, mapping: dict[str, str]) -> None:
    for key in ("prompt", "value", "ask", "text", "query"):
        if key in n:
            n[key] = _map_fields(n[key], lambda name: mapping.get(name, name))
    for key in ("condition", "while", "until") + (("expr",) if n.get("tool") == "expr" else ()):
        if key in n:
            n[key] = _rename_expression(n[key], mapping)
    for key in ("output", "as", "index", "for_each"):
        if key in n:
            n[key] = mapping.get(n[key], n[key])
    if "inputs" in n and n["kind"] == "tool":
        n["inputs"] = [mapping.get(v, v) for v in n["inputs"]]
    if "carry" in n:
        n["carry"] = [mapping.get(v, v) for v in n["carry"]]
    for key in ("init", "init_from", "collect"):
        if key in n:
            n[key] = {mapping.get(k, k): (mapping.get(v, v) if key != "init" else v) for k, v in n[key].items()}
