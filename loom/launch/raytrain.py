"""A training run on a Ray cluster: Ray Train's `TorchTrainer` starts the workers and their
process group, and each worker runs the same `loom.train.train(cfg)` that torchrun would start.

World size: `launch.nodes` x processes per node (`launch.procs_per_node`, or one per GPU),
each worker with `launch.cpus_per_proc` CPUs and, when `launch.gpus_per_node` > 0, one GPU.
Ray Train sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT and starts the
process group (gloo on CPUs, NCCL on GPUs) before `train` runs, which then joins it
(`loom.train.distributed`). A worker that fails makes Ray restart the group, up to
`launch.max_restarts` times, and `train` resumes from the newest valid checkpoint, as under
torchrun. Every node must see `run.dir` and `data.dir` at the same path (a shared file system)
and have loom installed; paths are made absolute here so that workers' working directories do
not matter. Ray Train's own records go to `<run>/launch/ray/`.

The cluster is `launch.ray_address`: empty starts a Ray instance on this machine for the run
(its processes end with this one), "auto" or host:port joins one. Ray places the workers and
reports failures; what becomes of them when this process is killed is Ray's ownership model:
the trainer's actors share the fate of the driver that started them.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from loom.config import LoomConfig
from loom.errors import ConfigError, TrainingError
from loom.util import atomic_write_text


def _train_worker(config: dict) -> None:
    """What each Ray Train worker runs."""
    from loom.train import train

    train(config["cfg"])


def run_on_ray(cfg: LoomConfig) -> dict:
    """Trains the run on Ray until it ends; returns the summary its end event recorded."""
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise ConfigError("launch.engine = 'ray' needs Ray Train: pip install 'ray[train]'") from None
    from loom.data import read_manifest, shard_dir
    from loom.launch.slurm import last_end

    cfg = copy.deepcopy(cfg)
    cfg.run.dir, cfg.data.dir = str(Path(cfg.run.dir).resolve()), str(Path(cfg.data.dir).resolve())
    read_manifest(shard_dir(cfg))  # no shards: say so here, not in every worker
    la, run_dir = cfg.launch, cfg.run_dir
    workers = la.nodes * la.procs
    resources = {"CPU": la.cpus_per_proc, **({"GPU": 1} if la.gpus_per_node else {})}
    out = run_dir / "launch"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", cfg.to_toml())
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {} if la.ray_address else {"num_cpus": workers * la.cpus_per_proc}
        try:
            # empty: "local", a new instance, even where a `ray start` cluster (or a stale record of one) exists
            ray.init(address=la.ray_address or "local", include_dashboard=False, **kwargs)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
            raise ConfigError(
                f"launch.ray_address {la.ray_address!r}: no Ray cluster to join ({type(e).__name__}: {e}). Start "
                "one (ray start --head) or fix the address; a cluster with token authentication also needs "
                "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
    try:
        atomic_write_text(out / "job.json", json.dumps({
            "engine": "ray", "job_id": ray.get_runtime_context().get_job_id(), "address": la.ray_address or "local",
            "submitted": time.time()}) + "\n")
        trainer = TorchTrainer(
            _train_worker, train_loop_config={"cfg": cfg},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=la.gpus_per_node > 0,
                                         resources_per_worker=resources),
            run_config=RunConfig(name=cfg.run.name, storage_path=str(out / "ray"),
                                 failure_config=FailureConfig(max_failures=la.max_restarts)))
        result = trainer.fit()
    except Exception as e:  # Ray wraps a worker's error in its own exception types
        raise TrainingError(f"the Ray run of {cfg.run.name} failed: {type(e).__name__}: {e}".strip()[:4000]) from e
    finally:
        if started_here:
            ray.shutdown()
    if result.error is not None:
        raise TrainingError(f"the Ray run of {cfg.run.name} failed: {result.error}")
    end = last_end(run_dir)
    if end is None:
        raise TrainingError(f"the Ray run of {cfg.run.name} ended without recording its end in "
                            f"{run_dir / 'events.jsonl'}")
    return {**end.get("summary", {}), "run_dir": str(run_dir), "steps": end.get("step")}
