"""The optimizer step's parts: AdamW with its parameter groups, the learning-rate schedule,
bf16 autocast, and what follows each step of an MoE model (the balancing-bias update and the
routing metrics).

Each function takes the config section it needs (`t` is `[train]`), never the whole config.
"""

from __future__ import annotations

import contextlib
import math

import torch

from loom.model import GPT
from loom.model.moe import update_balance_bias
from loom.train import distributed
from loom.train.cost import uses_bf16


def lr_at(step: int, t) -> float:
    """Learning rate for optimizer step `step` (0-based) under `t` (the [train] section): linear
    warmup, then cosine decay to `lr * min_lr_ratio`."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, t, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on norm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda"
    )


def autocast_context(device: torch.device, dtype: str):
    if uses_bf16(device, dtype):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def moe_step(model: GPT, bias_update_rate: float, stepped: bool, report: bool) -> dict:
    """After an optimizer step of an MoE model: the loads of the step summed over micro-batches and
    ranks, the auxiliary-loss-free bias update when configured, and (when `report`) the routing
    metrics; `{}` for a dense model. Every rank calls it at every step (it may all-reduce)."""
    layers = model.moe_layers()
    if not layers:
        return {}
    rate = bias_update_rate
    record = {}
    if (rate > 0 and stepped) or report:
        counts = distributed.all_reduce_sum(torch.stack([layer.load_counts for layer in layers]))  # (L, E)
        if rate > 0 and stepped:
            for layer, layer_counts in zip(layers, counts):
                update_balance_bias(layer, layer_counts, rate)
        if report:
            load = counts / counts.sum(-1, keepdim=True).clamp_min(1)
            record["moe"] = [
                {"load": [round(x, 4) for x in row.tolist()], "imbalance": round(float(row.max() / row.mean()), 3),
                 "entropy": round(float(layer.stats["entropy"]), 4), "dropped": round(float(layer.stats["dropped"]), 5),
                 "aux_loss": round(float(layer.stats["aux_loss"]), 5)}
                for layer, row in zip(layers, load)
            ]
    for layer in layers:
        layer.load_counts.zero_()
    return record
