"""Reasoning programs: a graph of steps over named variables, written as JSON, checked before it runs.

A program has `inputs` (variable names given when it runs) and `nodes`, each of one kind:

  model     a call to the language model: `prompt` is a template over variables ("{word}"; "{{"
            for a brace), the first line of the answer (or all of it, `parse: "text"`) goes to
            `output`; `max_tokens`, `stop`, `temperature`, `seed` optional.
  tool      `tool: "expr"`: a Python expression over the variables, evaluated in-process under a
            whitelist (`loom.reason.expressions`); `tool: "calc"`: arithmetic on the template's
            text; `tool: "python"`: a program run in the eval sandbox with the variables it
            names in `inputs` as JSON on stdin, its printed output (stripped) the result;
            `tool: "retrieve"`: the `k` passages of a BM25 index (`index`) best matching the
            `query` template, a list of {"id", "text", "score"}.
  branch    `condition` (an expression) or `ask` (a yes/no question template put to the model);
            the node ids in `then` run when it holds, those in `else` otherwise; the others are
            skipped.
  loop      runs `body` (a list of nodes, a sub-program) once per item of `for_each` (the item
            in variable `as`, its position in `index`), or again and again `until` a condition
            holds (checked after each iteration) or `while` one holds (checked before each, so
            perhaps never), never more than `max_iterations` times. Variables in `carry` pass
            from one iteration to the next and out of the loop, starting from their `init`
            value or from the outer variable `init_from` names: inside the body they read as
            the value the iteration started with, and what the body writes to them is the next
            iteration's value. `collect` maps an output list to the body variable it gathers
            from every iteration.
  answer    `value`: a template; the program's answer.

Dependencies are the variables: a node runs after the nodes that produce the variables it reads
(plus any ids in its optional `after`). Every variable has one producer, except that the arms of
one branch may each produce it. Validation reports, by node id: duplicate ids, unknown kinds or
fields, variables read but never produced, nodes in a branch arm that do not exist, nodes that
lead to no answer, and cycles (a loop is the only way round).

This module owns the format and its checks; running it is `loom.reason.executor`'s job.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from loom.errors import LoomError
from loom.reason.expressions import ExpressionError, expression_names


class ProgramError(LoomError):
    """A reasoning program is malformed; the message names the node."""


KINDS = ("model", "tool", "branch", "loop", "answer")
TOOLS = ("expr", "calc", "python", "retrieve")
FIELDS = {
    "model": {"prompt", "output", "max_tokens", "stop", "temperature", "seed", "parse"},
    "tool": {"tool", "expr", "text", "code", "inputs", "query", "index", "k", "output"},
    "branch": {"condition", "ask", "then", "else"},
    "loop": {"for_each", "as", "index", "until", "while", "max_iterations", "body", "carry", "init", "init_from",
             "collect"},
    "answer": {"value"},
}
COMMON = {"id", "kind", "after", "note"}
MAX_ITERATIONS = 1000  # the hard cap a loop may declare


@dataclass
class Node:
    id: str
    kind: str
    spec: dict  # the node's JSON object
    body: Program | None = None  # loops only

    def reads(self) -> set[str]:
        """The variables this node needs before it can run."""
        s = self.spec
        if self.kind == "model":
            return template_names(s["prompt"], self.id)
        if self.kind == "answer":
            return template_names(s["value"], self.id)
        if self.kind == "branch":
            return expression_names(s["condition"]) if "condition" in s else template_names(s["ask"], self.id)
        if self.kind == "tool":
            tool = s["tool"]
            if tool == "expr":
                return expression_names(s["expr"])
            if tool == "calc":
                return template_names(s["text"], self.id)
            if tool == "python":
                return set(s.get("inputs", []))
            return template_names(s["query"], self.id)
        # a loop reads its list, its condition's outer names and what its body reads from outside
        names = {s["for_each"]} if "for_each" in s else set()
        names |= set(s.get("init_from", {}).values())
        inner = self.loop_locals()
        for key in ("until", "while"):
            if key in s:
                names |= expression_names(s[key]) - inner
        assert self.body is not None
        names |= self.body.free_variables() - inner
        return names

    def writes(self) -> set[str]:
        s = self.spec
        if self.kind in ("model", "tool"):
            return {s["output"]}
        if self.kind == "loop":
            return set(s.get("carry", [])) | set(s.get("collect", {}))
        return set()

    def loop_locals(self) -> set[str]:
        s = self.spec
        names = set(s.get("carry", []))
        if "for_each" in s:
            names |= {s.get("as", "item"), s.get("index", "index")}
        else:
            names.add(s.get("index", "index"))
        return names


@dataclass
class Program:
    name: str
    inputs: list[str]
    nodes: list[Node]
    description: str = ""
    raw: dict = field(default_factory=dict)
    carried: frozenset[str] = frozenset()  # a loop body: the loop's carried variables

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def producers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n in self.nodes:
            for var in n.writes():
                out.setdefault(var, []).append(n.id)
        return out

    def free_variables(self) -> set[str]:
        """Variables the nodes read that no node of this program writes."""
        written = set().union(*(n.writes() for n in self.nodes)) if self.nodes else set()
        read = set().union(*(n.reads() for n in self.nodes)) if self.nodes else set()
        return read - written

    def dependencies(self) -> dict[str, set[str]]:
        """node id -> ids of the nodes it waits for: the producers of what it reads, its `after`,
        and, in a branch arm, the branch. In a loop body a carried variable reads as the value
        the iteration started with, so reading it waits for nobody."""
        producers = self.producers()
        arms = self.arms()
        deps = {}
        for n in self.nodes:
            wanted = {p for var in n.reads() - self.carried for p in producers.get(var, []) if p != n.id}
            wanted |= set(n.spec.get("after", []))
            if n.id in arms:
                wanted.add(arms[n.id][0])
            deps[n.id] = wanted
        return deps

    def arms(self) -> dict[str, tuple[str, str]]:
        """node id -> (branch id, "then" | "else") for nodes inside a branch arm."""
        out = {}
        for n in self.nodes:
            if n.kind == "branch":
                for arm in ("then", "else"):
                    for member in n.spec.get(arm, []):
                        out[member] = (n.id, arm)
        return out

    def to_json(self) -> dict:
        return self.raw


def template_names(template: str, node_id: str = "?") -> set[str]:
    """The variable names a "{name}" template uses."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ProgramError(f"node {node_id!r}: bad template {template!r} ({e}); "
                           "write a literal brace as {{ or }}") from None
    names = set()
    for f in fields:
        name = f.split(".")[0].split("[")[0]
        if not name.isidentifier():
            raise ProgramError(f"node {node_id!r}: template field {{{f}}} is not a variable name")
        names.add(name)
    return names


# ---------------------------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------------------------


def load_program(source: str | Path | dict) -> Program:
    """A validated program from a JSON file, a JSON string or a dict (`loom.reason.load_program`
    also reads plans in loom's Python subset)."""
    where = "program"
    if isinstance(source, dict):
        raw = source
    else:
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            path = Path(source)
            where = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise ProgramError(f"cannot read the program {path}: {e}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProgramError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    program = _parse(raw, where, top=True)
    validate(program, where)
    return program


def _parse(raw: dict, where: str, top: bool) -> Program:
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list) or not raw["nodes"]:
        raise ProgramError(f"{where}: a program is an object with a non-empty \"nodes\" list")
    inputs = raw.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, str) and i.isidentifier() for i in inputs):
        raise ProgramError(f"{where}: \"inputs\" must be a list of variable names")
    nodes = []
    for i, spec in enumerate(raw["nodes"]):
        if not isinstance(spec, dict):
            raise ProgramError(f"{where}: node {i} is not an object")
        node_id = spec.get("id")
        if not isinstance(node_id, str) or not node_id:
            raise ProgramError(f"{where}: node {i} has no \"id\"")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ProgramError(f"{where}: node {node_id!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
        unknown = set(spec) - FIELDS[kind] - COMMON
        if unknown:
            raise ProgramError(f"{where}: node {node_id!r} ({kind}): unknown field(s) {', '.join(sorted(unknown))}; "
                               f"a {kind} node takes {', '.join(sorted(FIELDS[kind]))}")
        _check_fields(spec, node_id, kind, where)
        body = None
        if kind == "loop":
            body = _parse({"nodes": spec["body"]}, f"{where}: loop {node_id!r}", top=False)
            body.carried = frozenset(spec.get("carry", []))
        node = Node(node_id, kind, spec, body)
        try:
            node.reads()  # parses every template and expression once, here
        except ExpressionError as e:
            raise ProgramError(f"{where}: node {node_id!r}: {e}") from None
        nodes.append(node)
    return Program(str(raw.get("name", "program")), list(inputs), nodes, str(raw.get("description", "")), raw)


def _check_fields(spec: dict, node_id: str, kind: str, where: str) -> None:
    def need(*keys: str) -> None:
        for key in keys:
            if key not in spec:
                raise ProgramError(f"{where}: node {node_id!r} ({kind}) needs \"{key}\"")

    def is_var(key: str) -> None:
        if key in spec and not (isinstance(spec[key], str) and spec[key].isidentifier()):
            raise ProgramError(f"{where}: node {node_id!r}: \"{key}\" must be a variable name, not {spec[key]!r}")

    if kind == "model":
        need("prompt", "output")
        is_var("output")
    elif kind == "answer":
        need("value")
    elif kind == "tool":
        need("tool", "output")
        is_var("output")
        tool = spec["tool"]
        if tool not in TOOLS:
            raise ProgramError(f"{where}: node {node_id!r}: tool {tool!r} is not one of {', '.join(TOOLS)}")
        need({"expr": "expr", "calc": "text", "python": "code", "retrieve": "query"}[tool])
        if tool == "retrieve":
            need("index")
    elif kind == "branch":
        if ("condition" in spec) == ("ask" in spec):
            raise ProgramError(f"{where}: node {node_id!r} (branch) needs exactly one of \"condition\" and \"ask\"")
        if not spec.get("then") and not spec.get("else"):
            raise ProgramError(f"{where}: node {node_id!r} (branch) needs \"then\" and/or \"else\" node lists")
    elif kind == "loop":
        need("body")
        if sum(key in spec for key in ("for_each", "until", "while")) != 1:
            raise ProgramError(f"{where}: node {node_id!r} (loop) needs exactly one of \"for_each\", \"until\" "
                               "and \"while\"")
        cap = spec.get("max_iterations", MAX_ITERATIONS if "for_each" in spec else 20)
        if not isinstance(cap, int) or not 1 <= cap <= MAX_ITERATIONS:
            raise ProgramError(f"{where}: node {node_id!r}: max_iterations must be 1 to {MAX_ITERATIONS}, not {cap!r}")
        for key in ("for_each", "as", "index"):
            is_var(key)
        if not isinstance(spec.get("carry", []), list) or not all(
                isinstance(spec.get(key, {}), dict) for key in ("collect", "init", "init_from")):
            raise ProgramError(f"{where}: node {node_id!r}: \"carry\" is a list of names; \"collect\", \"init\" and "
                               "\"init_from\" are objects")


def validate(program: Program, where: str = "program", outer: set[str] | None = None, top: bool = True) -> None:
    """Raises ProgramError naming the first node at fault. A loop's body (`top` False) sees the
    variables around it (`outer`) and needs no answer node."""
    seen: set[str] = set()
    for n in program.nodes:
        if n.id in seen:
            raise ProgramError(f"{where}: node id {n.id!r} is used twice")
        seen.add(n.id)
    available = set(program.inputs) | (outer or set())
    producers = program.producers()
    arms = program.arms()
    for var, ids in producers.items():
        if var in program.inputs:
            raise ProgramError(f"{where}: node {ids[0]!r} writes {var!r}, which is an input of the program")
        if len(ids) > 1:
            places = {arms.get(i) for i in ids}
            branches = {p[0] for p in places if p}
            if None in places or len(branches) != 1 or len(places) != len(ids):
                raise ProgramError(f"{where}: nodes {', '.join(repr(i) for i in ids)} all write {var!r}; only "
                                   "the arms of one branch may write the same variable")
    for n in program.nodes:
        for dep in n.spec.get("after", []):
            if dep not in seen:
                raise ProgramError(f"{where}: node {n.id!r}: \"after\" names {dep!r}, which is not a node")
        if n.kind == "branch":
            for arm in ("then", "else"):
                for member in n.spec.get(arm, []):
                    if member not in seen:
                        raise ProgramError(f"{where}: branch {n.id!r}: {arm!r} names {member!r}, which is not a node")
        missing = sorted(v for v in n.reads() if v not in available and v not in producers)
        if missing:
            raise ProgramError(f"{where}: node {n.id!r} reads {', '.join(missing)}, which no node writes and "
                               f"the program does not take as input (inputs: {', '.join(program.inputs) or 'none'})")
        if n.kind == "loop":
            assert n.body is not None
            init, init_from = n.spec.get("init", {}), n.spec.get("init_from", {})
            for var in n.spec.get("carry", []):
                if (var in init) == (var in init_from):
                    raise ProgramError(f"{where}: loop {n.id!r} carries {var!r}: give it one start value, in "
                                       "\"init\" (a value) or \"init_from\" (an outer variable)")
            for var in set(init) | set(init_from):
                if var not in n.spec.get("carry", []):
                    raise ProgramError(f"{where}: loop {n.id!r} starts {var!r}, which it does not carry")
            body_writes = set(n.body.producers())
            for out, inner in n.spec.get("collect", {}).items():
                if inner not in body_writes:
                    raise ProgramError(f"{where}: loop {n.id!r} collects {inner!r} into {out!r}, but no node of "
                                       "its body writes it")
            validate(n.body, f"{where}: loop {n.id!r}", available | set(producers) | n.loop_locals(), top=False)
    _check_cycles(program, where)
    if top:
        _check_reachable(program, where)


def _check_cycles(program: Program, where: str) -> None:
    deps = program.dependencies()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node_id: str, path: list[str]) -> None:
        if state.get(node_id) == 2:
            return
        if state.get(node_id) == 1:
            cycle = path[path.index(node_id):] + [node_id]
            raise ProgramError(f"{where}: node {node_id!r} depends on itself through {' -> '.join(cycle)}; "
                               "a cycle must be written as a loop node")
        state[node_id] = 1
        for dep in sorted(deps[node_id]):
            visit(dep, [*path, node_id])
        state[node_id] = 2

    for n in program.nodes:
        visit(n.id, [])


def _check_reachable(program: Program, where: str) -> None:
    """Every node must lead to an answer: through the nodes that read what it writes, or as a
    branch deciding whether such nodes run."""
    answers = [n.id for n in program.nodes if n.kind == "answer"]
    arms = program.arms()
    if len(answers) > 1 and any(a not in arms for a in answers):
        raise ProgramError(f"{where}: answer nodes {', '.join(repr(a) for a in answers)}: a program has one answer, "
                           "or several each inside a branch arm so that one runs")
    if not answers:
        raise ProgramError(f"{where}: no answer node; add {{\"id\": \"answer\", \"kind\": \"answer\", "
                           "\"value\": \"{...}\"}")
    deps = program.dependencies()
    useful, todo = set(answers), list(answers)
    while todo:
        for dep in deps[todo.pop()]:
            if dep not in useful:
                useful.add(dep)
                todo.append(dep)
    for n in program.nodes:
        if n.id not in useful:
            raise ProgramError(f"{where}: node {n.id!r} is unreachable: nothing it writes leads to an answer")
