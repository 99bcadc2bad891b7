import json

import pytest
import torch

from conftest import rewind_to_step_3, tiny_config
from loom.checkpoint import find_resumable, load_trained_model, verify_checkpoint
from loom.errors import CheckpointError, ConfigError
from loom.train import train


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_bit_for_bit(tiny_root):
    """N steps, then a fresh process state resuming from the step-N checkpoint for M more
    steps, equals N + M uninterrupted steps: same losses, same weights, byte for byte."""
    whole = tiny_config(tiny_root, "whole")
    summary = train(whole)
    assert summary["steps"] == 6
    whole_dir = whole.run_dir

    # The same run, "killed" after its step-3 checkpoint: drop what came after, then resume.
    cut = tiny_config(tiny_root, "cut")
    train(cut)
    rewind_to_step_3(cut.run_dir)
    resumed = train(cut, resume="always")
    assert resumed["steps"] == 6

    a = (whole_dir / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    b = (cut.run_dir / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    assert a == b
    opt_a = torch.load(whole_dir / "checkpoints" / "step_000006" / "optim.pt")["state"]
    opt_b = torch.load(cut.run_dir / "checkpoints" / "step_000006" / "optim.pt")["state"]
    assert opt_a.keys() == opt_b.keys()
    for key in opt_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[key][name], opt_b[key][name])
    timed = ("elapsed_s", "tokens_per_s", "mfu", "device_hours", "cost", "energy_kwh")
    strip = [{k: v for k, v in r.items() if k not in timed} for r in read_metrics(whole_dir)]
    strip_cut = [{k: v for k, v in r.items() if k not in timed} for r in read_metrics(cut.run_dir)]
    assert strip == strip_cut  # no duplicated or missing records after the resume
    events = [json.loads(line)["event"] for line in (cut.run_dir / "events.jsonl").read_text().splitlines()]
    assert "resume" in events


def test_run_layout_and_report(tiny_root):
    cfg = tiny_config(tiny_root, "layout")
    summary = train(cfg)
    run = cfg.run_dir
    for name in ("config.toml", "tokenizer.json", "metrics.jsonl", "events.jsonl", "report.md",
                 "checkpoints/latest"):
        assert (run / name).is_file(), name
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_000006"
    ckpt = run / "checkpoints" / latest
    assert sorted(p.name for p in ckpt.iterdir()) == ["MANIFEST", "model.safetensors", "optim.pt", "rng.pt",
                                                       "state.json", "timing.json"]
    assert verify_checkpoint(ckpt) is None
    records = read_metrics(run)
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == list(range(1, 7))
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"} <= set(train_records[0])
    assert [r["step"] for r in records if "val_loss" in r] == [0, 3, 6]
    assert f"{summary['final_val_loss']:.4f}" in (run / "report.md").read_text()

    model, tok, loaded_cfg = load_trained_model(run)
    assert loaded_cfg.model == cfg.model
    assert tok.vocab_size == 512


def test_corrupt_checkpoint_is_skipped_for_an_older_one(tiny_root):
    cfg = tiny_config(tiny_root, "corrupt")
    train(cfg)
    ckpts = cfg.run_dir / "checkpoints"
    with open(ckpts / "step_000006" / "model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    path, notes = find_resumable(ckpts)
    assert path.name == "step_000003"
    assert "step_000006" in notes[0] and "sha256" in notes[0]
    (ckpts / "step_000003" / "MANIFEST").unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_trained_model(cfg.run_dir)


def test_refuses_to_overwrite_existing_run(tiny_root):
    cfg = tiny_config(tiny_root, "twice")
    train(cfg)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg, resume="never")


def test_resume_with_different_model_is_a_clear_error(tiny_root):
    cfg = tiny_config(tiny_root, "changed")
    train(cfg)
    wider = tiny_config(tiny_root, "changed", extra=["model.d_model=128", "train.steps=8"])
    with pytest.raises(CheckpointError, match="does not fit this model"):
        train(wider)


def test_ctrl_c_saves_a_checkpoint_and_resume_matches_uninterrupted(tiny_root):
    """A real process interrupted with SIGINT mid-run stops after the current step with a
    checkpoint; running the command again finishes the run with the same weights as a run
    that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import tiny_overrides

    extra = ["train.steps=40", "train.ckpt_every=100", "train.eval_every=100"]
    args = [sys.executable, "-m", "loom", "train", *[a for o in tiny_overrides(tiny_root, "sigint", extra)
                                                     for a in ("--set", o)]]
    proc = subprocess.Popen(args, cwd=tiny_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = tiny_root / "runs" / "sigint" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count('"loss"') < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped after" in out
    stopped_at = int(out.split("stopped after")[1].split()[0])
    assert 3 <= stopped_at < 40
    ckpts = tiny_root / "runs" / "sigint" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == f"step_{stopped_at:06d}"
    events = (tiny_root / "runs" / "sigint" / "events.jsonl").read_text()
    assert '"interrupted"' in events

    finished = subprocess.run(args, cwd=tiny_root, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0 and "trained 40 steps" in finished.stdout

    whole = tiny_config(tiny_root, "sigint-whole", extra)
    train(whole)
    a = (ckpts / "step_000040" / "model.safetensors").read_bytes()
    b = (whole.run_dir / "checkpoints" / "step_000040" / "model.safetensors").read_bytes()
    assert a == b
