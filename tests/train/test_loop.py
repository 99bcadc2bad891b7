import json
import math

import pytest
import torch

from conftest import rewind_to_step_3, tiny_config
from loom.config import load_config
from loom.errors import CheckpointError, ConfigError
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


def test_wsd_schedule_holds_the_peak_then_decays_linearly_over_its_share():
    cfg = load_config(None, ["train.steps=110", "train.warmup_steps=10", "train.lr=1e-3", "train.min_lr_ratio=0.1",
                             "train.schedule=wsd", "train.decay_fraction=0.2"])
    lrs = [lr_at(s, cfg.train) for s in range(110)]
    assert lrs[9] == pytest.approx(1e-3) and all(lr == pytest.approx(1e-3) for lr in lrs[10:90])  # stable
    decay = lrs[90:]  # the last 20% of the 100 post-warmup steps
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] == pytest.approx(1e-4)
    steps = [a - b for a, b in zip(decay, decay[1:])]
    assert max(steps) == pytest.approx(min(steps))  # linear
    with pytest.raises(ConfigError, match="train.schedule 'linear' is not known"):
        load_config(None, ["train.schedule=linear"])


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    cfg = load_config(None, ["train.optimizer=muon"])
    model = GPT(tiny_config("/tmp", extra=["model.tie_embeddings=false"]).model)
    opt = make_optimizer(model, cfg.train, torch.device("cpu"))
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in in_muon) == (name.startswith("blocks.") and p.dim() == 2), name
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()
    with pytest.raises(ConfigError, match="Muon orthogonalises each whole matrix"):
        load_config(None, ["train.optimizer=muon", "parallel.dp_shard=2"])


def test_muon_trains_and_resumes_bit_for_bit(tiny_root):
    """Muon beside AdamW, checkpointed as one optimizer: a resumed run equals an unbroken one."""

    extra = ["train.optimizer=muon", "train.schedule=wsd"]
    whole = tiny_config(tiny_root, "muon-whole", extra)
    summary = train(whole)
    assert summary["final_val_loss"] < summary["first_val_loss"]
    cut = tiny_config(tiny_root, "muon-cut", extra)
    train(cut)
    rewind_to_step_3(cut.run_dir)
    train(cut, resume="always")
    a = (whole.run_dir / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    assert a == (cut.run_dir / "checkpoints" / "step_000006" / "model.safetensors").read_bytes()
    adamw_again = tiny_config(tiny_root, "muon-cut", ["train.steps=8"])
    with pytest.raises(CheckpointError, match="train.optimizer"):
        train(adamw_again, resume="always")
