"""`loom chat --run R`: a conversation with a trained model in the terminal.

Each turn renders the whole history with the chat template (`loom.chat.render`, a generation
prompt at the end) and streams the assistant's reply until it writes <|end_of_turn|> (or
<|eos|>, or `max_new_tokens`). Commands: `/reset` forgets the history, `/system TEXT` sets the
system message (kept across /reset), `/quit` or end of input leaves. Ctrl-C during an answer
stops it and keeps what was written as the assistant's turn; Ctrl-C at the prompt leaves.

When the history no longer fits the model's context beside `max_new_tokens`, the oldest turns
are dropped (the system message stays) and the session says so.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator

import torch

from loom.chat import END_OF_TURN, Message, render
from loom.checkpoint import load_trained_model
from loom.config import SampleConfig
from loom.model.generate import generate
from loom.tokenizer import decode_stream


class ChatSession:
    """A conversation's history and the model that answers in it."""

    def __init__(self, model, tok, settings: SampleConfig, seed: int = 0, say: Callable[[str], None] = print):
        self.model, self.tok, self.settings, self.say = model, tok, settings, say
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.system: str | None = None
        self.turns: list[Message] = []

    def messages(self) -> list[Message]:
        return ([Message("system", self.system)] if self.system else []) + self.turns

    def prompt_ids(self) -> list[int]:
        """The rendered history with an open assistant turn, its oldest turns dropped to fit."""
        room = self.model.cfg.max_seq_len - self.settings.max_new_tokens
        ids = render(self.tok, self.messages(), add_generation_prompt=True).ids
        while len(ids) > room and len(self.turns) > 1:
            self.turns = self.turns[2:] if self.turns[0].role == "user" and len(self.turns) > 2 else self.turns[1:]
            self.say("[loom] the conversation outgrew the model's context: its oldest turn was dropped")
            ids = render(self.tok, self.messages(), add_generation_prompt=True).ids
        return ids

    def reply(self, text: str) -> Iterator[str]:
        """Streams the answer to `text`; the answer (all of it, or what was written before the
        stream was closed or interrupted) becomes the assistant's turn."""
        self.turns.append(Message("user", text))
        s, stops = self.settings, [self.tok.token_id(END_OF_TURN), self.tok.eos_id]
        tokens = generate(self.model, self.prompt_ids(), s.max_new_tokens, s.temperature, s.top_k, s.top_p,
                          stop_ids=stops, generator=self.generator)
        written = []
        try:
            for piece in decode_stream(self.tok, (t for t in tokens if t not in stops)):
                written.append(piece)
                yield piece
        finally:
            self.turns.append(Message("assistant", "".join(written)))

    def reset(self) -> None:
        self.turns = []


def chat_terminal(run_dir, settings: SampleConfig, seed: int = 0, device: str = "cpu", read=input,
                  write=sys.stdout.write) -> None:
    """The terminal loop of `loom chat`."""
    from loom.util import torch_device

    settings.check()
    # Ctrl-C must reach an interactive chat even when it was started with SIGINT ignored (a
    # background job of a non-interactive shell inherits that): Python then installs no handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    model, tok, _ = load_trained_model(run_dir, torch_device(device))

    def say(line: str) -> None:
        write(line + "\n")
        sys.stdout.flush()

    session = ChatSession(model, tok, settings, seed, say)
    say(f"[loom] chatting with {run_dir}: /reset forgets the history, /system TEXT sets the system message, "
        "/quit leaves; Ctrl-C stops an answer")
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            say("")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            session.reset()
            say("[loom] history cleared")
            continue
        if text.startswith("/system"):
            session.system = text[len("/system"):].strip() or None
            say(f"[loom] system message {'set' if session.system else 'cleared'}")
            continue
        if text.startswith("/"):
            say(f"[loom] unknown command {text.split()[0]}: use /reset, /system TEXT or /quit")
            continue
        write("model> ")
        stream = session.reply(text)
        try:
            for piece in stream:
                write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()  # the partial answer is kept as the assistant's turn
            write(" [stopped]")
        say("")
