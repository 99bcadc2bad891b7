"""Runs a reasoning program against a model backend: in dependency order, independent steps at
the same time, every step traced and checkpointed.

The executor keeps one state: the variables, which nodes are done or skipped, each loop's
progress, the counters and the cache of model answers. After every node (and every loop
iteration) it writes that state atomically to `WORKDIR/state.json`, so a run that is killed or
fails part way resumes (`resume=True`) with the same program and inputs and redoes only what
was not finished. Every event (each node's start and end, each model call with its prompt,
answer, tokens and seconds, cache hits, branch decisions, loop iterations, budget stops, errors)
is a line of `WORKDIR/trace.jsonl`; `loom.reason.render` draws the executed graph from it.

Scheduling: a node is ready when the nodes producing what it reads are finished and, inside a
branch arm, when its branch chose that arm. Ready nodes run on a pool of `max_parallel` threads;
ready model nodes with the same settings go to the backend as one batch. Identical model calls
(same prompt and settings) are answered once. Budgets (model calls, tokens, seconds) stop the
run between steps with status "budget"; a step in flight finishes. A loop that carries
variables runs its iterations one after another (each depends on the one before); a `for_each`
loop that carries nothing runs them at the same time. Each iteration's body is scheduled like a
program.

This module does not decide what to ask (that is the program's or the planner's) nor how to
reach a model (that is `loom.reason.backends`).
"""

from __future__ import annotations

import hashlib
import json
import string
import threading
import time
from collections.abc import MutableMapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loom.errors import LoomError
from loom.reason.backends import Backend, Completion, GenerationSettings
from loom.reason.expressions import calculate, evaluate
from loom.reason.program import Node, Program
from loom.util import atomic_write_text


class ExecutionError(LoomError):
    """A step failed; the message names the node."""


class BudgetExceeded(Exception):
    """Raised inside the executor to stop between steps."""


@dataclass
class Budget:
    max_model_calls: int = 0  # 0: no limit
    max_tokens: int = 0  # prompt + completion tokens
    max_seconds: float = 0.0

    def exceeded(self, calls: int, tokens: int, seconds: float) -> str | None:
        if self.max_model_calls and calls >= self.max_model_calls:
            return f"{calls} model calls reached the budget of {self.max_model_calls}"
        if self.max_tokens and tokens >= self.max_tokens:
            return f"{tokens} tokens reached the budget of {self.max_tokens}"
        if self.max_seconds and seconds >= self.max_seconds:
            return f"{seconds:.1f}s reached the budget of {self.max_seconds:g}s"
        return None


@dataclass
class RunResult:
    answer: str | None
    status: str  # "done" | "budget" | "error" | "no-answer" | "empty-answer"
    variables: dict
    model_calls: int
    tokens: int
    cache_hits: int
    seconds: float
    workdir: str | None
    error: str | None = None
    budget: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class _State:
    program: str
    inputs: dict
    variables: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)  # node path -> "done" | "skipped"
    decisions: dict = field(default_factory=dict)  # branch path -> "then" | "else"
    loops: dict = field(default_factory=dict)  # loop path -> {"iteration", "carry", "collected"}
    model_calls: int = 0
    tokens: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    cache: dict = field(default_factory=dict)  # call key -> [text, prompt_tokens, completion_tokens]
    answer: str | None = None


def program_digest(program: Program) -> str:
    return hashlib.sha256(json.dumps(program.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def as_text(value) -> str:
    """A variable as it appears in a prompt: retrieved passages one per line with their ids,
    other lists as comma-separated items, the rest as str()."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "text" in v for v in value):
        return "\n".join(f"[{v.get('id', i)}] {v['text']}" for i, v in enumerate(value))
    if isinstance(value, list):
        return ", ".join(as_text(v) for v in value)
    return str(value)


def render_template(template: str, variables: dict) -> str:
    return template.format_map({k: _Formatted(v) for k, v in variables.items()})


class _Formatted(str):
    """A value that formats as `as_text(value)` but still allows `{items[0]}`."""

    def __new__(cls, value):
        obj = super().__new__(cls, as_text(value))
        obj.value = value
        return obj

    def __getitem__(self, key):
        return _Formatted(self.value[key]) if isinstance(self.value, (list, dict)) else str.__getitem__(self, key)


class Executor:
    def __init__(self, backend: Backend, workdir: str | Path | None = None, max_parallel: int = 4,
                 budget: Budget | None = None, settings: GenerationSettings | None = None,
                 retrieval_root: str | Path | None = None):
        self.backend = backend
        self.workdir = Path(workdir) if workdir else None
        self.max_parallel = max(1, max_parallel)
        self.budget = budget or Budget()
        self.settings = settings or GenerationSettings()
        self.retrieval_root = Path(retrieval_root) if retrieval_root else None
        self._lock = threading.RLock()
        self._state: _State | None = None
        self._started = 0.0
        self._seconds_before = 0.0
        self._producers: dict[str, tuple[str, str]] = {}  # variable -> (node path, kind) that set it
        self._empty_answer: str | None = None

    # --- the run -----------------------------------------------------------------------------

    def run(self, program: Program, inputs: dict, resume: bool = False, notes=(), spent: tuple[int, int] = (0, 0)
            ) -> RunResult:
        """Runs `program` on `inputs` (continuing the saved state when `resume`); `notes` are
        (event, fields) pairs written to the trace after its start, e.g. the planner's plan.
        `spent`: (model calls, tokens) made before the run for it (the planner's), counted in the
        result and in the trace's `run_end`, so that both tell the same totals; budgets apply to
        the program's own calls."""
        missing = [name for name in program.inputs if name not in inputs]
        if missing:
            raise ExecutionError(f"program {program.name!r} needs input(s) {', '.join(missing)}")
        digest = program_digest(program)
        state = self._load(digest, inputs) if resume else None
        if state is None:
            state = _State(digest, dict(inputs), variables=dict(inputs))
            if self.workdir:
                self.workdir.mkdir(parents=True, exist_ok=True)
                (self.workdir / "trace.jsonl").unlink(missing_ok=True)
        self._state = state
        self._started = time.time()
        self._seconds_before = state.seconds
        self._trace("run_start", program=program.name, inputs=inputs, resumed=resume and bool(state.status),
                    backend=self.backend.name)
        for event, fields in notes:
            self._trace(event, **fields)
        status, error, budget = "done", None, None
        self._producers, self._empty_answer = {}, None
        try:
            self._run_graph(program, state.variables, "")
            if state.answer is None:
                status, error = "no-answer", "the program ended without reaching an answer node"
            elif not state.answer:
                status, error = "empty-answer", self._empty_answer or "the answer came out empty"
        except BudgetExceeded as e:
            status, budget = "budget", str(e)
            self._trace("budget_stop", reason=budget)
        except LoomError as e:
            status, error = "error", str(e)
            self._trace("error", message=error)
        finally:
            self._save()
        calls, tokens = state.model_calls + spent[0], state.tokens + spent[1]
        result = RunResult(state.answer, status, dict(state.variables), calls, tokens,
                           state.cache_hits, round(self._elapsed(), 3), str(self.workdir) if self.workdir else None,
                           error, budget)
        self._trace("run_end", status=status, answer=state.answer, model_calls=calls, tokens=tokens,
                    seconds=result.seconds, error=error, budget=budget)
        return result

    def _elapsed(self) -> float:
        return self._seconds_before + time.time() - self._started

    def _load(self, digest: str, inputs: dict) -> _State | None:
        path = self.workdir / "state.json" if self.workdir else None
        if path is None or not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ExecutionError(f"{path} is corrupt ({e}); delete it to start afresh") from None
        if raw.get("program") != digest or raw.get("inputs") != inputs:
            raise ExecutionError(f"{path} belongs to another program or other inputs; delete it or choose another "
                                 "work directory to start afresh")
        return _State(**raw)

    def _save(self) -> None:
        with self._lock:
            state = self._state
            if state is None or self.workdir is None:
                return
            state.seconds = round(self._elapsed(), 3)
            atomic_write_text(self.workdir / "state.json", json.dumps(asdict(state), default=str))

    def _trace(self, event: str, **fields) -> None:
        if self.workdir is None:
            return
        line = json.dumps({"t": round(time.time(), 4), "event": event, **fields}, default=str)
        with self._lock, open(self.workdir / "trace.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    # --- scheduling ----------------------------------------------------------------------------

    def _run_graph(self, program: Program, scope: dict, prefix: str) -> None:
        """Runs every node of `program` (whose variables live in `scope`) to completion."""
        state = self._state
        assert state is not None
        deps = program.dependencies()
        arms = program.arms()
        producers = program.producers()
        path = {n.id: f"{prefix}{n.id}" for n in program.nodes}
        running: dict[Future, list[Node]] = {}

        def finished(node_id: str) -> bool:
            return state.status.get(path[node_id]) in ("done", "skipped")

        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            while True:
                with self._lock:
                    self._skip_unreachable(program, scope, path, arms, producers)
                    pending = [n for n in program.nodes if not finished(n.id)]
                    if not pending and not running:
                        return
                    in_flight = {n.id for nodes in running.values() for n in nodes}
                    ready = [n for n in pending if n.id not in in_flight and all(finished(d) for d in deps[n.id])]
                if ready:
                    reason = self.budget.exceeded(state.model_calls, state.tokens, self._elapsed())
                    if reason:
                        for future in running:
                            future.cancel()
                        raise BudgetExceeded(reason)
                for batch in self._batches(ready):
                    future = pool.submit(self._run_nodes, batch, scope, path)
                    running[future] = batch
                if not running:
                    stuck = ", ".join(n.id for n in pending)
                    raise ExecutionError(f"nodes {stuck} can never run (what they wait for was skipped)")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()  # re-raises a step's error here

    def _skip_unreachable(self, program: Program, scope: dict, path: dict, arms: dict, producers: dict) -> None:
        """Marks skipped: nodes in the arm a branch did not take, and nodes that read a variable
        all of whose producers were skipped."""
        state = self._state
        changed = True
        while changed:
            changed = False
            for n in program.nodes:
                p = path[n.id]
                if p in state.status:
                    continue
                skip = False
                if n.id in arms:
                    branch, arm = arms[n.id]
                    decision = state.decisions.get(path[branch])
                    skip = (decision is not None and decision != arm) or state.status.get(path[branch]) == "skipped"
                for var in n.reads():
                    ids = producers.get(var, [])
                    if ids and var not in scope and all(state.status.get(path[i]) == "skipped" for i in ids):
                        skip = True
                if skip:
                    state.status[p] = "skipped"
                    self._trace("node_skipped", node=p)
                    changed = True

    def _batches(self, ready: list[Node]) -> list[list[Node]]:
        """Model nodes with the same settings in one batch each; every other node alone."""
        groups: dict[tuple, list[Node]] = {}
        out = []
        for n in ready:
            if n.kind == "model":
                groups.setdefault(self._node_settings(n).__repr__(), []).append(n)
            else:
                out.append([n])
        return list(groups.values()) + out

    # --- the steps -----------------------------------------------------------------------------

    def _run_nodes(self, nodes: list[Node], scope: dict, path: dict) -> None:
        started = time.time()
        for n in nodes:
            self._trace("node_start", node=path[n.id], kind=n.kind)
        if nodes[0].kind == "model":
            prompts = [self._render(n, n.spec["prompt"], scope, path) for n in nodes]
            settings = self._node_settings(nodes[0])
            completions = self._complete(prompts, settings, [path[n.id] for n in nodes])
            for n, c in zip(nodes, completions):
                text = c.text if n.spec.get("parse") == "text" else _first_line(c.text)
                self._finish(n, path, scope, {n.spec["output"]: text.strip()}, started)
            return
        n = nodes[0]
        try:
            if n.kind == "tool":
                self._finish(n, path, scope, {n.spec["output"]: self._tool(n, scope, path)}, started)
            elif n.kind == "branch":
                self._branch(n, scope, path, started)
            elif n.kind == "loop":
                self._loop(n, scope, path, started)
            elif n.kind == "answer":
                answer = self._render(n, n.spec["value"], scope, path).strip()
                if not answer:
                    self._empty_answer = self._why_empty(n, n.spec["value"], scope, path)
                with self._lock:
                    if self._state.answer is not None:
                        raise ExecutionError(f"node {path[n.id]!r}: a second answer ({answer!r} after "
                                             f"{self._state.answer!r}); put answer nodes in different branch arms")
                    self._state.answer = answer
                self._finish(n, path, scope, {}, started, answer=answer)
        except (BudgetExceeded, ExecutionError):
            raise
        except LoomError as e:
            raise ExecutionError(f"node {path[n.id]!r}: {e}") from None

    def _why_empty(self, n: Node, template: str, scope: dict, path: dict) -> str:
        """Says which step left the answer empty: the answer node's template and the empty
        variables it reads, with the nodes that produced them."""
        names = {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(template) if field}
        empty = sorted(name for name in names if not as_text(scope.get(name, "")).strip())
        causes = []
        for name in empty:
            node, kind = self._producers.get(name, (None, None))
            if kind == "model":
                causes.append(f"model node {node!r} answered nothing for {{{name}}}")
            elif node:
                causes.append(f"{kind} node {node!r} gave an empty {{{name}}}")
            elif name in self._state.inputs:
                causes.append(f"the input {{{name}}} is empty")
            else:
                causes.append(f"{{{name}}} is empty (set before this run was resumed)")
        detail = "; ".join(causes) or "its template renders to nothing"
        return f"the answer is empty: node {path[n.id]!r} gives {template!r}, and {detail} (see the trace)"

    def _finish(self, n: Node, path: dict, scope: dict, outputs: dict, started: float, **extra) -> None:
        with self._lock:
            for name in outputs:
                self._producers[name] = (path[n.id], n.kind)
            scope.update(outputs)
            self._state.status[path[n.id]] = "done"
            self._save()
        self._trace("node_end", node=path[n.id], kind=n.kind, outputs=outputs, seconds=round(time.time() - started, 4),
                    **extra)

    def _render(self, n: Node, template: str, scope: dict, path: dict) -> str:
        try:
            with self._lock:
                return render_template(template, scope)
        except (KeyError, IndexError, AttributeError) as e:
            raise ExecutionError(f"node {path[n.id]!r}: template {template!r} failed: {type(e).__name__} {e}") from None

    def _node_settings(self, n: Node) -> GenerationSettings:
        s, base = n.spec, self.settings
        stop = s.get("stop", ["\n\n"] if s.get("parse") == "text" else ["\n"])
        return GenerationSettings(max_tokens=int(s.get("max_tokens", base.max_tokens)), stop=tuple(stop),
                                  temperature=float(s.get("temperature", base.temperature)), top_p=base.top_p,
                                  seed=int(s.get("seed", base.seed)))

    def _complete(self, prompts: list[str], settings: GenerationSettings, nodes: list[str]) -> list[Completion]:
        """Model answers for the prompts: cached ones from the cache, the rest in one backend call."""
        state = self._state
        keys = [hashlib.sha256(json.dumps([self.backend.name, p, asdict(settings)], default=str).encode()).hexdigest()
                for p in prompts]
        results: list[Completion | None] = [None] * len(prompts)
        todo, asked = [], set()
        with self._lock:
            for i, key in enumerate(keys):
                if key in state.cache:
                    text, pt, ct = state.cache[key]
                    results[i] = Completion(text, pt, ct)
                    state.cache_hits += 1
                    self._trace("model_call", node=nodes[i], prompt=prompts[i], response=text, cached=True)
                elif key not in asked:  # the same prompt twice in one batch is asked once, copied below
                    asked.add(key)
                    todo.append(i)
        if todo:
            started = time.time()
            try:
                answers = self.backend.complete([prompts[i] for i in todo], settings)
            except LoomError as e:
                raise ExecutionError(f"node(s) {', '.join(nodes[i] for i in todo)}: model call failed: {e}") from None
            seconds = round(time.time() - started, 4)
            with self._lock:
                for i, c in zip(todo, answers):
                    results[i] = c
                    state.cache[keys[i]] = [c.text, c.prompt_tokens, c.completion_tokens]
                    state.model_calls += 1
                    state.tokens += c.prompt_tokens + c.completion_tokens
                    self._trace("model_call", node=nodes[i], prompt=prompts[i], response=c.text, cached=False,
                                prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                                finish_reason=c.finish_reason, seconds=seconds, batch=len(todo))
        with self._lock:
            for i, key in enumerate(keys):
                if results[i] is None:
                    text, pt, ct = state.cache[key]
                    results[i] = Completion(text, pt, ct)
                    state.cache_hits += 1
        return results  # type: ignore[return-value]

    def _tool(self, n: Node, scope: dict, path: dict):
        s = n.spec
        tool = s["tool"]
        if tool == "expr":
            with self._lock:
                variables = dict(scope)
            return evaluate(s["expr"], variables)
        if tool == "calc":
            return calculate(self._render(n, s["text"], scope, path))
        if tool == "python":
            from loom.sandbox import run_python

            with self._lock:
                payload = json.dumps({name: scope[name] for name in s.get("inputs", [])}, default=str)
            result = run_python(s["code"], stdin=payload)
            self._trace("tool_run", node=path[n.id], status=result.status, stdout=result.stdout[-2000:],
                        stderr=result.stderr[-2000:])
            if not result.passed:
                raise ExecutionError(f"node {path[n.id]!r}: the python tool ended {result.status}: "
                                     f"{(result.stderr or result.stdout).strip()[-500:]}")
            return result.stdout.strip()
        from loom.reason.retrieval import search

        query = self._render(n, s["query"], scope, path)
        index = Path(s["index"])
        if not index.is_absolute() and self.retrieval_root:
            index = self.retrieval_root / index
        hits = search(index, query, int(s.get("k", 3)))
        self._trace("retrieval", node=path[n.id], query=query, citations=[h["id"] for h in hits])
        return hits

    def _branch(self, n: Node, scope: dict, path: dict, started: float) -> None:
        s = n.spec
        if "condition" in s:
            with self._lock:
                variables = dict(scope)
            taken = bool(evaluate(s["condition"], variables))
        else:
            prompt = self._render(n, s["ask"], scope, path)
            (c,) = self._complete([prompt], self._node_settings(n), [path[n.id]])
            taken = _first_line(c.text).strip().lower().startswith(("y", "true"))
        arm = "then" if taken else "else"
        with self._lock:
            self._state.decisions[path[n.id]] = arm
        self._trace("branch", node=path[n.id], taken=arm)
        self._finish(n, path, scope, {}, started, taken=arm)

    def _loop(self, n: Node, scope: dict, path: dict, started: float) -> None:
        s, p = n.spec, path[n.id]
        assert n.body is not None
        cap = int(s.get("max_iterations", 1000 if "for_each" in s else 20))
        with self._lock:
            items = list(scope[s["for_each"]]) if "for_each" in s else None
        if items is not None and not isinstance(scope[s["for_each"]], (list, tuple, str)):
            raise ExecutionError(f"loop {p!r}: for_each {s['for_each']!r} is not a list")
        if items is not None and not s.get("carry"):
            self._map(n, scope, path, items, cap, started)
            return
        with self._lock:
            start = {**s.get("init", {}), **{var: scope[outer] for var, outer in s.get("init_from", {}).items()}}
            progress = self._state.loops.setdefault(p, {"iteration": 0, "carry": start,
                                                        "collected": {out: [] for out in s.get("collect", {})}})
        capped = False
        while True:
            i = progress["iteration"]
            if items is not None and i >= len(items):
                break
            if "while" in s and progress.get("scope") is None and not evaluate(
                    s["while"], {**dict(scope), **progress["carry"]}):
                break
            if i >= cap:
                capped = True
                self._trace("loop_cap", node=p, iterations=i)
                break
            with self._lock:
                if progress.get("scope") is None:  # a new iteration (else: one cut short, resumed)
                    own = {**progress["carry"], **_iteration_scope(s, items, i)}
                    progress["scope"], progress["next"] = own, {}
                    self._trace("loop_iteration", node=p, iteration=i)
                # the iteration's variables live in the saved state, so a resume finds them
                inner = _Scope(scope, progress["scope"], progress["next"], frozenset(s.get("carry", [])))
            self._run_graph(n.body, inner, f"{p}[{i}]/")
            with self._lock:
                after = {**progress["scope"], **progress["next"]}
                progress["carry"] = {var: after[var] for var in s.get("carry", [])}
                for out, var in s.get("collect", {}).items():
                    progress["collected"][out].append(after.get(var))
                progress["iteration"] = i + 1
                progress["scope"] = progress["next"] = None
                self._save()
            if "until" in s and evaluate(s["until"], {**dict(scope), **after}):
                break
            reason = self.budget.exceeded(self._state.model_calls, self._state.tokens, self._elapsed())
            if reason:
                raise BudgetExceeded(reason)
        outputs = {**progress["carry"], **progress["collected"]}
        self._finish(n, path, scope, outputs, started, iterations=progress["iteration"], capped=capped)

    def _map(self, n: Node, scope: dict, path: dict, items: list, cap: int, started: float) -> None:
        """A for_each loop that carries nothing: its iterations are independent, so they run at
        the same time (up to `max_parallel`), each with its own saved variables; `collect`
        gathers in item order."""
        s, p = n.spec, path[n.id]
        count = min(len(items), cap)
        with self._lock:
            progress = self._state.loops.setdefault(p, {"mode": "map", "scopes": {}, "done": []})
        if len(items) > cap:
            self._trace("loop_cap", node=p, iterations=cap)

        failed = threading.Event()  # the first failure stops the loop: iterations not yet started
        # never start, those running finish

        def iteration(i: int) -> None:
            if failed.is_set():
                return
            with self._lock:
                if str(i) not in progress["scopes"]:
                    progress["scopes"][str(i)] = _iteration_scope(s, items, i)
                    self._trace("loop_iteration", node=p, iteration=i)
                own = progress["scopes"][str(i)]
            try:
                self._run_graph(n.body, _Scope(scope, own, {}, frozenset()), f"{p}[{i}]/")
            except BaseException:
                failed.set()
                raise
            with self._lock:
                progress["done"].append(i)
                self._save()

        todo = [i for i in range(count) if i not in progress["done"]]
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            for future in [pool.submit(iteration, i) for i in todo]:
                future.result()
        with self._lock:
            collected = {out: [progress["scopes"][str(i)].get(var) for i in range(count)]
                         for out, var in s.get("collect", {}).items()}
        self._finish(n, path, scope, collected, started, iterations=count, capped=len(items) > cap)


class _Scope(MutableMapping):
    """A loop iteration's variables: reads fall back to the enclosing scope; writes stay in
    `own`, except writes to carried variables, which go to `next` (the next iteration's values)
    so that the body reads them as they were when the iteration started. Both dicts are part of
    the saved state."""

    def __init__(self, outer, own: dict, next_values: dict, carried: frozenset):
        self.outer, self.own, self.next, self.carried = outer, own, next_values, carried

    def __getitem__(self, key):
        return self.own[key] if key in self.own else self.outer[key]

    def __setitem__(self, key, value) -> None:
        (self.next if key in self.carried else self.own)[key] = value

    def __delitem__(self, key) -> None:
        del self.own[key]

    def __iter__(self):
        return iter(set(self.outer) | set(self.own))

    def __len__(self) -> int:
        return len(set(self.outer) | set(self.own))


def _iteration_scope(s: dict, items: list | None, i: int) -> dict:
    """Iteration i's own loop variables: its index, and its item for a for_each loop."""
    own = {s.get("index", "index"): i}
    if items is not None:
        own[s.get("as", "item")] = items[i]
    return own


def _first_line(text: str) -> str:
    stripped = text.strip("\n")
    return stripped.split("\n", 1)[0] if stripped else ""
