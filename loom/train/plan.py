"""Planning a run before it starts: how big a model a budget buys, and what a config will need.

Forward (`propose`): a budget in money or device-hours on a named device, or in FLOPs, becomes
a compute-optimal model size N and token count D under the Chinchilla rule of about 20 tokens
per parameter (Hoffmann et al. 2022, table 3: the compute-optimal ratio stays near 20 across
their range), with C = 6 N D training FLOPs; then a loom model shape near N, its memory per
device, the wall time at a stated MFU, the money, and the loss the Chinchilla fit predicts,
L(N, D) = E + A / N^alpha + B / D^beta with E = 1.69, A = 406.4, B = 410.7, alpha = 0.34,
beta = 0.28 (their approach 3). That loss is in nats per token of MassiveText under their
tokenizer: a guide to how loss moves with scale, not a promise for your data.

The proposed config also takes its batch size and peak learning rate from the compute-optimal
hyperparameter fits of DeepSeek LLM (DeepSeek-AI 2024, section 3.1): B_opt = 0.2920 C^0.3271
tokens and lr_opt = 0.3118 C^-0.1250, the batch rounded to whole micro-batches on every device.

Reverse (`estimate`): a config and a token count become FLOPs, time, money and memory.

Memory per device in training (`memory_estimate`), by part:
  - weights, gradients and AdamW's two moments, all fp32: 16 bytes per parameter (bf16 autocast
    keeps fp32 master weights), divided by the number of devices when sharded (FSDP / ZeRO-3);
  - activations saved for the backward pass, per token and layer, counted from loom's block
    (`loom.model.gpt`): the two RMSNorms keep their input and normalized output (2 x 2 d), the
    attention keeps q, k, v, its output and the reshaped output fed to the projection
    (3 d + 2 d_kv with grouped keys and values), the SwiGLU keeps both hidden projections, the
    gate's activation and their product (4 f); plus the logits and their log-softmax (2 V) at the
    head and the embedding output (d). Fused attention (`scaled_dot_product_attention`) keeps no
    T x T matrix. fp32 on a CPU; about 2 bytes under bf16 autocast (matrix-product outputs are
    bf16; norms and the loss stay fp32, which the estimate rounds into the 2);
  - with activation checkpointing, only each layer's input (d per token) is kept, plus one
    layer's activations while it is recomputed;
  - the backward pass briefly holds the gradient of the largest saved tensors as well, which the
    estimate adds as one layer's activations and the logits' gradient (V per token);
  - with tensor parallelism (`tp`), weights and the per-layer activations split `tp` ways, but
    each rank keeps the gathered inputs of the attention and the MLP (2 d) and the logits whole;
  - sharded over several devices (FSDP2), its buffers: a block gathered whole while the next
    block's all-gather is in flight, a block's whole gradient and the reduce-scatter's input
    (5 blocks' parameters), and the root (the embedding) whole from forward to backward with
    its gradient and reduce-scatter input (3 times its parameters); `bench/parallel_memory.py`
    measures each layout's peak per rank against this, and a test keeps them within 25%;
  - and the saved activations times `TRANSIENT_FACTOR` (1.3): autograd's other short-lived
    buffers and the allocator's slack. The factor is measured, not derived: peak resident memory
    of two training steps on a CPU for four shapes from 1M to 55M parameters came out 11% to 24%
    above the sum of the parts above; with the factor the estimate fell within 6% of each.
    `tests/train/test_plan.py` measures three shapes again on every test run.

loom's trainer runs all four layouts: the model replicated on every device (DDP) or sharded
over them (FSDP2, `parallel.dp_shard`), each with every activation kept or recomputed in the
backward pass (`parallel.activation_checkpointing = "full"`). The config a plan writes takes the
first layout that fits, in that order (`memory_options`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from loom.errors import ConfigError
from loom.train.cost import PEAK_TFLOPS, PRICE_PER_HOUR, table_key

TOKENS_PER_PARAM = 20.0  # Chinchilla (Hoffmann et al. 2022)
CHINCHILLA_FIT = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
TRANSIENT_FACTOR = 1.3  # measured; see the module docstring
DEFAULT_MFU = 0.40  # a well-tuned dense transformer on modern GPUs reaches 35-50% (PaLM: 46%)

# Memory per device, GB (vendor datasheets; the largest common variant).
MEMORY_GB = {
    "b200": 192.0, "h200": 141.0, "h100 pcie": 80.0, "h100": 80.0, "gh200": 96.0, "a100": 80.0, "l40s": 48.0,
    "l4": 24.0, "a10g": 24.0, "a10": 24.0, "rtx 4090": 24.0, "v100": 32.0, "mi300x": 192.0,
}


@dataclass
class Memory:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    activations_checkpointed: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def total_checkpointed(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations_checkpointed


def param_count(model_cfg, active: bool = False) -> int:
    """Parameters of the model `model_cfg` describes, counted without allocating it; with
    `active`, only those one token uses (its chosen experts, in an MoE model)."""
    c = model_cfg
    total = sum(layer_params(c, layer, active) for layer in range(c.n_layer))
    return total + root_params(c)


def layer_params(model_cfg, layer: int, active: bool = False) -> int:
    """Parameters of one block (FSDP's unit of sharding)."""
    from loom.model.gpt import is_moe_layer
    from loom.model.moe import expert_width

    c, moe = model_cfg, model_cfg.moe
    d, f, kv = c.d_model, c.mlp_hidden, c.n_kv_head * c.head_dim
    attention = d * d + 2 * d * kv + d * d + 2 * d  # q, k and v, out; two norms
    if c.qk_norm:
        attention += 2 * c.head_dim
    if not is_moe_layer(c, layer):
        return attention + (2 if c.mlp == "relu2" else 3) * d * f  # (gate,) up, down
    h = expert_width(moe, f)
    experts = moe.top_k if active else moe.n_experts
    return attention + d * moe.n_experts + (experts + moe.shared_experts) * 3 * d * h  # router, experts


def root_params(model_cfg) -> int:
    """Parameters outside the blocks: the embedding (and an untied head) and the final norm."""
    c = model_cfg
    return c.vocab_size * c.d_model * (1 if c.tie_embeddings else 2) + c.d_model


def flops_per_token(model_cfg, seq_len: int) -> float:
    """Training FLOPs per token, as `GPT.flops_per_token` counts them (active parameters)."""
    c = model_cfg
    matmul = param_count(c, active=True) - (0 if c.tie_embeddings else c.vocab_size * c.d_model)
    return 6 * matmul + 12 * c.n_layer * c.d_model * seq_len


def memory_estimate(model_cfg, micro_batch: int, seq_len: int, bytes_per_activation: float = 4.0,
                    devices: int = 1, sharded: bool = False, tp: int = 1) -> Memory:
    """Bytes per device for training; see the module docstring for what each part counts.
    `devices` shard the weights when `sharded` (FSDP over all of them); `tp` splits them, and
    the activations, `tp` ways more."""
    c = model_cfg
    n = param_count(c)
    shard = (devices if sharded else 1) * tp
    d, f, kv, v = c.d_model, c.mlp_hidden, c.n_kv_head * c.head_dim, c.vocab_size
    tokens = micro_batch * seq_len
    # split tp ways by heads, hidden units and (sequence parallel) positions; each rank also keeps
    # the gathered inputs of the attention and the MLP (2 d) whole
    mlp_kept = 2 * f if c.mlp == "relu2" else 4 * f  # relu2: up's output and its square
    per_layer = ((2 * 2 * d) + (3 * d + 2 * kv) + mlp_kept) / tp + (2 * d if tp > 1 else 0)  # elements per token
    head = 2 * v + d  # the logits are gathered whole on every rank
    backward_transient = per_layer + v
    scale = tokens * bytes_per_activation * TRANSIENT_FACTOR
    act = scale * (c.n_layer * per_layer + head + backward_transient)
    act_ckpt = scale * (c.n_layer * d + per_layer + head + backward_transient)
    if sharded and devices > 1:
        # FSDP's own buffers: a block gathered whole for its forward while the next one's
        # all-gather is in flight (2 x 2 copies), in the backward its gradient whole and the
        # reduce-scatter's input (1); the root (the embedding) stays whole from forward to
        # backward, with its gradient and reduce-scatter input (3)
        largest = max(layer_params(c, layer) for layer in range(c.n_layer))
        gathered = 4 * (5 * largest + 3 * root_params(c)) / tp
        act, act_ckpt = act + gathered, act_ckpt + gathered
    return Memory(weights=4 * n / shard, gradients=4 * n / shard, optimizer=8 * n / shard, activations=act,
                  activations_checkpointed=act_ckpt)


def chinchilla_loss(n_params: float, tokens: float) -> float:
    f = CHINCHILLA_FIT
    return f["E"] + f["A"] / n_params ** f["alpha"] + f["B"] / tokens ** f["beta"]


def compute_optimal(flops: float) -> tuple[float, float]:
    """(parameters, tokens) with 6 N D = flops and D = 20 N."""
    n = math.sqrt(flops / (6 * TOKENS_PER_PARAM))
    return n, TOKENS_PER_PARAM * n


def shape_for(n_params: float, vocab_size: int, base):
    """A loom model shape (a copy of `base` with layers, width and heads set) whose parameter
    count is near `n_params`: width a multiple of 128 with 64-wide heads, depth about width / 64
    (within the aspect ratios Kaplan et al. 2020 found equally good), at least 2 layers."""
    from dataclasses import replace

    best, best_err = None, math.inf
    for n_layer in range(2, 129):
        for d_model in range(128, 16385, 128):  # 64-wide heads, an even number of them
            if not 32 <= d_model / n_layer <= 192:
                continue
            n_head = d_model // 64
            cfg = replace(base, n_layer=n_layer, d_model=d_model, n_head=n_head, n_kv_head=n_head,
                          vocab_size=vocab_size)
            err = abs(math.log(param_count(cfg) / n_params)) + 0.02 * abs(math.log(d_model / (64 * n_layer)))
            if err < best_err:
                best, best_err = cfg, err
    return best


def device_facts(device: str) -> dict:
    """Peak TFLOP/s, price per hour and memory of a named device ("h100", "A100"), or of this
    machine's CPU ("cpu": its fp32 peak, as training measures MFU against it, and its memory)."""
    if device.strip().lower() == "cpu":
        import os

        import torch

        from loom.train.cost import peak_flops

        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
        return {"name": "cpu", "peak_tflops": peak_flops(torch.device("cpu"), dtype="float32")[0] / 1e12,
                "price_per_hour": PRICE_PER_HOUR["cpu"], "memory_gb": memory}
    key = table_key(device, PEAK_TFLOPS)
    if key is None:
        known = ", ".join(sorted(PEAK_TFLOPS))
        raise ValueError(f"unknown device {device!r}; use cpu or one of: {known}")
    return {"name": key, "peak_tflops": PEAK_TFLOPS[key], "price_per_hour": PRICE_PER_HOUR[key],
            "memory_gb": MEMORY_GB[key]}


def run_figures(model_cfg, tokens: float, seq_len: int, micro_batch: int, device: dict, devices: int,
                mfu: float) -> dict:
    """Time, money, memory and fit of training `model_cfg` on `tokens` tokens."""
    n = param_count(model_cfg)
    flops = flops_per_token(model_cfg, seq_len) * tokens
    seconds = flops / (device["peak_tflops"] * 1e12 * mfu * devices)
    device_hours = seconds * devices / 3600
    bytes_per_act = 4.0 if device["name"] == "cpu" else 2.0  # fp32 on CPUs, bf16 autocast on GPUs
    plain = memory_estimate(model_cfg, micro_batch, seq_len, bytes_per_act, devices, sharded=False)
    sharded = memory_estimate(model_cfg, micro_batch, seq_len, bytes_per_act, devices, sharded=True)
    capacity = device["memory_gb"] * 1e9 * 0.9  # the framework and allocator keep about a tenth
    options = {  # in the order a plan prefers them: no recomputation first, no sharding first
        "replicated": plain.total, f"sharded over {devices}": sharded.total,
        "replicated + activation checkpointing": plain.total_checkpointed,
        f"sharded over {devices} + activation checkpointing": sharded.total_checkpointed,
    }
    fits = [name for name, b in options.items() if b <= capacity]
    return {
        "parameters": n, "tokens": tokens, "flops": flops, "wall_hours": seconds / 3600,
        "device_hours": device_hours, "money": device_hours * device["price_per_hour"],
        "memory": {"replicated": plain, "sharded": sharded}, "memory_options": options, "fits": fits,
        "capacity_bytes": capacity, "predicted_loss": chinchilla_loss(n, tokens),
    }


def propose(base_cfg, device: dict, devices: int, mfu: float, money: float = 0.0, device_hours: float = 0.0,
            flops: float = 0.0) -> dict:
    """The compute-optimal run a budget buys (exactly one of money, device_hours, flops), as a
    config (a copy of `base_cfg` with the model and steps set) and its figures."""
    from dataclasses import replace

    if money > 0:
        device_hours = money / device["price_per_hour"]
    if device_hours > 0:
        flops = device_hours * 3600 * device["peak_tflops"] * 1e12 * mfu
    if flops <= 0:
        raise ValueError("give a budget: money, device-hours or FLOPs, more than zero")
    n_opt, d_opt = compute_optimal(flops)
    model = shape_for(n_opt, base_cfg.model.vocab_size, base_cfg.model)
    seq_len = min(base_cfg.train.seq_len, model.max_seq_len)
    # the token count that spends the budget on the chosen shape (its FLOPs per token, attention included)
    tokens = flops / flops_per_token(model, seq_len)
    per_step = base_cfg.train.micro_batch * seq_len * devices
    batch_tokens = per_step * max(1, round(0.2920 * flops ** 0.3271 / per_step))  # DeepSeek LLM fit
    lr = 0.3118 * flops ** -0.1250
    steps = max(1, round(tokens / batch_tokens))
    train = replace(base_cfg.train, steps=steps, seq_len=seq_len, batch_tokens=batch_tokens, lr=float(f"{lr:.3g}"),
                    warmup_steps=min(max(base_cfg.train.warmup_steps, steps // 100), steps))
    cfg = replace(base_cfg, model=model, train=train)
    figures = run_figures(model, tokens, seq_len, base_cfg.train.micro_batch, device, devices, mfu)
    return {"config": cfg, "budget_flops": flops, "optimal_params": n_opt, "optimal_tokens": d_opt,
            "batch_tokens": batch_tokens, "steps": steps, "device": device, "devices": devices, "mfu": mfu,
            **figures}


def estimate(cfg, tokens: float, device: dict, devices: int, mfu: float) -> dict:
    """What training `cfg`'s model on `tokens` tokens takes."""
    figures = run_figures(cfg.model, tokens, cfg.train.seq_len, cfg.train.micro_batch, device, devices, mfu)
    n = figures["parameters"]
    return {"config": cfg, "device": device, "devices": devices, "mfu": mfu,
            "tokens_per_param": tokens / n, "optimal_tokens_for_size": TOKENS_PER_PARAM * n, **figures}


def _size(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def render(plan: dict, currency: str = "USD") -> str:
    """A plan as the table `loom plan` prints."""
    m = plan["config"].model
    dev = plan["device"]
    rows = []
    if "budget_flops" in plan:
        rows += [("budget", f"{plan['budget_flops']:.3g} FLOPs"),
                 ("compute-optimal size", f"{_size(plan['optimal_params'])} parameters, "
                                          f"{_size(plan['optimal_tokens'])} tokens (20 per parameter)")]
    rows += [
        ("model", f"{m.n_layer} layers, width {m.d_model}, {m.n_head} heads, vocab {m.vocab_size}: "
                  f"{_size(plan['parameters'])} parameters"),
        ("tokens", f"{_size(plan['tokens'])} ({plan['tokens'] / plan['parameters']:.1f} per parameter)"),
        ("training FLOPs", f"{plan['flops']:.3g}"),
        ("devices", f"{plan['devices']} x {dev['name'].upper()} ({dev['peak_tflops']:.3g} TFLOP/s peak, "
                    f"{dev['memory_gb']:.3g} GB)"),
        ("wall time", f"{plan['wall_hours']:.2f} h at {plan['mfu']:.0%} MFU"),
        ("device-hours", f"{plan['device_hours']:.1f}"),
        ("money", f"{plan['money']:,.2f} {currency} at {dev['price_per_hour']:g} per device-hour (assumed)"),
        ("predicted loss", f"{plan['predicted_loss']:.3f} nats/token (Chinchilla fit; MassiveText, a guide only)"),
    ]
    if "steps" in plan:
        t = plan["config"].train
        rows.append(("steps", f"{plan['steps']:,} of {plan['batch_tokens']:,} tokens, peak lr {t.lr:g} "
                              "(DeepSeek LLM fits)"))
    mem = plan["memory"]["replicated"]
    rows += [
        ("memory: weights + grads + AdamW", f"{_gb(mem.weights + mem.gradients + mem.optimizer)} per device "
                                            f"(sharded: {_gb(plan['memory']['sharded'].weights * 4)})"),
        ("memory: activations", f"{_gb(mem.activations)} (with activation checkpointing "
                                f"{_gb(mem.activations_checkpointed)}) at micro-batch "
                                f"{plan['config'].train.micro_batch} x {plan['config'].train.seq_len}"),
    ]
    for name, b in plan["memory_options"].items():
        verdict = "fits" if b <= plan["capacity_bytes"] else "DOES NOT FIT"
        rows.append((f"memory: {name}", f"{_gb(b)} per device: {verdict}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if not plan["fits"]:
        lines.append(f"WARNING: no layout (replicated or sharded, with or without activation checkpointing) fits "
                     f"in {dev['memory_gb']:g} GB "
                     "per device; lower train.micro_batch (raise train.batch_tokens' accumulation instead), use "
                     "more devices, or a smaller model")
    return "\n".join(lines)


def plan_run(cfg, device: str, devices: int, mfu: float, *, budget: float = 0.0, device_hours: float = 0.0,
             flops: float = 0.0, tokens: float = 0.0, peak_tflops: float = 0.0, price: float | None = None,
             memory_gb: float = 0.0) -> dict:
    """`loom plan`: exactly one of `budget` (money), `device_hours`, `flops` (what a budget buys,
    `propose`) or `tokens` (what `cfg`'s model needs, `estimate`), on `devices` of the named
    `device` with its figures overridden where given."""
    try:
        facts = device_facts(device)
    except ValueError as e:
        raise ConfigError(f"--device: {e}") from None
    if peak_tflops:
        facts["peak_tflops"] = peak_tflops
    if price is not None:
        facts["price_per_hour"] = price
    if memory_gb:
        facts["memory_gb"] = memory_gb
    if len([b for b in (budget, device_hours, flops, tokens) if b]) != 1:
        raise ConfigError("give exactly one of --budget MONEY, --device-hours H, --flops F (what a budget buys) "
                          "or --tokens T (what the config's model needs)")
    if tokens:
        result = estimate(cfg, tokens, facts, devices, mfu)
    else:
        result = propose(cfg, facts, devices, mfu, money=budget, device_hours=device_hours, flops=flops)
    if result["fits"]:
        # the config written takes the first layout that fits: replicated, sharded, then each
        # with activation checkpointing
        layout = result["fits"][0]
        result["config"] = copy.deepcopy(result["config"])
        if layout.startswith("sharded"):
            result["config"].parallel.dp_shard = devices
        if "activation checkpointing" in layout:
            result["config"].parallel.activation_checkpointing = "full"
        result["layout"] = layout
    return result
