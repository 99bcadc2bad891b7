"""A sparse MoE model through the real trainer: routing metrics, exact resume with the balancing
bias, and two DDP ranks following one process."""

import json
import subprocess
import sys

from conftest import rewind_to_step_3, tiny_config, tiny_overrides
from loom.train import train

MOE = ["model.moe.n_experts=4", "model.moe.top_k=2", "model.moe.bias_update_rate=0.01",
       "model.moe.aux_loss_coef=0.01", "model.moe.z_loss_coef=0.001"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_moe_training_logs_routing_and_resumes_bit_for_bit(tiny_root):
    whole = tiny_config(tiny_root, "moe-whole", MOE)
    summary = train(whole)
    assert summary["parameters"] > 0
    steps = [r for r in records(whole.run_dir) if "loss" in r]
    for r in steps:
        assert len(r["moe"]) == 2  # one record per MoE layer
        for layer in r["moe"]:
            assert len(layer["load"]) == 4 and abs(sum(layer["load"]) - 1) < 1e-3
            assert layer["imbalance"] >= 1 and 0 < layer["entropy"] <= 1.3863 and layer["dropped"] == 0
            assert layer["aux_loss"] > 0
    cut = tiny_config(tiny_root, "moe-cut", MOE)
    train(cut)
    rewind_to_step_3(cut.run_dir)
    train(cut, resume="always")
    a = (whole.run_dir / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    b = (cut.run_dir / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    assert a == b


def test_two_ranks_train_an_moe_model_like_one_process(tiny_root):
    common = [*MOE, "train.steps=10", "train.eval_every=100", "train.ckpt_every=100", "train.batch_tokens=256"]
    sets = lambda name: [a for o in tiny_overrides(tiny_root, name, common) for a in ("--set", o)]  # noqa: E731
    single = subprocess.run([sys.executable, "-m", "loom", "train", *sets("moe-single")], cwd=tiny_root,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "loom", "train", *sets("moe-ddp")], cwd=tiny_root, capture_output=True, text=True,
                         timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = [r["loss"] for r in records(tiny_root / "runs" / "moe-single") if "loss" in r]
    b = [r["loss"] for r in records(tiny_root / "runs" / "moe-ddp") if "loss" in r]
    assert len(a) == len(b) == 10
    assert max(abs(x - y) / x for x, y in zip(a, b)) < 1e-3
