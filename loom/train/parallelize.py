"""How the model is spread over the processes, applied from outside it (`loom/model/` knows
nothing of this), in the way of torchtitan's `parallelize_llama`.

  - `data_parallel`: the default plan. `torch.compile` when `train.compile`, then DDP when there
    is more than one process: every rank holds the whole model and optimizer.
  - `fully_sharded` (`parallel.dp_shard` > 1): FSDP2, `torch.distributed.fsdp.fully_shard` on
    every block and then on the root, over a device mesh of (replicate, shard) = (world size /
    dp_shard, dp_shard): with one replica plain FSDP, with more HSDP. On CUDA the parameters
    compute in bf16 with gradients reduced in fp32 (`MixedPrecisionPolicy`); on the CPU all is
    fp32, and a sharded run's steps equal one process's up to float rounding.

With `parallel.activation_checkpointing = "full"` every block's forward runs under
`torch.utils.checkpoint` (non-reentrant): its activations are recomputed in the backward pass
instead of kept, the parameter names unchanged. It is applied first, then compile, then FSDP, the
order torchtitan's `parallelize_llama` uses.

`plan_for(parallel_cfg, info, t)` picks the plan and refuses degrees the world size cannot hold
with the key and the fix. A sharded model's checkpoints are gathered whole (`full_state`) and
written in the one-file format, so that they resume at any layout. Tensor parallel and
selective activation checkpointing are refused by the config until they are implemented.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from loom.errors import ConfigError
from loom.model import GPT
from loom.train import distributed


def data_parallel(model: GPT, info: distributed.DistInfo, t) -> torch.nn.Module:
    """`torch.compile` when `train.compile`, then DDP when there is more than one process.
    Returns the module the steps run; `model` keeps the parameters."""
    train_model = torch.compile(model) if t.compile else model
    if info.world_size > 1:
        train_model = DDP(train_model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return train_model


def mesh_shape(p, world_size: int) -> tuple[int, int]:
    """(data-parallel replicas, shards per replica) for `p` (the [parallel] section)."""
    if world_size % p.dp_shard:
        raise ConfigError(f"parallel.dp_shard = {p.dp_shard} does not divide the {world_size} process(es) of this "
                          f"run; set it to a divisor of the world size (e.g. {world_size}) or start "
                          f"{p.dp_shard} processes per replica")
    return world_size // p.dp_shard, p.dp_shard


def fully_sharded(p):
    """The FSDP2 plan for the [parallel] section `p`."""

    def plan(model: GPT, info: distributed.DistInfo, t) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        replicas, shards = mesh_shape(p, info.world_size)
        mesh = init_device_mesh(info.device.type, (replicas, shards), mesh_dim_names=("dp_replicate", "dp_shard"))
        policy = MixedPrecisionPolicy()
        if info.device.type == "cuda" and t.dtype != "float32":
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in model.blocks:
            if t.compile:
                block.compile()
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model

    return plan


def checkpoint_activations(model: GPT) -> None:
    """Each block recomputes its activations in the backward pass (`torch.utils.checkpoint`)."""
    from torch.utils.checkpoint import checkpoint

    for block in model.blocks:
        forward = block.forward

        def recomputed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = recomputed


def plan_for(p, info: distributed.DistInfo):
    """The parallelism plan for `p` (the [parallel] section) on this run's processes."""
    if p.dp_shard > 1:
        mesh_shape(p, info.world_size)  # refused here, before the model is built
    plan = data_parallel if p.dp_shard == 1 else fully_sharded(p)
    if p.activation_checkpointing == "none":
        return plan

    def checkpointed(model: GPT, info: distributed.DistInfo, t) -> torch.nn.Module:
        checkpoint_activations(model)
        return plan(model, info, t)

    return checkpointed


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


def full_state(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """The model's and optimizer's state gathered whole on rank 0 (on CPU; empty elsewhere), the
    optimizer's keyed by parameter name. A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)
