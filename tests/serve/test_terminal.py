"""`loom chat`: the history rendered with the chat template, the commands, trimming to the
context, and Ctrl-C stopping an answer without leaving (a real `loom chat` process)."""

import os
import signal
import subprocess
import sys
import time

from loom.chat import Message, render
from loom.checkpoint import load_trained_model
from loom.config import SampleConfig
from loom.serve import ChatSession


def session(run_dir, max_new_tokens=8, said=None):
    model, tok, _ = load_trained_model(run_dir)
    settings = SampleConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    return ChatSession(model, tok, settings, say=(said.append if said is not None else print))


def test_a_reply_joins_the_history_and_the_prompt_is_the_rendered_history(tiny_run):
    chat = session(tiny_run[0])
    chat.system = "Be brief."
    answer = "".join(chat.reply("hello"))
    assert [(m.role, m.content) for m in chat.messages()] == [("system", "Be brief."), ("user", "hello"),
                                                               ("assistant", answer)]
    expected = render(chat.tok, [Message("system", "Be brief."), Message("user", "hello"),
                                 Message("assistant", answer)], add_generation_prompt=True).ids
    assert chat.prompt_ids() == expected
    chat.reset()
    assert [m.role for m in chat.messages()] == ["system"]


def test_the_oldest_turns_go_when_the_history_outgrows_the_context(tiny_run):
    said = []
    chat = session(tiny_run[0], max_new_tokens=24, said=said)  # the tiny model's context is 64 tokens
    for text in ("one two three four five", "six seven eight nine", "ten eleven twelve"):
        "".join(chat.reply(text))
    assert len(chat.prompt_ids()) <= chat.model.cfg.max_seq_len - 24
    assert chat.turns[-1].role == "assistant" and any("oldest turn was dropped" in line for line in said)


def loom_chat(run_dir, *flags, preexec_fn=None):
    return subprocess.Popen([sys.executable, "-m", "loom", "chat", "--run", str(run_dir), *flags],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=preexec_fn)


def sigint_ignored() -> None:
    """What a background job of a non-interactive shell (`cmd &` in a script) starts with."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_the_commands_of_the_terminal_chat(tiny_run):
    proc = loom_chat(tiny_run[0], "--max-new-tokens", "5", "--temperature", "0")
    out, err = proc.communicate("hi\n/system Answer in one word.\nhello\n/bogus\n/reset\nbye\n", timeout=300)
    assert proc.returncode == 0, err[-2000:]
    for line in ("[loom] system message set", "[loom] unknown command /bogus", "[loom] history cleared"):
        assert line in out
    assert out.count("model> ") == 3


def test_ctrl_c_stops_an_answer_and_the_chat_goes_on(tiny_run):
    # an answer that would run for long; started with SIGINT ignored, which loom chat must undo
    proc = loom_chat(tiny_run[0], "--max-new-tokens", "100000", preexec_fn=sigint_ignored)
    proc.stdin.write("tell me everything\n")
    proc.stdin.flush()
    seen = ""
    deadline = time.time() + 120
    while "model> " not in seen and time.time() < deadline:
        seen += os.read(proc.stdout.fileno(), 4096).decode(errors="replace")
    time.sleep(1.0)  # well inside the answer
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate("/quit\n", timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "[stopped]" in seen + out and "Traceback" not in err
