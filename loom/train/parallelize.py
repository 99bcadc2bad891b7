"""How the model is spread over the processes, applied from outside it (`loom/model/` knows
nothing of this), in the order of torchtitan's `parallelize_llama`: tensor parallel, then
activation checkpointing, then compile, then FSDP.

The processes form a device mesh (dp_replicate, dp_shard, tp) whose product is the world size
(`ParallelConfig.degrees`); ranks are laid out row-major, so the `tp` ranks of one group are
neighbours (on one node, where the fast links are) and read the same data.

  - `data_parallel`: every degree but dp_replicate is 1. `torch.compile` when `train.compile`,
    then DDP when there is more than one process: every rank holds the whole model and optimizer.
  - tensor parallel (`parallel.tp` > 1, `tensor_parallel`): DTensor `parallelize_module` splits
    each block's query, key, value, gate and up projections column-wise (by head, by hidden
    unit) and its output and down projections row-wise, so that a block costs two collectives
    forward; the norms run sequence parallel (each rank normalizes its share of the positions,
    Korthikanti et al. 2022), the embedding is split by vocabulary row and the output head by
    vocabulary column, their tie kept. The loss is computed on the gathered logits.
  - FSDP2 (`parallel.dp_shard` > 1, or tp with data-parallel replicas): `fully_shard` on every
    block and then on the root over the (dp_replicate, dp_shard) mesh: with one replica plain
    FSDP, with more HSDP. On CUDA the parameters compute in bf16 with gradients reduced in fp32
    (`MixedPrecisionPolicy`); on the CPU all is fp32, and a sharded run's steps equal one
    process's up to float rounding.

`train.float8`: the blocks' linear layers multiply in float8 through torchao (`float8_matmuls`),
applied first, to the model as built, so every layout below sees ordinary modules with
ordinary weights.

`parallel.activation_checkpointing`: "full" runs every block's forward under
`torch.utils.checkpoint` (non-reentrant), its activations recomputed in the backward pass;
"selective" keeps the outputs of the matrix products and attention and recomputes only the
cheap element-wise work between them (norms, rotary embedding, SiLU, products), torchtitan's
op-level policy. Parameter names are unchanged by all of it, so checkpoints move between layouts.

The model arrives built on the meta device (shapes, no memory) and is given storage last
(`materialize`), so that a model too large for one device is never whole on one: each rank
allocates its own pieces, drawn to equal a single process's initialization exactly.

MoE models train under dp_shard; their experts are not split across ranks (no expert parallel
yet) and `tp` with MoE is refused by the config.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from loom.checkpoint import tied_names
from loom.errors import ConfigError
from loom.model import GPT
from loom.train import distributed


def materialize(model: GPT, device: torch.device, seed: int) -> None:
    """Storage on `device` for a model built on the meta device, filled with the same values at
    every layout: each parameter is drawn whole on the CPU from a generator seeded with `seed`,
    in the model's order, and each rank keeps only its own piece of it, so no rank ever holds
    more than one whole parameter beside its shards. (A generator of its own: building meshes
    and DTensors may draw from the global one.)"""
    from torch.distributed.tensor import DTensor, distribute_tensor

    tied = tied_names(model)  # the head and the embedding
    model.to_empty(device=device)
    for first, *others in tied:  # to_empty gives each module a new parameter: tie them again
        for other in others:
            owner, _, attr = other.rpartition(".")
            setattr(model.get_submodule(owner), attr, model.get_parameter(first))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            whole = torch.empty(param.shape, dtype=param.dtype)
            model.init_weight(name, whole, generator)
            if isinstance(param, DTensor):  # every rank drew the same values: each takes its piece locally
                whole = distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None).to_local()
                param = param.to_local()
            param.copy_(whole)
        model.reset_buffers()


def data_parallel(model: GPT, info: distributed.DistInfo, t) -> torch.nn.Module:
    """`torch.compile` when `train.compile`, then DDP when there is more than one process.
    Returns the module the steps run; `model` keeps the parameters."""
    train_model = torch.compile(model) if t.compile else model
    if info.world_size > 1:
        train_model = DDP(train_model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return train_model


def data_coordinates(p, world_size: int, rank: int) -> tuple[int, int]:
    """(this rank's place among the data-parallel groups, how many there are): the ranks of one
    tensor-parallel group read the same batches."""
    _, _, tp = p.degrees(world_size)
    return rank // tp, world_size // tp


def tensor_parallel(model: GPT, tp_mesh) -> None:
    """Splits `model` over `tp_mesh` in place (Megatron-style column/row pairs, sequence parallel norms)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tied = model.head.weight is model.tok_emb.weight
    parallelize_module(model, tp_mesh, {
        "tok_emb": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "final_norm": SequenceParallel(),
        "head": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
    })
    if tied:  # both are split by vocabulary row (Shard(0)), so one parameter still serves both
        model.head.weight = model.tok_emb.weight
    for block in model.blocks:
        parallelize_module(block, tp_mesh, {
            "attn_norm": SequenceParallel(),
            # x arrives split by position; attention needs every position (rope tables, cache: as given)
            "attn": PrepareModuleInput(input_layouts=(Shard(1), None, None, None),
                                       desired_input_layouts=(Replicate(), None, None, None)),
            "attn.q_proj": ColwiseParallel(),
            "attn.k_proj": ColwiseParallel(),
            "attn.v_proj": ColwiseParallel(),
            "attn.out_proj": RowwiseParallel(output_layouts=Shard(1)),
            "mlp_norm": SequenceParallel(),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            **({"mlp.gate_proj": ColwiseParallel()} if hasattr(block.mlp, "gate_proj") else {}),
            "mlp.up_proj": ColwiseParallel(),
            "mlp.down_proj": RowwiseParallel(output_layouts=Shard(1)),
        })


def _kept_in_selective(ctx, op, *args, **kwargs):
    """The selective policy: keep what matrix products and attention computed, recompute the rest."""
    from torch.utils.checkpoint import CheckpointPolicy

    aten = torch.ops.aten
    kept = {aten.mm.default, aten.addmm.default, aten.bmm.default,
            aten._scaled_dot_product_flash_attention.default,
            aten._scaled_dot_product_efficient_attention.default,
            aten._scaled_dot_product_flash_attention_for_cpu.default}
    return CheckpointPolicy.MUST_SAVE if op in kept else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_activations(model: GPT, mode: str = "full") -> None:
    """Each block recomputes its activations in the backward pass (`torch.utils.checkpoint`):
    all of them ("full"), or all but the matrix products' and attention's outputs ("selective")."""
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    options = {}
    if mode == "selective":
        options["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _kept_in_selective)
    for block in model.blocks:
        forward = block.forward

        def recomputed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **options, **kwargs)

        block.forward = recomputed


FLOAT8_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj")


def float8_matmuls(model: GPT) -> None:
    """The blocks' projections (attention and MLP; a shared expert's too) multiply in float8:
    torchao's `convert_to_float8_training`, dynamic per-tensor scales, e4m3 forward and e5m2
    gradients. The weights stay in their own dtype and keep their names, so checkpoints, resumes
    and exports are as without it. The embedding, head and MoE router are left alone, as
    torchtitan leaves the output layer: logits and routing scores are where low precision costs
    most. Layers whose sides are not multiples of 16 (float8 kernels' tile) are left too."""
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as e:
        raise ConfigError(f"train.float8 needs torchao ({e}); pip install torchao, or set train.float8 = false") from e

    def chosen(module: torch.nn.Module, name: str) -> bool:
        return (name.rpartition(".")[2] in FLOAT8_LAYERS
                and module.in_features % 16 == 0 and module.out_features % 16 == 0)

    convert_to_float8_training(model.blocks, module_filter_fn=chosen)


def plan_for(p, info: distributed.DistInfo, seed: int):
    """The parallelism plan for `p` (the [parallel] section) on this run's processes; degrees the
    world size cannot hold are refused here, before the model is built. A plan takes a model
    built on the meta device and returns it spread and materialized (`materialize`, from `seed`)."""
    replicas, shards, tp = p.degrees(info.world_size)

    def plan(model: GPT, info: distributed.DistInfo, t) -> torch.nn.Module:
        if t.float8:
            float8_matmuls(model)
        if shards == tp == 1:
            materialize(model, info.device, seed)  # DDP starts from the parameters as they are
            if p.activation_checkpointing != "none":
                checkpoint_activations(model, p.activation_checkpointing)
            return data_parallel(model, info, t)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(info.device.type, (replicas, shards, tp),
                                mesh_dim_names=("dp_replicate", "dp_shard", "tp"))
        if tp > 1:
            tensor_parallel(model, mesh["tp"])
        if p.activation_checkpointing != "none":
            checkpoint_activations(model, p.activation_checkpointing)
        if t.compile:
            for block in model.blocks:
                block.compile()
        if replicas * shards > 1:
            policy = MixedPrecisionPolicy()
            if info.device.type == "cuda" and t.dtype != "float32":
                policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            dp_mesh = mesh["dp_replicate", "dp_shard"]
            for block in model.blocks:
                fully_shard(block, mesh=dp_mesh, mp_policy=policy)
            fully_shard(model, mesh=dp_mesh, mp_policy=policy)
        materialize(model, info.device, seed)  # only now: each rank allocates just its pieces
        return model

    return plan


def gradient_sync(model: torch.nn.Module, sync: bool):
    """A context for one micro-batch's backward: gradients are reduced across ranks only when
    `sync` (the last micro-batch of a step). DDP has `no_sync`; FSDP2 a switch."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(sync)
    elif not sync and hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    return contextlib.nullcontext()


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(param, DTensor) for param in model.parameters())
