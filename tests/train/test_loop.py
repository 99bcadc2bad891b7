import json
import math

import pytest
import torch

from conftest import tiny_config
from loom.config import load_config
from loom.model import GPT
from loom.train import train
from loom.train.optim import lr_at, make_optimizer


def test_schedule_warms_up_then_decays_to_floor():
    cfg = load_config(None, ["train.steps=100", "train.warmup_steps=10", "train.lr=1e-3", "train.min_lr_ratio=0.1"])
    lrs = [lr_at(s, cfg.train) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # linear warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then never rises
    assert lrs[55] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, cfg.train) == pytest.approx(1e-4)


def test_weight_decay_only_on_matrices():
    cfg = load_config(None, ["train.weight_decay=0.1"])
    model = GPT(tiny_config("/tmp").model)
    opt = make_optimizer(model, cfg.train, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()


def test_bf16_autocast_path_trains_on_cpu(tiny_root):
    """The GPU's mixed-precision path (bf16 autocast) also runs, and learns, on the CPU."""
    cfg = tiny_config(tiny_root, "bf16", ["train.dtype=bfloat16", "train.steps=12", "train.eval_every=12",
                                          "train.ckpt_every=12"])
    summary = train(cfg)
    assert math.isfinite(summary["final_val_loss"])
    assert summary["final_val_loss"] < summary["first_val_loss"]


def test_gradient_accumulation_matches_one_big_batch(tiny_root):
    """Two micro-batches of 4 give the same step as one micro-batch of 8 (same windows)."""
    common = ["train.steps=3", "train.eval_every=100", "train.ckpt_every=100", "train.batch_tokens=256"]
    losses = {}
    for name, micro in (("accum", 4), ("big", 8)):
        cfg = tiny_config(tiny_root, name, [*common, f"train.micro_batch={micro}"])
        train(cfg)
        records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if "loss" in r]
    assert len(losses["accum"]) == 3
    assert losses["accum"] == pytest.approx(losses["big"], rel=1e-5)
