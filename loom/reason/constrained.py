"""Constrained decoding of plans: every plan a model writes under `PlanDecoder` parses, compiles
(`loom.reason.plan_code`) and validates, whatever the model's logits.

The syntax is llguidance's job: a maintained library (used by vLLM, SGLang and llama.cpp) that
turns a Lark grammar into a mask over a Hugging Face tokenizer's vocabulary, on the CPU, in
microseconds a token. What no context-free grammar can hold is tracked here: a name is read
only where it still has a value (assigned before, in a block that is still open), a `while`
body changes something its condition reads before the loop may end, a list collects once, at
the top of one loop's body, and `answer(...)` comes last. After every token that ends a line
the grammar is rebuilt from what the completed lines define (their text as a literal, then one
line over the names now in scope, then the next line's indentation) and the tokens so far are
replayed into a fresh matcher, so tokens that span a line break keep their usual form.

The subset written under constraint is a canonical part of what `compile_plan` accepts (single
spaces around `=` and operators, four-space indents, `"..."` prompts with {name} fields, no
f-strings or keyword fields, at most `max_depth` nested blocks and `max_lines` lines): plans in
loom's training data are written in this form, so nothing a model learned is out of reach.
A plan nearing `max_lines` is steered to its end: no new blocks, then only what lets the open
loops close, then `answer(...)`.
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass, field

import numpy as np

from loom.reason.expressions import FUNCTIONS, METHODS, expression_names

INDENT = "    "
OPERATORS = ("+", "-", "*", "//", "%", "==", "!=", "<", ">", "<=", ">=", "and", "or")
RESERVED = {"ask", "calc", "search", "answer", *FUNCTIONS, *keyword.kwlist, *keyword.softkwlist}


@dataclass
class _Frame:
    kind: str  # "top", "for", "while", "if", "else"
    depth: int  # the indentation of the block's statements
    defined: set[str] = field(default_factory=set)  # names first assigned here
    lists: set[str] = field(default_factory=set)  # names set to [] here (lists a loop may collect into)
    assigned: set[str] = field(default_factory=set)  # names assigned here or in blocks inside
    condition: set[str] = field(default_factory=set)  # a while loop's: the names its condition reads
    appended: set[str] = field(default_factory=set)  # a loop's: the lists its body collects into
    statements: int = 0

    @property
    def loop(self) -> bool:
        return self.kind in ("for", "while")

    @property
    def closable(self) -> bool:
        return self.kind != "while" or bool(self.condition & self.assigned)


class PlanContext:
    """What the completed lines of a plan define: the open blocks and their names."""

    def __init__(self, inputs: tuple[str, ...]):
        self.frames = [_Frame("top", 0, defined=set(inputs))]
        self.lines = 0
        self.answered = False
        self.collected: set[str] = set()  # lists a finished loop filled: readable, not appendable

    def add_line(self, line: str) -> None:
        depth = (len(line) - len(line.lstrip(" "))) // len(INDENT)
        text = line.strip()
        self._close_to(depth)
        self.lines += 1
        frame = self.frames[-1]
        frame.statements += 1
        if text.startswith("answer("):
            self.answered = True
        elif text.startswith(("for ", "while ", "if ", "elif ", "else:")):
            head = text.split(" ", 1)[0].rstrip(":")
            new = _Frame({"elif": "if"}.get(head, head), depth + 1)
            if head == "for":
                new.defined.add(text[4:].split(" in ", 1)[0])
            if head == "while":
                new.condition = expression_names(text[len("while "):-1])
            self.frames.append(new)
        elif ".append(" in text.split(" ", 1)[0]:
            frame.appended.add(text.split(".", 1)[0])
        else:
            name, op, value = re.match(r"(\w+) (\+?=) (.*)$", text).groups()
            if not self._visible(name):
                frame.defined.add(name)
                if value == "[]":
                    frame.lists.add(name)
            for f in self.frames:
                f.assigned.add(name)

    def _visible(self, name: str) -> bool:
        return any(name in f.defined for f in self.frames)

    def _close_to(self, depth: int) -> None:
        """Closes the blocks deeper than `depth`."""
        while self.frames[-1].depth > depth:
            frame = self.frames.pop()
            if frame.loop:
                self.collected |= frame.appended
                for parent in self.frames:
                    parent.lists -= frame.appended

    # -- what the next line may do ---------------------------------------------------------------

    def depths(self) -> list[int]:
        """The indentations the next line may take: the innermost block's, or an outer one when
        every block it leaves may end."""
        if self.frames[-1].statements == 0 and len(self.frames) > 1:
            return [self.frames[-1].depth]
        out = []
        for i in range(len(self.frames) - 1, -1, -1):
            out.append(self.frames[i].depth)
            if not self.frames[i].closable:
                break
        return out

    def frames_at(self, depth: int) -> list[_Frame]:
        return [f for f in self.frames if f.depth <= depth]

    def loadable(self, depth: int) -> list[str]:
        frames = self.frames_at(depth)
        names: set[str] = set()
        for i, f in enumerate(frames):
            inside_a_loop = any(g.loop for g in frames[i + 1:])
            names |= f.defined - (f.lists if inside_a_loop else set())
        return sorted(names)

    def appendable(self, depth: int) -> list[str]:
        frames = self.frames_at(depth)
        if len(frames) < 2 or not frames[-1].loop:
            return []
        return sorted(frames[-2].lists - frames[-1].appended - self.collected)

    def storable(self, depth: int) -> list[str]:
        frames = self.frames_at(depth)
        lists = {n for f in frames for n in f.lists} | self.collected
        return [n for n in self.loadable(depth) if n not in lists]

    def next_depths(self, depth: int, assigned: str | None) -> list[int]:
        """After a simple statement at `depth` (assigning `assigned`): where the line after may
        stand."""
        frames = self.frames_at(depth)
        out = []
        for i in range(len(frames) - 1, -1, -1):
            out.append(frames[i].depth)
            f = frames[i]
            if f.kind == "while" and not (f.condition & (f.assigned | ({assigned} if assigned else set()))):
                break
        return out


@dataclass
class PlanState:
    """One plan being written: its tokens and text, the line being written, what the completed
    lines define, and the current line's matcher."""

    ids: list[int]
    text: str
    line: str
    context: PlanContext
    matcher: object
    done: bool = False


class PlanDecoder:
    """Masks for writing a plan with a loom tokenizer: `start()`, then `mask(state)` (a boolean
    array over the vocabulary) and `advance(state, token)` until `state.done` (the end-of-text
    token was chosen, which the mask allows only after `answer(...)`)."""

    def __init__(self, tokenizer, inputs: tuple[str, ...] = ("question",), max_lines: int = 24, max_depth: int = 3,
                 index: str | None = None):
        import llguidance

        self._llg = llguidance
        self.tok = tokenizer
        self.eos = tokenizer.eos_id
        self.vocab = tokenizer.vocab_size
        self.ll_tokenizer = llguidance.LLTokenizer(tokenizer.to_json(), eos_token=self.eos)
        self.inputs, self.max_lines, self.max_depth, self.index = tuple(inputs), max_lines, max_depth, index

    def start(self) -> PlanState:
        context = PlanContext(self.inputs)
        return PlanState([], "", "", context, self._matcher(context, ""))

    def mask(self, state: PlanState) -> np.ndarray:
        import llguidance.numpy as lln

        bits = lln.allocate_token_bitmask(1, self.ll_tokenizer.vocab_size)
        lln.fill_next_token_bitmask(state.matcher, bits, 0)
        allowed = np.unpackbits(bits[0].view(np.uint8), bitorder="little")[: self.vocab].astype(bool)
        if not allowed.any():
            raise RuntimeError(f"plan grammar allows nothing after {state.text!r}: {state.matcher.get_error()}")
        return allowed

    def advance(self, state: PlanState, token: int) -> None:
        if token == self.eos:
            state.done = True
            return
        if not state.matcher.consume_token(token):
            raise ValueError(f"token {token} is not allowed after {state.text!r}: {state.matcher.get_error()}")
        state.ids.append(token)
        piece = self.tok.decode([token], skip_special_tokens=False)
        state.text += piece
        if "\n" not in piece:
            state.line += piece
            return
        # a line ended: the next one gets a grammar over the names it may now read
        end, partial = piece.split("\n", 1)
        state.context.add_line(state.line + end)
        if partial.strip(" "):
            raise RuntimeError(f"the tokenizer joins a line break to what follows ({piece!r}); constrained plans "
                               "need one that keeps whitespace apart, as loom's byte-level BPE does")
        state.line = partial
        state.matcher = self._matcher(state.context, partial)

    def plan(self, state: PlanState) -> str:
        return state.text.rstrip("\n") + "\n"

    # -- the grammar -----------------------------------------------------------------------------

    def _matcher(self, context: PlanContext, partial: str):
        compiled = self._llg.LLMatcher.grammar_from_lark(self.grammar(context, partial))
        return self._llg.LLMatcher(self.ll_tokenizer, compiled)

    def grammar(self, context: PlanContext, partial: str = "") -> str:
        """The Lark grammar of the next line, whose first `partial` spaces are written already,
        through its line break and the indentation of the line after."""
        # no_forcing: where the grammar leaves one way on (": " then the indentation), llguidance
        # would otherwise allow only the tokens it takes for that text's own tokenization, which
        # differs from the one the model learnt when a word follows (the "\n   " of "\n    total")
        head = '%llguidance {"no_forcing": true}\n'
        if context.answered:
            return head + 'start: ""\n'
        finishing = context.lines + 1 + sum(not f.closable for f in context.frames) >= self.max_lines
        open_blocks = context.lines + len(context.frames) + 3 < self.max_lines
        rules, alternatives = [], []
        for depth in context.depths():
            if len(INDENT) * depth < len(partial):
                continue
            line = self._line(depth, context, finishing, open_blocks, " " * (len(INDENT) * depth - len(partial)))
            if line:
                alternatives.append(f"line_{depth}")
                rules += line
        if not alternatives:  # cannot happen for a context built by add_line; say so rather than mask everything
            raise RuntimeError(f"no line fits after {context.lines} lines of the plan")
        rules.insert(0, head + "start: " + " | ".join(alternatives))
        rules.append(r'TEXT: /([ !#-\[\]-z|~]|\\n|\\"){0,60}/')  # printable ASCII; no quote, backslash or brace
        rules.append(r'WORDS: /([ !#-\[\]-z|~]|\\n|\\"){0,20}/')
        rules.append(r"NUMBER: /-?(0|[1-9][0-9]{0,5})/")
        rules.append(r"TAIL: /[^ \n][^\n]*/")  # never reached: the grammar is rebuilt at each line break
        return "\n".join(rules) + "\n"

    def _line(self, d: int, context: PlanContext, finishing: bool, open_blocks: bool, indent: str) -> list[str]:
        loads, stores = context.loadable(d), context.storable(d)
        ind = _literal(indent) + " " if indent else ""
        rules = [f"name_{d}: " + " | ".join(_literal(n) for n in loads)]
        rules += _expressions(d)
        rules.append(f'template_{d}: "\\"" TEXT ("{{" name_{d} "}}" TEXT)~0..4 "\\""')
        call = [f'"ask(" template_{d} ")"', f'"calc(" template_{d} ")"']
        if self.index:
            call.append(f'"search(" template_{d} ", index=" {_literal(json.dumps(self.index))} ")"')
        rules.append(f"rhs_{d}: e0_{d} | " + " | ".join(call))
        statements = []

        def after(assigned: str | None) -> str:
            depths = context.next_depths(d, assigned)
            unfinished = [f for f in context.frames_at(d) if f.kind == "while"
                          and not f.condition & (f.assigned | ({assigned} if assigned else set()))]
            if context.lines + 2 + len(unfinished) >= self.max_lines:  # the next line finishes: keep to
                # the depths where it can (the answer's, or inside the while loop still to end)
                depths = [s for s in depths if s == 0 or any(f.depth <= s for f in unfinished)]
            return self._newline(depths)

        frames = context.frames_at(d)
        top = frames[-1]
        pending = [f for f in frames if not f.closable]
        if finishing:  # near max_lines: only what lets the open loops end, then the answer
            if pending:
                for n in sorted(pending[-1].condition & set(stores)):
                    statements.append(f'{_literal(n)} " = " e0_{d} {after(n)}')
            elif top.statements == 0:  # a block needs one statement
                statements.append(f'NEW_{d} " = " e0_{d} {after(None)}')
                rules.append(self._new_names(d, loads, frames, context))
        else:
            groups: dict[str, list[str]] = {}
            for n in stores:
                groups.setdefault(after(n), []).append(n)
            for i, (newline, names) in enumerate(sorted(groups.items())):
                rules.append(f"store_{d}_{i}: " + " | ".join(_literal(n) for n in names))
                statements.append(f'store_{d}_{i} (" = " rhs_{d} | " += " e0_{d}) {newline}')
            rules.append(self._new_names(d, loads, frames, context))
            statements.append(f'NEW_{d} " = " (rhs_{d} | "[]") {after(None)}')
            for n in context.appendable(d):
                statements.append(f'{_literal(n + ".append(")} e0_{d} ")" {after(None)}')
            if open_blocks and d < self.max_depth and not finishing:
                inner = self._newline([d + 1])
                statements.append(f'"for " NEW_{d} " in " e0_{d} ":" {inner}')
                statements.append(f'"if " (e0_{d} | "ask(" template_{d} ")") ":" {inner}')
                if stores:
                    rules.append(f"cond_{d}: " + " | ".join(_literal(n) for n in stores))
                    # no call in a while condition: it is checked before each iteration, in-process
                    statements.append(f'"while " cond_{d} " " OP_{d} " " e2_{d} ":" {inner}')
                closing = [f for f in context.frames if f.depth > d]
                if closing and closing[0].kind == "if" and closing[0].depth == d + 1:  # an if just ended
                    statements.append(f'("elif " e0_{d} | "else") ":" {inner}')
        if d == 0 and top.statements and not pending:
            statements.append(f'"answer(" e0_{d} ")" "\\n"?')
        if not statements:  # near the end, the lines that do not lead there
            return []
        rules.append(f"line_{d}: {ind}(" + " | ".join(statements) + ")")
        return rules

    def _new_names(self, d: int, loads: list[str], frames: list[_Frame], context: PlanContext) -> str:
        """A name not yet in use: not a keyword, a function of the plan language or a list."""
        excluded = sorted(RESERVED | set(loads) | {n for f in frames for n in f.lists} | context.collected)
        return f"NEW_{d}: /[a-z][a-z0-9_]{{0,11}}/ & ~/({'|'.join(map(re.escape, excluded))})/"

    def _newline(self, depths: list[int]) -> str:
        """The line break and the next line's indentation, then a stand-in for its first word:
        llguidance allows only the tokens loom's tokenizer would choose for the text, and that
        choice ("\\n   " then " word") depends on what follows the spaces."""
        options = " | ".join((_literal(INDENT * k) + " " if k else "") + "TAIL" for k in sorted(set(depths)))
        return f'"\\n" ({options})'


def _expressions(d: int) -> list[str]:
    """Expressions three levels deep over the names of depth `d` (bounded, so a plan's line ends)."""
    functions = " | ".join(_literal(f) for f in sorted(FUNCTIONS))
    methods = " | ".join(_literal(m) for m in sorted(METHODS))
    rules = [f"OP_{d}: " + " | ".join(_literal(o) for o in OPERATORS)]
    for level in range(3):
        inner = f"e{level + 1}_{d}" if level < 2 else f"atom_{d}"
        unit = [f"atom_{d}"]
        if level < 2:  # the model's and the calculator's answers may sit inside an expression
            unit += [f'"ask(" template_{d} ")"', f'"calc(" template_{d} ")"']
            unit += [f'({functions}) "(" {inner} (", " {inner})? ")" ("[" {inner} "]")?', f'"(" {inner} ")"',
                     f'name_{d} "[" {inner} "]"', f'name_{d} "." ({methods}) "(" {inner}? ")"']
        rules.append(f"u{level}_{d}: " + " | ".join(unit))
        most = 3 if level == 0 else 1  # operators in a row: `3 * n + 1`, `n % 2 == 0`
        rules.append(f'e{level}_{d}: u{level}_{d} (" " OP_{d} " " u{level}_{d})~0..{most}')
    rules.append(f'atom_{d}: name_{d} | NUMBER | "\\"" WORDS "\\"" | "True" | "False"')
    return rules


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def sample_plan(decoder: PlanDecoder, logits_fn, rng: np.random.Generator, max_tokens: int = 600,
                temperature: float = 1.0) -> tuple[str, bool]:
    """Writes one plan: `logits_fn(ids)` gives the next token's logits (numpy, vocabulary size);
    returns the plan's text and whether it ended (the end-of-text token) within `max_tokens`."""
    state = decoder.start()
    for _ in range(max_tokens):
        logits = np.asarray(logits_fn(state.ids), dtype=np.float64)
        allowed = decoder.mask(state)
        logits = np.where(allowed, logits / max(temperature, 1e-6), -np.inf)
        if temperature <= 0:
            token = int(np.argmax(logits))
        else:
            p = np.exp(logits - logits.max())
            token = int(rng.choice(len(p), p=p / p.sum()))
        decoder.advance(state, token)
        if state.done:
            return decoder.plan(state), True
    return decoder.plan(state), False
