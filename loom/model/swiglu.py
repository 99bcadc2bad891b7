"""The SwiGLU feed-forward layer (Shazeer 2020, "GLU Variants Improve Transformer"):
down(silu(gate(x)) * up(x)), with gate and up as one fused projection.

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
        self.gate_up_proj = nn.Linear(d_model, 2 * hidden, bias=False)  # (d, 2h): gate, then up
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
