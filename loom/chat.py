"""Conversations and the chat template: what instruction tuning trains on and what serving renders.

A conversation is the shape OpenAI's API and TRL use, one per JSONL line:

    {"messages": [{"role": "system" | "user" | "assistant" | "tool", "content": "..."}, ...]}

An assistant message may instead (or as well) carry OpenAI's `tool_calls`, each
`{"function": {"name": ..., "arguments": "<JSON text>"}}`; a `tool` message is a call's output.
`read_conversations` checks every line and names the file, the line and the field that is wrong.

The template renders a conversation to token ids over the tokenizer's reserved chat tokens:

    <|bos|>
    <|system|> text <|end_of_turn|>
    <|user|> text <|end_of_turn|>
    <|assistant|> text [<|tool_call|> {"name": ..., "arguments": ...}]* <|end_of_turn|>
    <|tool_result|> text <|end_of_turn|>

with a mask that is true exactly on what the assistant wrote: its text, its tool calls and the
<|end_of_turn|> that ends its turn (so the model learns to stop), never on the role tokens, the
system or user text, or tool output. Text is encoded by itself, so a user who types
"<|assistant|>" gets ordinary tokens, never the control token. `ROLE_TOKENS` and `END_OF_TURN`
are the template, written once: `render` uses them, and `jinja_template` writes the same
template for transformers' `apply_chat_template`.

`pack` lays rendered conversations into training sequences of a fixed length, best fit, each
whole and starting at its own <|bos|>. (Attention is causal over the whole sequence: a
conversation sees the ones packed before it in the same sequence, as in TRL's packing; the
<|bos|> tells the model a new one starts.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loom.errors import DataError
from loom.tokenizer import BOS, Tokenizer

ROLES = ("system", "user", "assistant", "tool")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "tool": "<|tool_result|>"}
TOOL_CALL = "<|tool_call|>"
END_OF_TURN = "<|end_of_turn|>"


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def text(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


@dataclass
class Message:
    role: str
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Rendered:
    ids: list[int]
    mask: list[bool]  # true where the assistant wrote the token: what the loss is taken on


# ---------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------


def parse_messages(raw, where: str = "conversation") -> list[Message]:
    """The messages of one conversation (`{"messages": [...]}` or the list itself), checked;
    `DataError` names `where` and the field that is wrong."""
    if isinstance(raw, dict):
        if "messages" not in raw:
            raise DataError(f'{where}: no "messages" field; each line must be {{"messages": [...]}}')
        raw = raw["messages"]
    if not isinstance(raw, list) or not raw:
        raise DataError(f'{where}: "messages" must be a non-empty list of {{"role", "content"}} objects')
    messages = []
    for i, m in enumerate(raw):
        at = f"{where}: messages[{i}]"
        if not isinstance(m, dict):
            raise DataError(f'{at} must be an object with "role" and "content"')
        role = m.get("role")
        if role not in ROLES:
            raise DataError(f"{at}.role {role!r} is not one of {', '.join(ROLES)}")
        content = m.get("content")
        calls = _tool_calls(m.get("tool_calls"), at) if role == "assistant" else []
        if role != "assistant" and "tool_calls" in m:
            raise DataError(f"{at}: only assistant messages carry tool_calls")
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise DataError(f"{at}.content must be a string (got {type(content).__name__})")
        messages.append(Message(role, content, calls))
    return messages


def _tool_calls(raw, at: str) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DataError(f"{at}.tool_calls must be a list")
    calls = []
    for j, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments", "") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name or not isinstance(arguments, str):
            raise DataError(f'{at}.tool_calls[{j}] must be '
                            '{"function": {"name": "...", "arguments": "<JSON text>"}}')
        calls.append(ToolCall(name, arguments))
    return calls


def jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[str, object]]:
    """(`file:line`, the parsed value) of every non-blank line of a JSONL file; `DataError` names
    the file, or the line that is not JSON."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None


def read_conversations(path: str | os.PathLike, require_assistant: bool = False) -> Iterator[list[Message]]:
    """Every conversation of a JSONL file, in order; blank lines are skipped. With
    `require_assistant`, a conversation with no assistant message (nothing to learn) is an error."""
    for where, raw in jsonl_lines(path):
        messages = parse_messages(raw, where)
        if require_assistant and not any(m.role == "assistant" for m in messages):
            raise DataError(f"{where}: no assistant message, so nothing to train on")
        yield messages


# ---------------------------------------------------------------------------------------------
# The template
# ---------------------------------------------------------------------------------------------


def render(tok: Tokenizer, messages: list[Message], add_generation_prompt: bool = False) -> Rendered:
    """Token ids of a conversation and the mask of the assistant's tokens. With
    `add_generation_prompt`, an open assistant turn follows, for the model to write."""
    ids, mask = [tok.bos_id], [False]

    def add(piece: list[int], trained: bool) -> None:
        ids.extend(piece)
        mask.extend([trained] * len(piece))

    end = tok.token_id(END_OF_TURN)
    for m in messages:
        trained = m.role == "assistant"
        add([tok.token_id(ROLE_TOKENS[m.role])], False)
        add(tok.encode(m.content), trained)
        for call in m.tool_calls:
            add([tok.token_id(TOOL_CALL)], True)
            add(tok.encode(call.text()), True)
        add([end], trained)
    if add_generation_prompt:
        add([tok.token_id(ROLE_TOKENS["assistant"])], False)
    return Rendered(ids, mask)


def jinja_template(with_bos: bool = True) -> str:
    """The same template for transformers (`tokenizer.chat_template`), built from `ROLE_TOKENS`.
    `with_bos` False leaves out the leading <|bos|>, for runtimes that add it themselves."""
    role = " ".join(f"{{%- {'if' if i == 0 else 'elif'} message['role'] == '{name}' %}}{{{{ '{token}' }}}}"
                    for i, (name, token) in enumerate(ROLE_TOKENS.items()))
    calls = ("{%- for call in message.get('tool_calls') or [] %}"
             f"{{{{ '{TOOL_CALL}' + {{'name': call['function']['name'], "
             "'arguments': call['function']['arguments']} | tojson }}"
             "{%- endfor %}")
    return ((f"{{{{ '{BOS}' }}}}" if with_bos else "")
            + "{%- for message in messages %}"
            f"{role}{{%- endif %}}"
            "{{ message['content'] or '' }}"
            f"{calls}"
            f"{{{{ '{END_OF_TURN}' }}}}"
            "{%- endfor %}"
            f"{{%- if add_generation_prompt %}}{{{{ '{ROLE_TOKENS['assistant']}' }}}}{{%- endif %}}")


# ---------------------------------------------------------------------------------------------
# Packing for training
# ---------------------------------------------------------------------------------------------


@dataclass
class Packed:
    sequences: list[Rendered]  # each exactly `length` tokens: whole conversations, then padding
    conversations: list[list[int]]  # which input conversations each sequence holds, in order
    dropped: list[int]  # conversations longer than a sequence: never cut, left out and counted
    content_tokens: int  # tokens of conversation (the rest is padding)

    @property
    def fill(self) -> float:
        """The share of the tokens that are conversation, not padding."""
        return self.content_tokens / max(1, sum(len(s.ids) for s in self.sequences))


def pack(rendered: list[Rendered], length: int, pad_id: int) -> Packed:
    """Best-fit decreasing: the longest conversation first, each into the sequence whose free room
    it fills most tightly (a new sequence when none has room). Every conversation starts at its
    own <|bos|> and is never cut in two; one longer than `length` is left out (`dropped`). The
    rest of each sequence is `pad_id`, masked out. Deterministic: ties go to the earlier input."""
    import bisect

    order = sorted(range(len(rendered)), key=lambda i: (-len(rendered[i].ids), i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted: the tightest fit is found by bisect
    dropped = []
    for i in order:
        size = len(rendered[i].ids)
        if size > length:
            dropped.append(i)
            continue
        at = bisect.bisect_left(free, (size, -1))
        if at == len(free):
            bins.append([i])
            room, index = length - size, len(bins) - 1
        else:
            room, index = free.pop(at)
            bins[index].append(i)
            room -= size
        bisect.insort(free, (room, index))
    sequences, content = [], 0
    for members in bins:
        ids = [t for i in members for t in rendered[i].ids]
        mask = [m for i in members for m in rendered[i].mask]
        content += len(ids)
        sequences.append(Rendered(ids + [pad_id] * (length - len(ids)), mask + [False] * (length - len(ids))))
    return Packed(sequences, bins, sorted(dropped), content)
