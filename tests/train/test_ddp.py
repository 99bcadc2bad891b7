"""Data parallelism with real processes: torchrun, two ranks, gloo on the CPU."""

import json
import os
import subprocess
import sys

from conftest import tiny_overrides


def run_loom(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def test_two_ranks_follow_one_process_with_same_global_batch(tiny_root):
    common = ["train.steps=20", "train.micro_batch=4", "train.eval_every=100", "train.ckpt_every=100",
              "train.batch_tokens=256"]  # 2 x 4 sequences x 32 tokens per step
    single = tiny_overrides(tiny_root, "single", common)  # one process, 2 micro-batches
    ddp = tiny_overrides(tiny_root, "ddp", common)  # two processes, 1 micro-batch each
    run_loom([sys.executable, "-m", "loom", "train", *sets(single)], tiny_root)
    out = run_loom([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "loom", "train", *sets(ddp)], tiny_root)
    assert "2 data-parallel rank(s) x 1 micro-batch(es)" in out.stderr

    a, b = losses(tiny_root / "runs" / "single"), losses(tiny_root / "runs" / "ddp")
    assert len(a) == len(b) == 20
    assert a[-1] < a[0]  # it learns
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    assert worst <= 1e-4, f"largest relative difference {worst:.2e}"
