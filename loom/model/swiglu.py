"""The SwiGLU feed-forward layer (Shazeer 2020, "GLU Variants Improve Transformer"):
down(silu(gate(x)) * up(x)). Gate and up are two projections, not one fused: tensor
parallelism then splits each by rows without knowing a fused layout.

It has a module of its own because two layers use it and neither may import the other: the
dense block of `loom.model.gpt` and the shared experts of `loom.model.moe`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
