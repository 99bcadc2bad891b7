"""The loom transformer: a decoder-only GPT, read top to bottom like a paper's appendix.

Architecture (each choice with its source):
  - token embedding, no learned positions; rotary position embedding on queries and keys
    (RoFormer, Su et al. 2021), applied in the "rotate half" layout used by GPT-NeoX and Llama;
  - pre-norm residual blocks with RMSNorm (Zhang & Sennrich 2019);
  - grouped-query attention (Ainslie et al. 2023): `n_kv_head` key/value heads shared by
    `n_head` query heads, computed by `F.scaled_dot_product_attention`, which picks a fused
    kernel (flash / memory-efficient / CPU flash) for the device;
  - SwiGLU feed-forward (Shazeer 2020, `loom.model.swiglu`), hidden width `mlp_ratio * d_model` rounded up to a
    multiple of 64; the default ratio 8/3 keeps the parameter count of a 4x GELU MLP; or (`mlp =
    "relu2"`) the squared-ReLU MLP of So et al. 2021 ("Primer"), two matrices, so ratio 4 matches;
  - optionally, RMSNorm of each head's queries and keys before the rotation (`qk_norm`; Dehghani
    et al. 2023, OLMo 2, Qwen3), which keeps attention logits bounded at high learning rates;
  - optionally, sparse Mixture-of-Experts feed-forward blocks in every layer or every n-th
    (`model.moe`, `loom.model.moe`);
  - no biases anywhere; optional output head tied to the token embedding (Press & Wolf 2017);
  - optionally, logits soft-capped as `cap * tanh(logits / cap)` (`logit_softcap`; Gemma 2);
  - init N(0, 0.02), with the two projections that write into the residual stream scaled by
    1/sqrt(2 * n_layer) (GPT-2, Radford et al. 2019), or zero (`zero_init_projections`, as the
    modded-nanogpt speedrun does: each block starts as the identity).

This module owns the network, its parameter and FLOP counts, and the key/value cache used for
generation. It knows nothing of data files, tokenizers, devices or distribution: parallelism
and compilation are applied from outside (DDP, `torch.compile`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from loom.errors import ConfigError, require_non_negative, require_positive
from loom.model.moe import MoE, MoEConfig
from loom.model.swiglu import SwiGLU


@dataclass
class ModelConfig:
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 12
    d_model: int = 768
    mlp_ratio: float = 8 / 3
    vocab_size: int = 8192
    max_seq_len: int = 1024
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    mlp: str = "swiglu"  # swiglu | relu2 (squared ReLU; mlp_ratio 4 gives SwiGLU-at-8/3's parameters)
    qk_norm: bool = False  # RMSNorm on each head's queries and keys
    logit_softcap: float = 0.0  # logits -> cap * tanh(logits / cap) (0: none)
    zero_init_projections: bool = False  # the residual-writing projections start at zero
    moe: MoEConfig = field(default_factory=MoEConfig)  # [model.moe]: sparse experts (loom.model.moe)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def mlp_hidden(self) -> int:
        # the 1e-9 absorbs float error in a ratio written as hidden / d_model (an imported model)
        return 64 * math.ceil(self.mlp_ratio * self.d_model / 64 - 1e-9)

    def check(self, key: str = "model") -> None:
        """Raises `ConfigError` naming the setting that cannot build a model, and how to fix it."""
        require_positive(self, key, "n_layer", "n_head", "n_kv_head", "d_model", "max_seq_len", "mlp_ratio",
                         "rope_theta", "norm_eps")
        require_non_negative(self, key, "logit_softcap")
        self.moe.check(f"{key}.moe")
        if self.mlp not in ("swiglu", "relu2"):
            raise ConfigError(f"{key}.mlp {self.mlp!r} is not known; use swiglu or relu2")
        if self.mlp != "swiglu" and self.moe.enabled:
            raise ConfigError(f"{key}.mlp = {self.mlp!r} with {key}.moe: the experts are SwiGLU; leave {key}.mlp "
                              "at swiglu for an MoE model")
        if self.d_model % self.n_head:
            raise ConfigError(
                f"{key}.d_model ({self.d_model}) must be divisible by {key}.n_head ({self.n_head}): each "
                f"attention head gets d_model / n_head dimensions. Try d_model = "
                f"{self.n_head * max(2, round(self.d_model / self.n_head / 2) * 2)} or another n_head"
            )
        if self.head_dim % 2:
            raise ConfigError(f"{key}.d_model / {key}.n_head = {self.head_dim} must be even: rotary embedding "
                              "rotates pairs")
        if self.n_head % self.n_kv_head:
            raise ConfigError(
                f"{key}.n_head ({self.n_head}) must be a multiple of {key}.n_kv_head ({self.n_kv_head}): "
                "each key/value head is shared by an equal group of query heads"
            )


# ---------------------------------------------------------------------------------------------
# Rotary position embedding
# ---------------------------------------------------------------------------------------------


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_seq_len, head_dim): frequency theta^(-2i/head_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # first and second halves share a frequency
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[i], x[i + d/2]) of x (B, H, T, d) by the position's angle; cos/sin (T, d), or
    (B, 1, T, d) when each row is at its own positions."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


# ---------------------------------------------------------------------------------------------
# Key/value cache for generation
# ---------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of past positions, per layer and per row, each row filled left to right.

    A row holds one sequence and `lengths[row]` is how many of its positions are stored, so the
    rows of one batch may be at different lengths: a server decoding several requests together
    appends one token to each, every one at its own position. The forward pass appends its T new
    positions to the first B rows and advances their lengths.

    A `static` cache is attended whole, every slot past a row's length masked out, so a step's
    shapes never change and nothing is read back to the host: what a compiled step replays as a
    CUDA graph needs (gpt-fast's static cache). It costs attention over empty slots, and the
    caller keeps the positions inside `max_len` (a dynamic cache checks them).
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device, dtype, static: bool = False):
        if static and max_len > cfg.max_seq_len:
            raise ValueError(f"a static cache of {max_len} positions exceeds max_seq_len {cfg.max_seq_len}")
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.static = static

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def length(self) -> int:
        """Positions stored in the longest row."""
        return int(self.lengths.max())

    def copy_row(self, dst: int, src: KVCache, src_row: int = 0) -> None:
        """Row `dst` takes row `src_row` of `src` (which may be this cache): its keys, values, length."""
        n = int(src.lengths[src_row])
        self.k[:, dst, :, :n] = src.k[:, src_row, :, :n]
        self.v[:, dst, :, :n] = src.v[:, src_row, :, :n]
        self.lengths[dst] = n


# ---------------------------------------------------------------------------------------------
# The blocks
# ---------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class ReLUSquared(nn.Module):
    """down(relu(up(x))^2): Primer's feed-forward, no gate."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.relu(self.up_proj(x)).square())


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        # Three projections, not one fused: a head's query, key and value weights are then rows of
        # separate matrices, which tensor parallelism can split by head without any knowledge of
        # a fused layout (and Llama-style checkpoints name them the same way).
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.out_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)
        # one gain per head dimension, shared by the heads (Qwen3's q_norm / k_norm)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x, cos, sin, cache: KVCache | None = None, positions=None, mask=None) -> torch.Tensor:
        B, T, _ = x.shape
        # heads counted from the projections' width (-1), so a process holding a share of them works
        q = self.q_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        k = self.k_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, T, d)
        v = self.v_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        if cache is not None:
            # Row b's new positions are positions[b] (B, T); it then attends to its stored keys
            # up to each query's position (`mask`, B x 1 x T x keys), whatever the other rows hold.
            rows = torch.arange(B, device=x.device)[:, None]
            cache.k[self.layer_index][rows, :, positions] = k.transpose(1, 2)
            cache.v[self.layer_index][rows, :, positions] = v.transpose(1, 2)
            k = cache.k[self.layer_index, :B, :, : mask.shape[-1]]
            v = cache.v[self.layer_index, :B, :, : mask.shape[-1]]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=cache is None, enable_gqa=self.n_kv_head != self.n_head
        )  # (B, H, T, d)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, -1))


def is_moe_layer(cfg: ModelConfig, layer_index: int) -> bool:
    return cfg.moe.enabled and (layer_index + 1) % cfg.moe.every == 0


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_index: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, layer_index)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if is_moe_layer(cfg, layer_index):
            self.mlp = MoE(cfg.d_model, cfg.mlp_hidden, cfg.moe)
        elif cfg.mlp == "relu2":
            self.mlp = ReLUSquared(cfg.d_model, cfg.mlp_hidden)
        else:
            self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden)

    def forward(self, x, cos, sin, cache: KVCache | None = None, positions=None, mask=None) -> torch.Tensor:
        # positions and mask by keyword: tensor parallelism's input plan counts the positional inputs
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, positions=positions, mask=mask)
        return x + self.mlp(self.mlp_norm(x))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_head or cfg.n_head % cfg.n_kv_head or cfg.head_dim % 2:
            raise ValueError(
                f"d_model ({cfg.d_model}) must split into n_head ({cfg.n_head}) heads of even "
                f"width, and n_head must be a multiple of n_kv_head ({cfg.n_kv_head})"
            )
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        # Derived from the config, so not saved with the weights.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            self.init_weight(name, p)

    def init_weight(self, name: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Draws parameter `name`'s initial values into `p` (a tensor of its shape)."""
        if name.endswith("norm.weight"):
            nn.init.ones_(p)
        elif name.endswith(("out_proj.weight", "down_proj.weight", "down_proj")):  # "down_proj": experts
            if self.cfg.zero_init_projections:
                nn.init.zeros_(p)
                return
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.cfg.n_layer), generator=generator)
        else:
            nn.init.normal_(p, mean=0.0, std=0.02, generator=generator)

    def reset_buffers(self) -> None:
        """The buffers' starting values, where they live now: for a model built on the meta device
        (no memory) whose parameters were given storage afterwards."""
        cos, sin = rope_tables(self.cfg.head_dim, self.cfg.max_seq_len, self.cfg.rope_theta)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)
        for layer in self.moe_layers():
            layer.balance_bias.zero_()
            layer.load_counts.zero_()

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """idx (B, T) token ids. Returns the mean cross-entropy against targets (B, T) when
        given, else logits (B, T, vocab) in float32. With a cache, row b's positions continue
        from `cache.lengths[b]` and the first B rows of the cache are advanced by T."""
        B, T = idx.shape
        positions = mask = None
        if cache is None:
            if T > self.cfg.max_seq_len:
                raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, d), the same for every row
        else:
            positions = cache.lengths[:B, None] + torch.arange(T, device=idx.device)  # (B, T)
            if cache.static:
                keys = cache.max_len
            else:
                keys = int(positions.max()) + 1
                if keys > min(self.cfg.max_seq_len, cache.max_len):
                    raise ValueError(f"sequence of {keys} tokens exceeds max_seq_len {self.cfg.max_seq_len} "
                                     f"or the cache's {cache.max_len}")
            cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]  # (B, 1, T, d)
            key_positions = torch.arange(keys, device=idx.device)
            mask = (key_positions <= positions[:, :, None])[:, None]  # (B, 1, T, keys)
        cos, sin = cos.to(self.tok_emb.weight.dtype), sin.to(self.tok_emb.weight.dtype)

        x = self.tok_emb(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x, cos, sin, cache, positions=positions, mask=mask)
        x = self.final_norm(x)
        if cache is not None:
            cache.lengths[:B] += T

        logits = self.head(x).float()  # (B, T, V)
        if self.cfg.logit_softcap:
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    # --- accounting ---------------------------------------------------------------------------

    def num_params(self) -> int:
        """Unique trainable parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())

    def num_active_params(self) -> int:
        """Parameters one token uses: all but the routed experts it does not go to."""
        n = self.num_params()
        for layer in self.moe_layers():
            per_expert = (layer.gate_up_proj.numel() + layer.down_proj.numel()) // layer.n_experts
            n -= (layer.n_experts - layer.top_k) * per_expert
        return n

    def num_matmul_params(self) -> int:
        """Active parameters used in matrix products: all but an untied embedding table, which
        is only looked up. A tied table is used by the output head, so it counts."""
        n = self.num_active_params()
        if not self.cfg.tie_embeddings:
            n -= self.tok_emb.weight.numel()
        return n

    # --- mixture of experts -------------------------------------------------------------------

    def moe_layers(self) -> list[MoE]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, MoE)]

    def aux_loss(self) -> torch.Tensor:
        """The MoE layers' auxiliary losses from the last forward pass (zero for a dense model),
        already weighted by their coefficients: add it to the loss to train with it."""
        losses = [layer.aux_loss for layer in self.moe_layers()]
        return torch.stack(losses).sum() if losses else torch.zeros((), device=self.tok_emb.weight.device)

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 6N for the forward and backward matrix products over the
        active weights (a token's chosen experts only), plus 12 * L * d * T for attention
        scores and their weighted sum (the PaLM appendix B estimate, Chowdhery et al. 2022),
        with T the training sequence length."""
        c = self.cfg
        return 6 * self.num_matmul_params() + 12 * c.n_layer * c.d_model * seq_len
