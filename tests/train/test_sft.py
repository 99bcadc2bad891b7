"""Supervised fine-tuning (`loom sft`, loom.train.sft): the loss on assistant tokens only, a run
that starts from the base run's weights, exact resume, and bad data refused by file and line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import rewind_to_step_3
from loom.checkpoint import load_trained_model
from loom.train import distributed
from loom.train.sft import IGNORED, ConversationData, sft, sft_config
from loom.train.trainer import StopRequest, Trainer


def conversations(path, n=80):
    with open(path, "w") as f:
        for i in range(n):
            a, b = i % 9 + 1, i // 9 + 1
            messages = [{"role": "user", "content": f"{a}+{b}?"}, {"role": "assistant", "content": str(a + b)}]
            if i % 3 == 0:
                messages.insert(0, {"role": "system", "content": "Answer with a number."})
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


SHORT = ["train.steps=6", "train.ckpt_every=3", "train.eval_every=3", "train.warmup_steps=1", "train.micro_batch=2"]


def test_targets_are_ignored_except_where_the_assistant_wrote(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    cfg, _ = sft_config(run_dir, SHORT)
    data = ConversationData([conversations(tmp_path / "c.jsonl")], run_dir / "tokenizer.json", cfg.train, 0)
    ids, trained = data.splits["train"]
    x, y = data.train_batches(0, 1)._batch(np.array([0, 1]))
    assert x.shape == y.shape == (2, cfg.train.seq_len)
    mask = torch.from_numpy(trained[:2, 1:])
    assert (y[~mask] == IGNORED).all() and torch.equal(y[mask], torch.from_numpy(ids[:2, 1:])[mask])
    # what is trained is what the assistant wrote: the sums and the end of each turn, nothing else
    from loom.tokenizer import Tokenizer

    tok = Tokenizer.from_file(run_dir / "tokenizer.json")
    answers = tok.decode(y[mask].tolist(), skip_special_tokens=False).replace("<|end_of_turn|>", " ").split()
    assert answers and all(a.isdigit() for a in answers)
    x, y = data.train_batches(0, 1).next_batch()
    # the loss the model computes is the mean over assistant tokens alone
    model, _, _ = load_trained_model(run_dir)
    with torch.no_grad():
        loss = model(x, y)
        logits = model(x)
    keep = y != IGNORED
    assert keep.any() and not keep.all()
    manual = F.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(loss, manual, atol=1e-6)
    assert data.splits["train_dropped"] == 0 and 0 < data.splits["train_fill"] <= 1


def test_an_sft_run_starts_from_the_base_weights(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    cfg, checkpoint = sft_config(run_dir, [*SHORT, 'run.name="sft-start"'])
    data = ConversationData([conversations(tmp_path / "c.jsonl")], run_dir / "tokenizer.json", cfg.train, 0)
    info = distributed.init_distributed("cpu")
    stop = StopRequest()
    try:
        trainer = Trainer(cfg, info, stop, "never", data=data, init_from=checkpoint)
    finally:
        stop.restore()
    base, _, _ = load_trained_model(run_dir)
    ours = trainer.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in base.state_dict().items())


def test_sft_resumes_bit_for_bit(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    data = [conversations(tmp_path / "c.jsonl")]
    whole = sft(run_dir, data, [*SHORT, 'run.name="sft-whole"'])
    assert whole["steps"] == 6
    runs = run_dir.parent
    sft(run_dir, data, [*SHORT, 'run.name="sft-cut"'])  # then "killed" after its step-3 checkpoint:
    rewind_to_step_3(runs / "sft-cut")
    resumed = sft(run_dir, data, [*SHORT, 'run.name="sft-cut"'], resume="always")
    assert resumed["steps"] == 6
    a = (runs / "sft-whole" / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    b = (runs / "sft-cut" / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    assert a == b
    start = [json.loads(line) for line in (runs / "sft-whole" / "events.jsonl").read_text().splitlines()][0]
    assert start["event"] == "start" and start["init_from"].endswith("step_000006")


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "user", "content": "hi"}]}', "bad.jsonl:2: no assistant message"),
    ("not json", "bad.jsonl:2: not JSON"),
])
def test_bad_conversations_stop_sft_with_the_file_and_line(tiny_run, tmp_path, line, message):
    run_dir, _ = tiny_run
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant",
                                                                              "content": "b"}]}) + f"\n{line}\n")
    out = subprocess.run([sys.executable, "-m", "loom", "sft", "--run", str(run_dir), "--data", str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_sft_needs_a_trained_base_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "loom", "sft", "--run", str(tmp_path), "--data", "x.jsonl"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "is not a loom run (no config.toml)" in out.stderr
