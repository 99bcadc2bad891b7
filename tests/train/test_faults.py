"""Faults on real processes: SIGKILL at random moments, a corrupt newest checkpoint, a hang
caught by the watchdog, and torchrun restarting a run that hung."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

from conftest import tiny_config, tiny_overrides
from loom.train import train
from loom.train.health import HANG_EXIT_CODE

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def loom_train(root, name, extra):
    sets = [a for o in tiny_overrides(root, name, extra) for a in ("--set", o)]
    args = [sys.executable, "-m", "loom", "train", *sets]
    return subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def logged_steps(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if '"loss"' in line]
    return max(steps, default=0)


def events(run_dir):
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def starts(run_dir) -> int:
    return sum(e["event"] in ("start", "resume") for e in events(run_dir))


def test_sigkill_at_five_random_moments_then_the_same_weights_as_an_uninterrupted_run(tiny_root):
    extra = ["train.steps=24", "train.ckpt_every=4", "train.eval_every=8", "faults.checkpoint_delay_s=0.15"]
    whole = tiny_config(tiny_root, "kill-whole", extra)
    train(whole)

    run_dir = tiny_root / "runs" / "kill"
    ckpts = run_dir / "checkpoints"
    rng = random.Random(2026)
    targets = sorted(rng.sample(range(2, 23), 4))
    kills = [("step", t) for t in targets]
    kills.insert(rng.randrange(5), ("checkpoint", None))  # one kill lands inside a checkpoint write
    for kind, target in kills:
        started_before = starts(run_dir)
        proc = loom_train(tiny_root, "kill", extra)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if kind == "checkpoint" and list(ckpts.glob(".tmp_step_*/model.safetensors")):
                break
            if kind == "step" and starts(run_dir) > started_before and logged_steps(run_dir) >= target:
                time.sleep(rng.uniform(0, 0.2))  # anywhere in the following step
                break
            time.sleep(0.002)
        assert proc.poll() is None, f"the run ended before the {kind} kill: {proc.communicate()[1][-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if kind == "checkpoint":
            assert list(ckpts.glob(".tmp_step_*")), "the kill was meant to land inside a checkpoint write"

    final = loom_train(tiny_root, "kill", extra)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    assert "trained 24 steps" in out
    for name in ("model.safetensors", "optim.pt"):  # digests: pytest's diff of two megabyte strings takes hours
        a = hashlib.sha256((whole.run_dir / "checkpoints" / "step_000024" / name).read_bytes()).hexdigest()
        assert a == hashlib.sha256((ckpts / "step_000024" / name).read_bytes()).hexdigest(), (name, events(run_dir))
    assert starts(run_dir) == 6 and [e for e in events(run_dir) if e["event"] == "resume"]
    assert not list(ckpts.glob(".tmp_*"))


def test_a_flipped_byte_in_the_newest_checkpoint_falls_back_to_the_previous_and_says_so(tiny_root):
    cfg = tiny_config(tiny_root, "flipped", ["train.steps=6"])
    train(cfg)
    path = cfg.run_dir / "checkpoints" / "step_000006" / "optim.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    longer = tiny_config(tiny_root, "flipped", ["train.steps=9"])
    summary = train(longer)
    assert summary["steps"] == 9
    skipped = [e for e in events(cfg.run_dir) if e["event"] == "checkpoint_skipped"]
    assert "step_000006" in skipped[0]["detail"] and "optim.pt" in skipped[0]["detail"]
    resumed = [e for e in events(cfg.run_dir) if e["event"] == "resume"]
    assert resumed[-1]["checkpoint"] == "step_000003"


def test_a_stall_trips_the_watchdog_which_records_every_stack_and_exits_for_a_restart(tiny_root):
    extra = ["train.steps=40", "faults.stall_at_step=5", "faults.stall_seconds=120", "health.watchdog_min_s=1.5",
             "health.watchdog_factor=5", "health.watchdog_first_s=60"]
    proc = loom_train(tiny_root, "stall", extra)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == HANG_EXIT_CODE, err[-2000:]
    assert "no step finished for" in err
    (hang,) = [e for e in events(tiny_root / "runs" / "stall") if e["event"] == "hang"]
    assert hang["rank"] == 0 and hang["waited_s"] >= 1.5
    stacks = "\n".join(hang["stacks"].values())
    assert "maybe_stall" in stacks and "loom-watchdog" in " ".join(hang["stacks"])


def test_torchrun_restarts_a_hung_two_rank_run_which_resumes_and_finishes(tiny_root):
    # Rank 1 stalls at step 6; rank 0 then waits in the all-reduce. Both watchdogs fire, torchrun
    # restarts the pair, and the run resumes from its step-4 checkpoint.
    extra = ["train.steps=12", "train.ckpt_every=4", "train.eval_every=100", "faults.stall_at_step=6",
             "faults.stall_rank=1", "faults.stall_seconds=120", "health.watchdog_min_s=2",
             "health.watchdog_factor=5", "health.watchdog_first_s=60"]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "--max-restarts", "1", "-m", "loom", "train",
            *[a for o in tiny_overrides(tiny_root, "restarted", extra) for a in ("--set", o)]]
    # Without this, a restarted gloo group can find stale keys in torchrun's shared store.
    env = {**ENV, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    result = subprocess.run(args, cwd=tiny_root, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = events(tiny_root / "runs" / "restarted")
    hangs = [e for e in log if e["event"] == "hang"]
    assert {e["rank"] for e in hangs} >= {1}
    (resume,) = [e for e in log if e["event"] == "resume"]
    assert resume["restart"] == 1 and resume["checkpoint"] == "step_000004"
    assert log[-1]["event"] == "end" and log[-1]["step"] == 12
