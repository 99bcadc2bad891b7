"""A sparse Mixture-of-Experts feed-forward block, in place of the dense SwiGLU.

Each token's router scores the `n_experts` experts; the token goes to its `top_k` best and its
output is their SwiGLU outputs weighted by the gates, plus the output of any shared experts every
token uses (DeepSeekMoE, Dai et al. 2024). Experts are narrow (`expert_hidden`; by default the
dense MLP's width over `top_k`, so a token's active compute matches the dense model's).

Router, in fp32 whatever the autocast:
  - `softmax` (Switch, Fedus et al. 2021; Mixtral): probabilities over experts; with top-k > 1
    the k gates are renormalized to sum to one;
  - `sigmoid` (DeepSeek-V3, 2024): an independent affinity per expert; the chosen gates are
    normalized to sum to one.

Balance and stability, each switchable by its coefficient:
  - `aux_loss_coef`: the load-balancing loss of Switch / GShard, E * sum_e f_e * P_e, with f_e the
    share of routed assignments that went to expert e and P_e the mean router probability of e;
    1.0 at a uniform load, its minimum;
  - `z_loss_coef`: the router z-loss of ST-MoE (Zoph et al. 2022), the mean squared logsumexp of
    the router logits, which keeps logits small;
  - `bias_update_rate`: auxiliary-loss-free balancing (DeepSeek-V3, section 2.1.2): a per-expert
    bias added to the scores for choosing experts only (not to the gates), nudged after every
    optimizer step by `rate * sign(mean load - load)` (`update_balance_bias`; the trainer sums
    the loads over micro-batches and ranks first, so every replica moves alike).

Capacity: dropless by default. With `capacity_factor` > 0 each expert takes at most
ceil(factor * tokens * top_k / experts) assignments; first choices are served before second
choices, earlier tokens before later ones (GShard's priority); the rest are dropped (their
share of the output is zero, the residual stream carries the token on) and counted.

Dispatch: the (token, expert) assignments are sorted by expert, so each expert's tokens are
contiguous, and all experts run at once: `torch._grouped_mm` on CUDA GPUs that have it (bf16,
compute capability 9.0 and up), otherwise a batched matrix product over the experts with their
token lists padded to the longest. No Python loop over experts.

What a forward pass saw (per-expert load, dropped assignments, router entropy, the auxiliary
losses) is kept on the module for the trainer's metrics (`stats`) and the loss (`aux_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from loom.errors import ConfigError
from loom.model.swiglu import SwiGLU


@dataclass
class MoEConfig:
    n_experts: int = 0  # 0: a dense model
    top_k: int = 2
    every: int = 1  # an MoE block in every n-th layer (the last of each n), dense SwiGLU elsewhere
    shared_experts: int = 0  # experts every token goes through, beside the routed ones
    expert_hidden: int = 0  # each expert's SwiGLU width (0: the dense MLP width / top_k, rounded to 64)
    router: str = "softmax"  # softmax | sigmoid
    capacity_factor: float = 0.0  # 0: dropless; else assignments per expert at most factor * N * k / E
    aux_loss_coef: float = 0.01  # Switch load-balancing loss (0: off)
    z_loss_coef: float = 0.001  # ST-MoE router z-loss (0: off)
    bias_update_rate: float = 0.0  # auxiliary-loss-free balancing step (0: off; DeepSeek-V3 used 0.001)

    @property
    def enabled(self) -> bool:
        return self.n_experts > 0

    def check(self, key: str = "model.moe") -> None:
        """Raises `ConfigError` naming the setting an MoE layer cannot be built with."""
        if self.n_experts < 0 or (self.enabled and not 1 <= self.top_k <= self.n_experts):
            raise ConfigError(f"{key}: top_k ({self.top_k}) must be between 1 and n_experts ({self.n_experts})")
        if self.every < 1 or self.shared_experts < 0 or self.expert_hidden < 0 or self.capacity_factor < 0:
            raise ConfigError(f"{key}: every must be 1 or more; shared_experts, expert_hidden and capacity_factor "
                              "zero or more")
        if self.router not in ("softmax", "sigmoid"):
            raise ConfigError(f"{key}.router {self.router!r} is not known; use softmax or sigmoid")
        if min(self.aux_loss_coef, self.z_loss_coef, self.bias_update_rate) < 0:
            raise ConfigError(f"{key}: aux_loss_coef, z_loss_coef and bias_update_rate must be zero or more")


def expert_width(moe: MoEConfig, dense_hidden: int) -> int:
    return moe.expert_hidden or 64 * max(1, math.ceil(dense_hidden / moe.top_k / 64))


def grouped_mm_available(x: torch.Tensor) -> bool:
    return (x.is_cuda and x.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")
            and torch.cuda.get_device_capability(x.device) >= (9, 0))


class MoE(nn.Module):
    def __init__(self, d_model: int, dense_hidden: int, moe: MoEConfig):
        super().__init__()
        self.cfg = moe
        self.n_experts, self.top_k = moe.n_experts, moe.top_k
        self.hidden = expert_width(moe, dense_hidden)
        self.router = nn.Linear(d_model, moe.n_experts, bias=False)
        # expert weights stacked: (E, d, 2h) for gate and up together, (E, h, d) for down
        self.gate_up_proj = nn.Parameter(torch.empty(moe.n_experts, d_model, 2 * self.hidden))
        self.down_proj = nn.Parameter(torch.empty(moe.n_experts, self.hidden, d_model))
        self.shared = None
        if moe.shared_experts:
            self.shared = SwiGLU(d_model, moe.shared_experts * self.hidden)
        # the balancing bias is state, not a parameter: saved with the weights, never trained
        self.register_buffer("balance_bias", torch.zeros(moe.n_experts))
        self.register_buffer("load_counts", torch.zeros(moe.n_experts), persistent=False)
        self.stats: dict[str, torch.Tensor] = {}
        self.aux_loss = torch.zeros(())

    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expert indices (N, k), gates (N, k) fp32, probabilities (N, E) fp32, logits (N, E) fp32)."""
        logits = F.linear(tokens.float(), self.router.weight.float())
        probs = logits.softmax(-1) if self.cfg.router == "softmax" else logits.sigmoid()
        chosen = (probs + self.balance_bias).topk(self.top_k, dim=-1).indices  # the bias only chooses
        gates = probs.gather(-1, chosen)
        if self.cfg.router == "sigmoid" or self.top_k > 1:
            gates = gates / gates.sum(-1, keepdim=True).clamp_min(1e-9)
        return chosen, gates, probs, logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # (N, d)
        n = tokens.shape[0]
        chosen, gates, probs, logits = self.route(tokens)

        # assignments in priority order: every token's first choice, then every second choice
        expert = chosen.t().reshape(-1)  # (k N,)
        token = torch.arange(n, device=x.device).repeat(self.top_k)
        gate = gates.t().reshape(-1)
        order = torch.argsort(expert, stable=True)
        expert, token, gate = expert[order], token[order], gate[order]
        counts = torch.bincount(expert, minlength=self.n_experts)
        dropped = torch.zeros((), device=x.device)
        if self.cfg.capacity_factor > 0:
            capacity = math.ceil(self.cfg.capacity_factor * n * self.top_k / self.n_experts)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(expert.numel(), device=x.device) - starts[expert]
            keep = rank < capacity
            dropped = (~keep).sum().float()
            expert, token, gate = expert[keep], token[keep], gate[keep]
            counts = torch.bincount(expert, minlength=self.n_experts)

        out = self._experts(tokens[token], expert, counts)  # (M, d), rows in sorted order
        y = torch.zeros_like(tokens).index_add_(0, token, out * gate.unsqueeze(-1).to(out.dtype))
        if self.shared is not None:
            y = y + self.shared(tokens)

        self._record(probs, logits, counts, dropped, n)
        return y.view(shape)

    def _experts(self, xs: torch.Tensor, expert: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """SwiGLU of each row of `xs` (sorted by expert) through its expert's weights."""
        w1, w2 = self.gate_up_proj.to(xs.dtype), self.down_proj.to(xs.dtype)
        if grouped_mm_available(xs):
            offsets = torch.cumsum(counts, 0).to(torch.int32)
            gate, up = torch._grouped_mm(xs, w1, offs=offsets).chunk(2, dim=-1)
            return torch._grouped_mm(F.silu(gate) * up, w2, offs=offsets)
        # batched fallback: each expert's rows padded to the longest list, one bmm for all experts
        longest = int(counts.max()) if counts.numel() else 0
        starts = torch.cumsum(counts, 0) - counts
        position = torch.arange(xs.shape[0], device=xs.device) - starts[expert]
        padded = xs.new_zeros(self.n_experts, max(longest, 1), xs.shape[-1])
        padded[expert, position] = xs
        gate, up = torch.bmm(padded, w1).chunk(2, dim=-1)
        return torch.bmm(F.silu(gate) * up, w2)[expert, position]

    def _record(self, probs, logits, counts, dropped, n_tokens) -> None:
        assigned = counts.float()
        load = assigned / assigned.sum().clamp_min(1)
        p = probs if self.cfg.router == "softmax" else probs / probs.sum(-1, keepdim=True)  # a distribution
        aux = torch.zeros((), device=probs.device)
        if self.cfg.aux_loss_coef > 0:
            aux = aux + self.cfg.aux_loss_coef * load_balancing_loss(load, p.mean(0))
        if self.cfg.z_loss_coef > 0:
            aux = aux + self.cfg.z_loss_coef * router_z_loss(logits)
        self.aux_loss = aux
        if self.training:
            self.load_counts += counts.detach().float()
        with torch.no_grad():
            entropy = -(p * p.clamp_min(1e-9).log()).sum(-1).mean()
            self.stats = {"load": load.detach(), "dropped": dropped / (n_tokens * self.top_k),
                          "entropy": entropy, "aux_loss": aux.detach()}


def load_balancing_loss(load: torch.Tensor, mean_prob: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss: E * sum_e f_e * P_e (1.0 at a uniform load)."""
    return load.numel() * (load * mean_prob).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss: mean over tokens of logsumexp(logits)^2."""
    return torch.logsumexp(logits, dim=-1).square().mean()


@torch.no_grad()
def update_balance_bias(layer: MoE, counts: torch.Tensor, rate: float) -> None:
    """DeepSeek-V3's auxiliary-loss-free step: raise the bias of under-loaded experts, lower the
    over-loaded ones', by `rate`. `counts`: assignments per expert since the last update, summed
    over micro-batches and ranks."""
    layer.balance_bias += rate * torch.sign(counts.float().mean() - counts.float())
