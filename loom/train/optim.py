"""The optimizer step's parts: AdamW (or Muon for the blocks' matrices beside it) with its
parameter groups, the learning-rate schedule, bf16 autocast, and what follows each step of an MoE
model (the balancing-bias update and the routing metrics).

Muon (Jordan et al. 2024, the modded-nanogpt speedrun) is `torch.optim.Muon`: momentum whose
update is orthogonalised by Newton-Schulz iterations, for 2-D weights only. Its learning rate is
scaled as Moonshot's "Muon is Scalable for LLM Training" (Liu et al. 2025) does
(`adjust_lr_fn="match_rms_adamw"`), so one `train.lr` and one schedule serve both optimizers.

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
    warmup, then down to `lr * min_lr_ratio` at the last step: a cosine over all the remaining
    steps (`schedule = "cosine"`), or the peak held until the last `decay_fraction` of the steps
    and a linear decay over those (`"wsd"`, warmup-stable-decay: Hu et al. 2024, MiniCPM; Hägele
    et al. 2024 found a 20% cool-down matches cosine)."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "wsd":
        decay_steps = max(1, round(t.decay_fraction * (t.steps - t.warmup_steps)))
        into_decay = step - (t.steps - decay_steps)
        if into_decay < 0:
            return t.lr
        return t.lr * (1 - (1 - t.min_lr_ratio) * min(1.0, (into_decay + 1) / decay_steps))
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, t, device: torch.device):
    """AdamW with weight decay on matrices and embeddings only (not on norm gains); with
    `t.optimizer = "muon"`, the blocks' 2-D weights go to Muon instead and the embedding, head,
    gains and any 3-D expert weights stay with AdamW."""
    named = list(model.named_parameters())
    muon = [p for name, p in named if t.optimizer == "muon" and name.startswith("blocks.") and p.dim() == 2]
    taken = {id(p) for p in muon}
    decay = [p for _, p in named if p.dim() >= 2 and id(p) not in taken]
    no_decay = [p for _, p in named if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")
    if not muon:
        return adamw
    return MuonAndAdamW(torch.optim.Muon(muon, lr=t.lr, weight_decay=t.weight_decay,
                                         adjust_lr_fn="match_rms_adamw"), adamw)


class MuonAndAdamW:
    """Two optimizers stepped as one: the trainer sets each group's learning rate, steps, zeroes
    and checkpoints this as it would AdamW alone. Its state is `{"optimizers": [muon, adamw]}`."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.optimizers = (muon, adamw)

    @property
    def param_groups(self) -> list[dict]:
        return [group for o in self.optimizers for group in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if "optimizers" not in state or len(state["optimizers"]) != len(self.optimizers):
            raise ValueError("the saved optimizer is AdamW alone, not Muon with AdamW (train.optimizer changed)")
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)


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
