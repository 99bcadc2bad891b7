"""Memory per rank of sharded and tensor-parallel training, measured, against `loom plan`.

For each layout (one process; `dp_shard` = 2 and 4; `tp` = 2) this starts real processes
(`torchrun`, gloo on the CPU, or NCCL on GPUs) that build loom's GPT on the meta device, apply
loom's parallelism plan (`loom.train.parallelize`), and train two steps with loom's AdamW. Each
rank reports
  - static: the bytes of its own pieces of the parameters, their gradients and AdamW's two
    moments (exact, counted tensor by tensor: what sharding is meant to divide);
  - peak: its peak resident memory (Linux VmHWM, restarted after start-up) above what it held
    before the model existed, on the CPU; on CUDA `max_memory_allocated`;
and the table sets beside them the static share of one process's and `loom plan`'s estimate of
the peak for the same layout (`loom.train.plan.memory_estimate`), with its error.

Each rank trains on its own micro-batch of the same size, as in a run whose global batch grows
with the data-parallel ranks; with tp the pair of ranks shares one.

    python bench/parallel_memory.py [--shape L,d,V,B,T] [--layouts 1,dp2,dp4,tp2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

LAYOUTS = {"1": (1, 1, 1), "dp2": (2, 2, 1), "dp4": (4, 4, 1), "tp2": (2, 1, 2)}  # name: (ranks, dp_shard, tp)


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _local_bytes(tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def model_config(shape: list[int]):
    """The model of `shape` (n_layer, d_model, vocab, micro_batch, seq_len): heads of width 64."""
    from loom.model import ModelConfig

    n_layer, d, vocab, _, seq = shape
    return ModelConfig(n_layer=n_layer, d_model=d, n_head=d // 64, n_kv_head=d // 64, vocab_size=vocab,
                       max_seq_len=seq)


def worker(shape: list[int], dp_shard: int, tp: int) -> None:
    """One rank's measurement (under torchrun); rank 0 prints every rank's as JSON."""
    import torch
    import torch.distributed as dist

    from loom.config import ParallelConfig, TrainConfig
    from loom.model import GPT
    from loom.train.distributed import init_distributed
    from loom.train.optim import make_optimizer
    from loom.train.parallelize import data_coordinates, plan_for

    _, _, vocab, batch, seq = shape
    info = init_distributed("auto")
    p = ParallelConfig(dp_shard=dp_shard, tp=tp)
    t = TrainConfig(seq_len=seq, micro_batch=batch, compile=False, dtype="float32")
    cfg = model_config(shape)
    data_rank, _ = data_coordinates(p, info.world_size, info.rank)
    g = torch.Generator().manual_seed(data_rank)
    x = torch.randint(0, vocab, (batch, seq), generator=g).to(info.device)
    y = torch.randint(0, vocab, (batch, seq), generator=g).to(info.device)
    # the libraries a sharded plan uses are loaded before the baseline: their code is not training memory
    import torch.distributed.checkpoint.state_dict  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401
    import torch.distributed.tensor.parallel  # noqa: F401
    cuda = info.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) from here
            f.write("5")
        before = _status("VmRSS")
    with torch.device("meta"):
        model = GPT(cfg)
    train_model = plan_for(p, info, seed=0)(model, info, t)
    optimizer = make_optimizer(model, t, info.device)
    for _ in range(2):
        train_model(x, y).backward()
        grads = sum(_local_bytes(q.grad) for q in model.parameters())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    params = sum(_local_bytes(q) for q in model.parameters())
    moments = sum(_local_bytes(v) for s in optimizer.state.values() for k, v in s.items() if k != "step")
    peak = (torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")) - before
    mine = {"rank": info.rank, "static": params + grads + moments, "peak": peak}
    every = [mine]
    if info.world_size > 1:
        every = [None] * info.world_size
        dist.all_gather_object(every, mine)
        dist.destroy_process_group()
    if info.rank == 0:
        print("RESULT " + json.dumps(every), flush=True)


def measure(shape: list[int], layout: str) -> list[dict]:
    ranks, dp_shard, tp = LAYOUTS[layout]
    script = [str(Path(__file__).resolve()), "--worker", ",".join(map(str, shape)), str(dp_shard), str(tp)]
    command = [sys.executable, *script] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), *script]
    threads = max(1, (os.cpu_count() or 1) // ranks)
    out = subprocess.run(command, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if out.returncode:
        raise SystemExit(f"{layout}: exit {out.returncode}\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def estimate(shape: list[int], layout: str, cuda: bool) -> float:
    from loom.train.plan import memory_estimate

    _, _, _, batch, seq = shape
    _, dp_shard, tp = LAYOUTS[layout]
    memory = memory_estimate(model_config(shape), batch, seq, 2.0 if cuda else 4.0, devices=dp_shard,
                             sharded=dp_shard > 1, tp=tp)
    return memory.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="4,512,8192,4,256", help="n_layer,d_model,vocab,micro_batch,seq_len")
    parser.add_argument("--layouts", default="1,dp2,dp4,tp2", help=f"comma-separated, of {', '.join(LAYOUTS)}")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON, not a table")
    parser.add_argument("--worker", nargs=3, metavar=("SHAPE", "DP_SHARD", "TP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        shape, dp_shard, tp = args.worker
        worker([int(v) for v in shape.split(",")], int(dp_shard), int(tp))
        return
    import torch

    shape = [int(v) for v in args.shape.split(",")]
    layouts = args.layouts.split(",")
    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown:
        raise SystemExit(f"--layouts: {', '.join(unknown)} not known; use {', '.join(LAYOUTS)}")
    rows, single = [], None
    for name in ["1", *[n for n in layouts if n != "1"]]:
        ranks = measure(shape, name)
        static = max(r["static"] for r in ranks)
        peak = max(r["peak"] for r in ranks)
        single = single or static
        planned = estimate(shape, name, torch.cuda.is_available())
        rows.append({"layout": name, "ranks": len(ranks), "static_bytes": static, "static_share": static / single,
                     "peak_bytes": peak, "plan_bytes": planned, "plan_error": (planned - peak) / peak})
    if args.json:
        print(json.dumps({"shape": shape, "rows": rows}))
        return
    print(f"shape n_layer,d_model,vocab,micro_batch,seq_len = {args.shape}; per rank, the largest of the ranks")
    print(f"{'layout':8s} {'ranks':>5s} {'weights+grads+AdamW':>20s} {'of one':>7s} {'peak':>10s} "
          f"{'loom plan':>10s} {'plan error':>10s}")
    for r in rows:
        print(f"{r['layout']:8s} {r['ranks']:5d} {r['static_bytes'] / 1e6:17.1f} MB {r['static_share']:7.1%} "
              f"{r['peak_bytes'] / 1e6:7.1f} MB {r['plan_bytes'] / 1e6:7.1f} MB {r['plan_error']:+10.1%}")


if __name__ == "__main__":
    main()
